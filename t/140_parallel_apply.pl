# Replication throughput (issue 19): three clusters in one corosync group.
#
#   - batching: when eight clients commit at once on node1, its manager
#     multicasts their change sets in fewer GCS packets than change sets;
#     a lone commit still goes out alone, and arrives;
#   - parallel apply: node2 lags behind (a session holds a row lock that
#     the first change set needs) while pgbench on node1 writes disjoint
#     rows and a few common ones; several helpers apply change sets at once
#     (imsg_manager_status().applying_max, imsg_helpers().applying), and they
#     commit in position order: once the lock is gone every node has the
#     same rows as node1, whose own transactions are the serial order;
#     the lagging node applies its queue in runs, several change sets per
#     transaction;
#   - the same with imessages.max_helpers = 1, and then with writes on all
#     three nodes at once, async and sync, with 4 helpers again;
#     (flow control is off until then: a lagging node would pause the group)
#   - flow control: node2's helpers stopped (SIGSTOP) make its apply queue
#     pass imessages.flow_control_limit; the group's committers pause
#     (imsg_manager_status().flow_control_active) and go on when they
#     continue; nothing is lost.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ImsgGroup;

ImsgGroup::require_test_extra('corosync');

ImsgGroup::start_corosync_or_end();

my @nodes = ImsgGroup::new_nodes(3, "imsg_par_$$", "imessages.max_helpers = 4\nmax_worker_processes = 16\nimessages.flow_control_limit = 0", q{
CREATE TABLE d (id integer PRIMARY KEY, v integer, who text);
SELECT imsg_replicate('d');
CREATE TABLE hot (id integer PRIMARY KEY, n integer);
SELECT imsg_replicate('hot');
CREATE TABLE b (id serial PRIMARY KEY, v text);
SELECT imsg_replicate('b');
});
$nodes[0]->safe_psql('postgres', q{
INSERT INTO d SELECT g, 0, 'init' FROM generate_series(1, 20000) g;
INSERT INTO hot SELECT g, 0 FROM generate_series(1, 5) g;
});
ok(ImsgGroup::wait_idle(@nodes), 'the initial rows reach every node');

sub status
{
	my ($node, $cols) = @_;
	return $node->safe_psql('postgres', "SELECT $cols FROM imsg_manager_status()");
}

sub same_everywhere
{
	my ($what) = @_;
	ok(ImsgGroup::wait_idle(@nodes), "$what: the group is idle");
	ImsgGroup::same_contents(\@nodes, 'd', "$what: every node has the same rows in d");
	ImsgGroup::same_contents(\@nodes, 'hot', "$what: every node has the same rows in hot");
	is(status($_, 'apply_errors'), '0', "$what: no apply error on " . $_->name) for @nodes;
}

# --- batching -----------------------------------------------------------------
my ($m0, $p0) = split /\|/, status($nodes[0], 'gcs_messages_sent, gcs_packets_sent');
my @done = ImsgGroup::storm([ $nodes[0] ], q{
INSERT INTO b (v) VALUES ('batch ' || :client_id);
}, 8, 250);
is($done[0], 2000, 'eight clients committed 2000 transactions on node1');
my ($m1, $p1) = split /\|/, status($nodes[0], 'gcs_messages_sent, gcs_packets_sent');
cmp_ok($m1 - $m0, '>=', 2000, 'node1 multicast every change set');
cmp_ok($p1 - $p0, '<', $m1 - $m0, 'in fewer GCS packets than messages');
diag(sprintf('batching: %d messages in %d packets (%.2f per packet)',
		$m1 - $m0, $p1 - $p0, ($m1 - $m0) / ($p1 - $p0)));
ok(ImsgGroup::wait_idle(@nodes), 'the batched change sets reach every node');
is($nodes[2]->safe_psql('postgres', 'SELECT count(*) FROM b'), '2000', 'node3 has every row');
($m0, $p0) = split /\|/, status($nodes[0], 'gcs_messages_sent, gcs_packets_sent');
$nodes[0]->safe_psql('postgres', q{INSERT INTO b (v) VALUES ('alone')});
$nodes[1]->poll_query_until('postgres', q{SELECT count(*) = 1 FROM b WHERE v = 'alone'})
  or fail('a lone commit arrives');
($m1, $p1) = split /\|/, status($nodes[0], 'gcs_messages_sent, gcs_packets_sent');
is($p1 - $p0, $m1 - $m0, 'a lone commit goes out in a packet of its own');

# --- parallel apply on a lagging node -----------------------------------------
# disjoint rows mostly (d, 20000 keys), some common ones (hot, 5 keys),
# inserts and deletes too
my $script = q{
\set id random(1, 20000)
\set h random(1, 5)
\set op random(1, 10)
\if :op <= 6
UPDATE d SET v = v + 1, who = :client_id WHERE id = :id;
\elif :op <= 8
UPDATE hot SET n = n + 1 WHERE id = :h;
\elif :op = 9
DELETE FROM d WHERE id = :id;
\else
INSERT INTO d VALUES (:id, 0, 'ins') ON CONFLICT (id) DO UPDATE SET v = d.v + 10;
\endif
};

sub lagging_run
{
	my ($what, $xacts) = @_;
	my $locker = $nodes[1]->background_psql('postgres');
	$nodes[0]->safe_psql('postgres', q{UPDATE d SET v = v + 1 WHERE id = 1});
	$nodes[1]->poll_query_until('postgres', q{SELECT v > 0 FROM d WHERE id = 1})
	  or fail("$what: node2 applied the first change");
	# the next change set of row 1 waits for this lock on node2
	$locker->query_safe('BEGIN; SELECT 1 FROM d WHERE id = 1 FOR UPDATE');
	$nodes[0]->safe_psql('postgres', q{UPDATE d SET v = v + 1 WHERE id = 1});
	my @done = ImsgGroup::storm([ $nodes[0] ], $script, 4, $xacts);
	is($done[0], 4 * $xacts, "$what: node1 committed every transaction");
	my $queued = status($nodes[1], 'change_sets_to_apply');
	cmp_ok($queued, '>', 0, "$what: node2 lags ($queued change sets to apply)");
	$locker->query_safe('COMMIT');
	$locker->quit;
	same_everywhere($what);
}

lagging_run('4 helpers', 300);
my $max = status($nodes[1], 'applying_max');
cmp_ok($max, '>', 1, "node2 applied change sets side by side (up to $max at once)");
cmp_ok($nodes[1]->safe_psql('postgres', 'SELECT count(*) FROM imsg_helpers() WHERE change_sets_applied > 0'),
	'>', 1, 'imsg_helpers() shows several helpers that applied change sets');

$_->safe_psql('postgres', q{ALTER SYSTEM SET imessages.max_helpers = 1; SELECT pg_reload_conf()}) for @nodes;
$nodes[1]->poll_query_until('postgres', q{SELECT count(*) <= 1 FROM imsg_helpers() WHERE state <> 'free'})
  or fail('node2 runs one helper');
my $helper_counts = q{SELECT sum(jobs_done) || ' ' || sum(change_sets_applied) FROM imsg_helpers()};
my ($jobs0, $applied0) = split / /, $nodes[1]->safe_psql('postgres', $helper_counts);
lagging_run('1 helper', 300);
my ($jobs1, $applied1) = split / /, $nodes[1]->safe_psql('postgres', $helper_counts);
cmp_ok($jobs1 - $jobs0, '<', ($applied1 - $applied0) / 4,
	'a lagging node applies change sets in runs: ' . ($applied1 - $applied0) . ' change sets in ' . ($jobs1 - $jobs0) . ' jobs');

# --- writes on every node at once ----------------------------------------------
$_->safe_psql('postgres', q{ALTER SYSTEM SET imessages.max_helpers = 4; SELECT pg_reload_conf()}) for @nodes;
@done = ImsgGroup::storm(\@nodes, $script, 2, 300, '--max-tries=100');
is(join(',', @done), '600,600,600', 'async on every node: every transaction committed');
same_everywhere('async writes on every node');
$_->safe_psql('postgres', q{ALTER SYSTEM SET imessages.commit_mode = 'sync'; SELECT pg_reload_conf()}) for @nodes;
@done = ImsgGroup::storm(\@nodes, $script, 2, 200, '--max-tries=1000');
is(join(',', @done), '400,400,400', 'sync on every node: every transaction committed');
same_everywhere('sync writes on every node');
$_->safe_psql('postgres', q{ALTER SYSTEM RESET imessages.commit_mode; SELECT pg_reload_conf()}) for @nodes;

# --- kept apply plans and DDL ------------------------------------------------
# helpers keep their statements' plans across change sets: a table that
# gains a column, or is dropped and created again, still gets its rows
# (the ALTER and the DROP run on node1 and travel: src/ddl.c)
$nodes[0]->safe_psql('postgres', q{ALTER TABLE hot ADD COLUMN note text});
$nodes[0]->safe_psql('postgres', q{UPDATE hot SET note = 'after ALTER' WHERE id = 1});
ok($nodes[2]->poll_query_until('postgres', q{SELECT note = 'after ALTER' FROM hot WHERE id = 1}),
	'a row of a table that gained a column arrives');
$nodes[0]->safe_psql('postgres', q{DROP TABLE hot});
$_->poll_query_until('postgres', q{SELECT to_regclass('hot') IS NULL}) or die 'hot not dropped'
  for @nodes;
# (created on node1: imsg_replicate() creates it on the others)
$nodes[0]->safe_psql('postgres', q{CREATE TABLE hot (id integer PRIMARY KEY, n integer, note text);
SELECT imsg_replicate('hot')});
$_->poll_query_until('postgres', q{SELECT count(*) = 1 FROM imsg_replicated_tables WHERE table_name = 'hot'})
  or die $_->name . ' did not get table hot'
  for @nodes;
$nodes[0]->safe_psql('postgres', q{INSERT INTO hot SELECT g, 0, NULL FROM generate_series(1, 5) g});
$nodes[0]->safe_psql('postgres', q{UPDATE hot SET note = 'new table' WHERE id = 2});
ok($nodes[2]->poll_query_until('postgres', q{SELECT note = 'new table' FROM hot WHERE id = 2}),
	'and so does one of a table dropped and created again');
same_everywhere('after DDL');

# --- flow control -------------------------------------------------------------
$_->safe_psql('postgres', q{ALTER SYSTEM SET imessages.flow_control_limit = 50; SELECT pg_reload_conf()}) for @nodes;
my $rows_before = $nodes[0]->safe_psql('postgres', 'SELECT count(*) FROM b');
my @helpers = split /\n/, $nodes[1]->safe_psql('postgres', 'SELECT pid FROM imsg_helpers() WHERE pid IS NOT NULL');
cmp_ok(scalar(@helpers), '>', 0, 'node2 has helpers to stop');
kill 'STOP', @helpers;
my $dir = PostgreSQL::Test::Utils::tempdir();
open my $fh, '>', "$dir/insert.sql" or die;
print $fh "INSERT INTO b (v) VALUES ('flow ' || :client_id);\n";
close $fh;
my ($out, $err) = ('', '');
my $bench = IPC::Run::start(
	[ 'pgbench', '-n', '-h', $nodes[0]->host, '-p', $nodes[0]->port, '-c', 4, '-j', 1,
	  '-T', 12, '-f', "$dir/insert.sql", 'postgres' ],
	'<', \undef, '>', \$out, '2>', \$err);
ok($nodes[0]->poll_query_until('postgres', q{SELECT flow_control_active FROM imsg_manager_status()}),
	"node2's queue past the limit pauses node1's committers");
like(slurp_file($nodes[1]->logfile), qr/change sets to apply, past imessages.flow_control_limit \(50\): the group's committers pause/,
	'node2 says so in its log');
sleep 1;    # (the change sets on their way when the pause began arrive)
my $paused_at = $nodes[0]->safe_psql('postgres', 'SELECT count(*) FROM b');
sleep 1;
cmp_ok($nodes[0]->safe_psql('postgres', 'SELECT count(*) FROM b') - $paused_at, '<=', 4,
	'node1 commits nothing more while paused (at most the transactions that were past the pause)');
my $queued = status($nodes[1], 'change_sets_to_apply');
sleep 1;
cmp_ok(status($nodes[1], 'change_sets_to_apply') - $queued, '<=', 4, "node2's queue stops growing ($queued)");
kill 'CONT', @helpers;
ok($nodes[0]->poll_query_until('postgres', q{SELECT NOT flow_control_active FROM imsg_manager_status()}),
	'once its helpers go on, node1 commits again');
$bench->finish;
my ($xacts) = $out =~ /number of transactions actually processed: (\d+)/;
ok(!$bench->result && defined $xacts, 'pgbench ran to its end with no failed client') or diag($err);
cmp_ok($nodes[0]->safe_psql('postgres', 'SELECT count(*) FROM b') - $paused_at, '>', 4, 'and node1 committed more after the pause');
is($nodes[0]->safe_psql('postgres', 'SELECT count(*) FROM b') - $rows_before, $xacts // -1,
	'every committed transaction has its row');
ok(ImsgGroup::wait_idle(@nodes), 'after flow control: the group is idle');
ImsgGroup::same_contents(\@nodes, 'b', 'after flow control: every node has the same rows in b');
cmp_ok(status($nodes[1], 'flow_control_sent'), '>=', 1, 'node2 counted its pause request');
cmp_ok(status($nodes[0], 'flow_control_paused_ms'), '>=', 1500, 'node1 counted the time it was paused');

# --- a paused commit holding a lock the queue needs ---------------------------
# a session of node2 holds row 7; node1's change set for row 7 waits for it
# there, and node1's next 100 commits queue up behind it, past the limit:
# the group pauses.  The session's COMMIT is paused too, holding the lock
# the queue needs: it sees that a helper waits for it, and commits.
my $session = $nodes[1]->background_psql('postgres');
$session->query_safe(q{BEGIN; UPDATE d SET who = 'node2 session' WHERE id = 7});
$nodes[0]->safe_psql('postgres', q{UPDATE d SET who = 'node1' WHERE id = 7});
$nodes[1]->poll_query_until('postgres', q{SELECT count(*) = 1 FROM pg_locks WHERE NOT granted})
  or fail("node1's change set waits for row 7 on node2");
# (in the background: node1's own commits pause too, once the group does)
open $fh, '>', "$dir/updates.sql" or die;
print $fh map { "UPDATE d SET v = v + 1 WHERE id = $_;\n" } 1001 .. 1100;
close $fh;
my $updates = IPC::Run::start(
	[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', $nodes[0]->host, '-p', $nodes[0]->port,
	  '-d', 'postgres', '-f', "$dir/updates.sql" ],
	'<', \undef, '>', \my $upd_out, '2>', \my $upd_err);
ok($nodes[0]->poll_query_until('postgres', q{SELECT flow_control_active FROM imsg_manager_status()}),
	'the group pauses');
$session->query_safe('COMMIT');
pass("the paused COMMIT that holds a lock the queue needs goes through");
$session->quit;
ok($updates->finish, "node1's updates all committed") or diag($upd_err);
is($nodes[0]->safe_psql('postgres', 'SELECT sum(v) FROM d WHERE id BETWEEN 1001 AND 1100'),
	$nodes[1]->safe_psql('postgres', 'SELECT sum(v) FROM d WHERE id BETWEEN 1001 AND 1100'),
	'node2 applied them');
ok($nodes[0]->poll_query_until('postgres', q{SELECT NOT flow_control_active FROM imsg_manager_status()}),
	'the queue drains and the group goes on');
same_everywhere('after a paused commit held a lock');

# --- a run passes the commit turn on without the manager -----------------------
# node2's two helpers get a run each: the first waits for a row lock, the
# second is applied and waits for its turn.  With node2's manager stopped,
# the first commits once the lock goes and moves the horizon past its last
# position itself, so the second commits too.  (Before, a run moved it only
# from its last position - 1, which never matched, and the second waited
# for the manager.)  Two change sets held first (one on a lock, one
# waiting for it) let the 128 after them queue up, to go out as two runs.
$_->safe_psql('postgres', q{ALTER SYSTEM SET imessages.max_helpers = 2; ALTER SYSTEM SET imessages.flow_control_limit = 0;
SELECT pg_reload_conf()}) for @nodes;
$nodes[1]->poll_query_until('postgres', q{SELECT count(*) <= 2 FROM imsg_helpers() WHERE state <> 'free'})
  or fail('node2 runs two helpers');
$nodes[0]->safe_psql('postgres', q{INSERT INTO d SELECT g, 0, 'new' FROM generate_series(30001, 30130) g});
ok(ImsgGroup::wait_idle(@nodes), 'the rows of the runs are everywhere');
my $lock1 = $nodes[1]->background_psql('postgres');
$lock1->query_safe('BEGIN; SELECT 1 FROM d WHERE id = 30001 FOR UPDATE');
my $lock2 = $nodes[1]->background_psql('postgres');
$lock2->query_safe('BEGIN; SELECT 1 FROM d WHERE id = 30003 FOR UPDATE');
open $fh, '>', "$dir/turn.sql" or die;
print $fh "UPDATE d SET v = v + 1 WHERE id = 30001;\n", "UPDATE d SET v = v + 1 WHERE id = 30002;\n",
  map { "UPDATE d SET who = 'turn' WHERE id = $_;\n" } 30003 .. 30130;
close $fh;
$nodes[0]->command_ok([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $nodes[0]->connstr('postgres'), '-f', "$dir/turn.sql" ],
	'node1 commits 130 change sets, the first of a row node2 holds');
my $turn_target = status($nodes[0], 'group_position');
$nodes[1]->poll_query_until('postgres', "SELECT group_position >= $turn_target AND change_sets_to_apply >= 130 FROM imsg_manager_status()")
  or fail('node2 has them all to apply');
$lock1->query_safe('COMMIT');
$lock1->quit;
# the first two commit; the next run waits for row 30003, the one after it for its turn
$nodes[1]->poll_query_until('postgres', q{SELECT count(*) = 1 FROM pg_locks WHERE NOT granted})
  or fail('a run of node2 waits for row 30003');
$nodes[1]->poll_query_until('postgres', q{SELECT applying_now = 2 FROM imsg_manager_status()})
  or fail('node2 applies two runs at once');
sleep 1;    # (the second run is applied, and waits for its turn)
# the first run's length: its helper's position to the second's
my ($first_run, $second_run) = split /\n/, $nodes[1]->safe_psql('postgres',
	q{SELECT applying FROM imsg_helpers() WHERE applying IS NOT NULL ORDER BY applying});
my $first_len = $second_run - $first_run;
my $manager2 = $nodes[1]->safe_psql('postgres', 'SELECT imsg_manager_pid()');
kill 'STOP', $manager2;
$lock2->query_safe('COMMIT');
$lock2->quit;
my $turned = 0;
for (1 .. 150)
{
	$turned = $nodes[1]->safe_psql('postgres', q{SELECT count(*) FROM d WHERE who = 'turn'});
	last if $turned > $first_len;
	select(undef, undef, undef, 0.1);
}
kill 'CONT', $manager2;
cmp_ok($turned, '>', $first_len,
	"with node2's manager stopped, the second run committed after the first ($first_len change sets, $turned rows)");
ok(ImsgGroup::wait_idle(@nodes), 'after the runs: the group is idle');
same_everywhere('after two runs passed the turn');
$_->safe_psql('postgres', q{ALTER SYSTEM RESET imessages.max_helpers; ALTER SYSTEM RESET imessages.flow_control_limit;
SELECT pg_reload_conf()}) for @nodes;

$_->stop for @nodes;
done_testing();
