# Node recovery (issue 18): three clusters in one corosync group.
#
#   - the group has one id and every node the same position;
#   - a node stopped (pg_ctl -m fast) while the others commit inserts,
#     updates and deletes on two tables catches up from its own change-set
#     log and a donor's when it starts again, and ends with the same rows;
#   - the same for a node whose postmaster is killed (SIGKILL) while
#     pgbench writes on the other two;
#   - while a node is not synced, writes to replicated tables fail with
#     55000 and the hint names the state; reads work;
#   - a node whose position no donor's log reaches any more (a small
#     imessages.changeset_log_size) gets a full state transfer, and ends
#     with the same rows;
#   - a brand-new fourth node that only ran CREATE EXTENSION gets the
#     tables and rows the same way; a write there fails while it transfers;
#   - a node of another group is refused, with the log line naming both ids;
#   - a node that went on alone under another gcs_group and comes back
#     behind the group is refused: its history differs from the donor's.
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

my $group = "imsg_recovery_$$";
my @nodes = ImsgGroup::new_nodes(3, $group, 'restart_after_crash = on', q{
CREATE TABLE t (id integer PRIMARY KEY, v text);
SELECT imsg_replicate('t');
CREATE TABLE u (id integer PRIMARY KEY, v text, n integer);
SELECT imsg_replicate('u');
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE e (id integer PRIMARY KEY, m mood, ms mood[]);
SELECT imsg_replicate('e');
});

sub status
{
	my ($node, $cols) = @_;
	return $node->safe_psql('postgres', "SELECT $cols FROM imsg_manager_status()");
}

sub all_synced
{
	my ($what, @which) = @_;
	for my $node (@which)
	{
		$node->poll_query_until('postgres',
			q{SELECT state = 'synced' AND applied_position = group_position FROM imsg_manager_status()})
		  or return fail("$what: " . $node->name . ' is ' . status($node, 'state, applied_position, group_position'));
	}
	return pass($what);
}

# the same rows everywhere: compare both tables on every node
sub same_everywhere
{
	my ($what) = @_;
	ok(ImsgGroup::wait_idle(@nodes), "$what: the group is idle");
	ImsgGroup::same_contents(\@nodes, 't', "$what: every node has the same rows in t");
	ImsgGroup::same_contents(\@nodes, 'u', "$what: every node has the same rows in u");
	ImsgGroup::same_contents(\@nodes, 'e', "$what: every node has the same rows in e");
}

# --- one group, one position -----------------------------------------------
my %ids = map { status($_, 'group_id') => 1 } @nodes;
is(scalar(keys %ids), 1, 'every node has the same group id');
ok((keys %ids)[0] =~ /^[0-9a-f-]{36}$/, 'a UUID');
is($nodes[0]->safe_psql('postgres', 'SELECT group_id FROM imsg_state'), (keys %ids)[0],
	'kept in imsg_state');

$nodes[0]->safe_psql('postgres', q{
INSERT INTO t SELECT g, 'init' FROM generate_series(1, 100) g;
INSERT INTO u SELECT g, 'init', 0 FROM generate_series(1, 100) g;
INSERT INTO e SELECT g, 'ok', '{sad,happy}' FROM generate_series(1, 10) g;
});
$nodes[1]->safe_psql('postgres', q{UPDATE t SET v = 'node2' WHERE id <= 10});
all_synced('the first writes are applied everywhere', @nodes);
my %positions = map { status($_, 'group_position') => 1 } @nodes;
is(scalar(keys %positions), 1, 'every node is at the same group position');
cmp_ok((keys %positions)[0], '>=', 3, 'every change set has a position');
$nodes[2]->poll_query_until('postgres',
	q{SELECT applied_position >= (SELECT group_position FROM imsg_manager_status()) - 1 FROM imsg_state})
  or fail('imsg_state follows the applied position');

# --- a clean stop right after an async commit ----------------------------
# node1's manager is stopped (SIGSTOP) while a transaction commits there,
# so its change set is still in the manager's mailbox when pg_ctl -m fast
# asks it to exit.  It still sends the change set before it exits, or
# node1 would hold a row the others never get.
my $manager1 = $nodes[0]->safe_psql('postgres', 'SELECT imsg_manager_pid()');
kill 'STOP', $manager1;
$nodes[0]->safe_psql('postgres', q{INSERT INTO t VALUES (7000, 'just before a clean stop')});
my $stopping = IPC::Run::start([ 'pg_ctl', '-D', $nodes[0]->data_dir, '-m', 'fast', '-w', 'stop' ],
	'<', \undef, '>', \my $stop_out, '2>', \my $stop_err);
sleep 1;    # the postmaster has sent its SIGTERM
kill 'CONT', $manager1;
$stopping->finish;
$nodes[0]->{_pid} = undef;
ok($nodes[1]->poll_query_until('postgres', q{SELECT count(*) = 1 FROM t WHERE id = 7000}),
	'an async commit whose change set was not sent when the server was asked to stop reaches the others');
$nodes[0]->start;
all_synced('node1 is back', @nodes);

# a workload of inserts, updates and deletes on both tables
my $mixed = ImsgGroup::mixed_script();

my ($rc, $out, $err);

# --- a node stopped while the others write --------------------------------
$nodes[2]->stop('fast');
my @done = ImsgGroup::storm([ @nodes[0, 1] ], $mixed, 2, 300);
is(join(',', @done), '600,600', 'nodes 1 and 2 commit while node3 is stopped');
my $behind = status($nodes[0], 'group_position');
$nodes[2]->start;
ok($nodes[2]->wait_for_log(qr/imessages helper catches up from position \d+ to \d+, from donor node[12]/),
	'node3 catches up from a donor');
all_synced('node3 is synced again', @nodes);
cmp_ok(status($nodes[2], 'applied_position'), '>=', $behind, 'node3 applied what it missed');
same_everywhere('after node3 was stopped');
like(slurp_file($nodes[2]->logfile), qr/node "node3" is catching_up \(was \w+\).*\n(.*\n)*.*node "node3" is synced \(was catching_up\)/,
	'node3 logs its state changes');

# --- our own write after a remote change set we had not applied -----------
# node1 updates rows 8001 and 8002 of u (change set R); node3's helper
# applying R waits for row 8001, which a session of node3 holds locked;
# meanwhile node3 updates row 8002 itself (L, delivered after R, so every
# node ends with L's value), and then the helper is killed (SIGKILL: a
# crash restart, which a fast stop would let it finish R first).  The
# catch-up reads R again from node3's log: R must leave 8002 as L left it.
$nodes[0]->safe_psql('postgres', q{INSERT INTO u VALUES (8001, 'init', 0), (8002, 'init', 0)});
all_synced('rows 8001 and 8002 are everywhere', @nodes);
my $locker = $nodes[2]->background_psql('postgres');
$locker->query_safe('BEGIN; SELECT 1 FROM u WHERE id = 8001 FOR UPDATE');
$nodes[0]->safe_psql('postgres', q{
BEGIN;
UPDATE u SET v = 'node1' WHERE id = 8001;
UPDATE u SET v = 'node1' WHERE id = 8002;
COMMIT;
});
ok($nodes[2]->poll_query_until('postgres', q{SELECT count(*) = 1 FROM pg_locks WHERE NOT granted}),
	"node3's helper waits for row 8001");
my $waiting_helper = $nodes[2]->safe_psql('postgres', q{SELECT pid FROM pg_locks WHERE NOT granted});
$nodes[2]->safe_psql('postgres', q{UPDATE u SET v = 'node3' WHERE id = 8002});
ok($nodes[0]->poll_query_until('postgres', q{SELECT v = 'node3' FROM u WHERE id = 8002}),
	"node3's later write reaches node1 after node1's own");
my $log_at = -s $nodes[2]->logfile;
kill 'KILL', $waiting_helper;
eval { $locker->quit };
ok($nodes[2]->wait_for_log(qr/imessages helper catches up from position \d+ to \d+\n/, $log_at),
	'node3 catches up from its own log after the crash restart');
all_synced('node3 is synced after the crash restart', @nodes);
is($nodes[2]->safe_psql('postgres', q{SELECT string_agg(v, ',' ORDER BY id) FROM u WHERE id IN (8001, 8002)}),
	'node1,node3', 'the catch-up applies the earlier remote change set but keeps our later write');
same_everywhere('after a catch-up over our own write');

# --- writes while the members exchange their state ------------------------
# node2's manager is stopped (SIGSTOP) and node3 starts: the view changes,
# and node1 waits for node2's state message as long as node2 is stopped.
# node1 was synced and is in the primary component, so it takes writes
# meanwhile: an async commit commits, a sync one waits for the decision.
$nodes[2]->stop('fast');
my $manager2 = $nodes[1]->safe_psql('postgres', 'SELECT imsg_manager_pid()');
my $log1_at = -s $nodes[0]->logfile;
kill 'STOP', $manager2;
$nodes[2]->start;
ok($nodes[0]->wait_for_log(qr/node "node1" is joining \(was synced\)/, $log1_at),
	'node1 exchanges its state after node3 joins');
is(status($nodes[0], 'state'), 'synced', 'and shows as synced meanwhile');
($rc, $out, $err) = $nodes[0]->psql('postgres', q{INSERT INTO t VALUES (7100, 'async during the exchange')});
is($rc . $err, '0', 'an async write during the exchange commits');
my $sync_insert = IPC::Run::start(
	[ 'psql', '-X', '-h', $nodes[0]->host, '-p', $nodes[0]->port, '-d', 'postgres', '-c',
	  q{SET imessages.commit_mode = sync; INSERT INTO t VALUES (7101, 'sync during the exchange')} ],
	'<', \undef, '>', \my $sync_out, '2>', \my $sync_err);
sleep 1;
$sync_insert->pump_nb;
ok($sync_insert->pumpable, 'a sync commit during the exchange waits for it');
is(status($nodes[0], 'state'), 'synced', 'node1 is still exchanging');
kill 'CONT', $manager2;
my $sync_ok = $sync_insert->finish;
is(($sync_ok ? 'exit 0' : 'failed') . $sync_err, 'exit 0', 'the sync commit commits once the members decide');
all_synced('every node is synced after the exchange', @nodes);
is($nodes[2]->safe_psql('postgres', q{SELECT count(*) FROM t WHERE id IN (7100, 7101)}), '2',
	'both writes reach the node that joined');
same_everywhere('after writes during the exchange');

# --- a node killed while pgbench writes on the other two ------------------
my $pid3 = $nodes[2]->{_pid};
my @runs;
{
	my $dir = PostgreSQL::Test::Utils::tempdir();
	open my $fh, '>', "$dir/mixed.sql" or die;
	print $fh $mixed;
	close $fh;
	for my $node (@nodes[0, 1])
	{
		push @runs, IPC::Run::start(
			[ 'pgbench', '-n', '-h', $node->host, '-p', $node->port, '-c', 2, '-j', 1,
			  '-T', 4, '-f', "$dir/mixed.sql", 'postgres' ],
			'<', \undef, '>', \my $out, '2>', \my $err);
	}
	sleep 1;
	kill 'KILL', $pid3;
	$_->finish for @runs;
}
# its children exit once they notice the postmaster's death; then it
# starts again as after a crash
for (1 .. 200)
{
	# (the postmaster itself, until it is reaped, holds the lock file)
	last unless kill(0, $pid3) || system('pgrep', '-f', '^postgres: node3: ') == 0;
	select(undef, undef, undef, 0.1);
}
$nodes[2]->{_pid} = undef;
$nodes[2]->start;
all_synced('the killed node catches up', @nodes);
same_everywhere('after node3 was killed');

# --- not synced: writes refused, reads allowed -----------------------------
# node3 stopped again; the others' logs are made small, and enough is
# written that they no longer reach back to node3's position
my $applied3 = status($nodes[2], 'applied_position');
$nodes[2]->stop('fast');
for my $node (@nodes[0, 1])
{
	$node->safe_psql('postgres', q{ALTER SYSTEM SET imessages.changeset_log_size = '256kB'; SELECT pg_reload_conf()});
}
for (1 .. 10)
{
	$nodes[0]->safe_psql('postgres',
		q{UPDATE t SET v = repeat(md5(random()::text), 8) WHERE id IN (SELECT id FROM t ORDER BY id LIMIT 200)});
	$nodes[1]->safe_psql('postgres', q{UPDATE u SET n = n + 1});
}
for my $node (@nodes[0, 1])
{
	cmp_ok($node->safe_psql('postgres', 'SELECT first_position FROM imsg_changeset_log_range()'),
		'>', $applied3 + 1, $node->name . '\'s log no longer holds what node3 lacks');
}
# node1, the donor the exchange picks, is kept busy by a pause of its own
# (a session holding imsg_pause_apply), so that node3 stays transferring
# while its writes are tried: the transfer asks node1 to pause too, is
# refused, and starts again every second
# (both possible donors: which one the exchange picks depends on the order
# in which the members joined the CPG group)
my @hold = map { $_->background_psql('postgres') } @nodes[0, 1];
$_->query_safe('SELECT imsg_pause_apply() > 0') for @hold;
is(status($nodes[0], 'state'), 'donor', 'a node paused for a transfer shows as donor');
($rc, $out, $err) = $nodes[0]->psql('postgres', q{SELECT imsg_pause_apply()});
like($err, qr/node "node1" cannot be a donor now/, 'a second session cannot pause it too');
$nodes[2]->start;
ok($nodes[2]->wait_for_log(qr/node "node3" is transferring \(was \w+\).*\n.*It receives a full state transfer from node "node[12]"/),
	'node3, whose position no log reaches, gets a full transfer');
is(status($nodes[2], 'state'), 'transferring', 'imsg_manager_status() says so');
($rc, $out, $err) = $nodes[2]->psql('postgres', q{INSERT INTO t VALUES (100000, 'stale')},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/55000: node "node3" is not synced with its group: writes to replicated tables are refused/,
	'a write on a node that is not synced fails with 55000');
like($err, qr/The node is transferring: applied position \d+, group position \d+, lag \d+ change sets/,
	'the detail names the state and the lag');
like($err, qr/HINT:  Wait until imsg_manager_status\(\)\.state is 'synced'/, 'the hint says what to wait for');
is($nodes[2]->safe_psql('postgres', 'SELECT count(*) > 0 FROM t'), 't', 'reads are allowed');
$nodes[2]->safe_psql('postgres', 'CREATE TABLE local_only (i int); INSERT INTO local_only VALUES (1)');
pass('writes to tables that are not replicated are allowed');
$_->quit for @hold;
all_synced('node3 is synced after the full transfer', @nodes);
ok($nodes[2]->wait_for_log(qr/imessages helper copied 3 tables \(\d+ rows\) from donor "node[12]" at position \d+ in \d+ ms/),
	'it copied the three tables (e in text: its types are not built-in)');
same_everywhere('after a full transfer to node3');
$nodes[0]->safe_psql('postgres', q{INSERT INTO t VALUES (5000, 'after the transfer')});
ImsgGroup::wait_idle(@nodes);
is($nodes[2]->safe_psql('postgres', q{SELECT v FROM t WHERE id = 5000}), 'after the transfer',
	'and applies what comes after');

# --- a brand-new fourth node ------------------------------------------------
# only CREATE EXTENSION (and a replicated table of its own, to try a write)
@hold = map { $_->background_psql('postgres') } @nodes;
$_->query_safe('SELECT imsg_pause_apply() > 0') for @hold;
my $node4 = PostgreSQL::Test::Cluster->new('node4');
$node4->init;
$node4->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'imessages'
max_worker_processes = 16
imessages.gcs = corosync
imessages.gcs_group = '$group'
imessages.node_name = 'node4'
imessages.node_conninfo = 'host=@{[ $node4->host ]} port=@{[ $node4->port ]} dbname=postgres'
});
$node4->start;
# (the types the tables use are there: the transfer copies tables)
# (its own table set up by hand: replicate() does not travel then)
$node4->safe_psql('postgres', q{CREATE EXTENSION imessages;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE mine (id integer PRIMARY KEY);
SET session_replication_role = replica; SELECT imsg_replicate('mine')});
$node4->poll_query_until('postgres', q{SELECT state = 'transferring' FROM imsg_manager_status()})
  or fail('node4 is transferring');
($rc, $out, $err) = $node4->psql('postgres', q{INSERT INTO mine VALUES (1)});
like($err, qr/node "node4" is not synced with its group/, 'a write on the new node fails while it is transferring');
($rc, $out, $err) = $node4->psql('postgres', q{CREATE TABLE mine2 (id integer PRIMARY KEY); SELECT imsg_replicate('mine2')});
like($err, qr/node "node4" is not synced with its group/, 'so does imsg_replicate(), which would send the table to the group');
$nodes[1]->safe_psql('postgres', q{INSERT INTO u VALUES (5000, 'while node4 joins', 1)});
$_->quit for @hold;
push @nodes, $node4;
all_synced('the new node is synced after its full transfer', @nodes);
same_everywhere('with a fourth node');
is($node4->safe_psql('postgres', q{SELECT v FROM u WHERE id = 5000}), 'while node4 joins',
	'it has what was committed while it joined');
is($node4->safe_psql('postgres', q{SELECT count(*) FROM imsg_replicated_tables}), '4',
	'the tables came replicated (and its own is still there)');

# --- a hole in the positions -----------------------------------------------
# imessages.debug_skip_position makes node2's manager count a position it
# never got, so the next change set comes with a hole before it.  node2
# applies nothing out of order: its manager logs the hole and restarts,
# and node2 catches up from a donor, the missing change set included.
my $log2_at = -s $nodes[1]->logfile;
$nodes[1]->append_conf('postgresql.conf', 'imessages.debug_skip_position = on');
$nodes[1]->reload;
ok($nodes[1]->wait_for_log(qr/imessages manager skips a position/, $log2_at), 'node2 skips a position');
$nodes[0]->safe_psql('postgres', q{INSERT INTO t VALUES (9001, 'after the hole')});
ok($nodes[1]->wait_for_log(qr/position \d+ delivered where \d+ was expected\n.*A hole in the group's positions: this node stops applying/, $log2_at),
	'node2 sees the hole and stops applying');
ok($nodes[1]->wait_for_log(qr/imessages helper catches up from position \d+ to \d+, from donor/, $log2_at),
	'its manager restarts and catches up from a donor');
all_synced('node2 is synced after the hole', @nodes);
is($nodes[1]->safe_psql('postgres', q{SELECT v FROM t WHERE id = 9001}), 'after the hole',
	'it has the change set delivered after the hole');
same_everywhere('after a hole');
my $skips = () = slurp_file($nodes[1]->logfile) =~ /imessages manager skips a position/g;
is($skips, 1, 'the restarted manager does not skip again');

# --- a catch-up that would hold too much ------------------------------------
# node2 catches up again (another hole), and its helper waits for row 9001,
# which a session of node2 holds locked, while node1 commits 100 rows of
# 1 kB.  node2 holds what the group delivers meanwhile only up to a quarter
# of its change-set log (64 kB of 256 kB here); past that it drops it and
# fetches it from the donor's log instead.
$nodes[1]->safe_psql('postgres', q{ALTER SYSTEM SET imessages.changeset_log_size = '256kB'; SELECT pg_reload_conf()});
$nodes[1]->append_conf('postgresql.conf', 'imessages.debug_skip_position = off');
$nodes[1]->reload;
sleep 1;    # (the manager reads it off before it is on again)
my $locker2 = $nodes[1]->background_psql('postgres');
$locker2->query_safe('BEGIN; SELECT 1 FROM t WHERE id = 9001 FOR UPDATE');
$log2_at = -s $nodes[1]->logfile;
$nodes[1]->append_conf('postgresql.conf', 'imessages.debug_skip_position = on');
$nodes[1]->reload;
ok($nodes[1]->wait_for_log(qr/imessages manager skips a position/, $log2_at), 'node2 skips a position again');
$nodes[0]->safe_psql('postgres', q{UPDATE t SET v = 'while node2 waits' WHERE id = 9001});
ok($nodes[1]->wait_for_log(qr/imessages helper catches up from position \d+ to \d+, from donor/, $log2_at),
	'node2 catches up');
ok($nodes[1]->poll_query_until('postgres', q{SELECT count(*) = 1 FROM pg_locks WHERE NOT granted}),
	"node2's catch-up waits for row 9001");
$nodes[0]->safe_psql('postgres', join('', map { "INSERT INTO u VALUES ($_, repeat('x', 1000), 0);\n" } 20001 .. 20100));
ok($nodes[1]->wait_for_log(qr/dropped \d+ change sets \(\d+ bytes\) delivered while it catches up: it fetches them from the donor's log/, $log2_at),
	'what node2 would hold past the limit is dropped');
$locker2->query_safe('COMMIT');
$locker2->quit;
all_synced('node2 is synced after the longer catch-up', @nodes);
is($nodes[1]->safe_psql('postgres', q{SELECT count(*) FROM u WHERE id > 20000}), '100',
	'it fetched what it dropped');
same_everywhere('after a catch-up that dropped what it held');

# --- a node that went on without the group ---------------------------------
# node3 starts alone under another imessages.gcs_group: it keeps the
# group's id and position, founds a group of one and commits a row there,
# at the position where the group orders another change set.  Back in the
# group, and behind it, its catch-up finds that the change set it applied
# last is not the donor's at that position: it is refused, and applies
# nothing of the group's over its own.
my $alone = $nodes[2];
$alone->stop;
$alone->append_conf('postgresql.conf', "imessages.gcs_group = 'imsg_alone_$$'\n");
$alone->start;
$alone->poll_query_until('postgres', q{SELECT state = 'synced' FROM imsg_manager_status()})
  or fail('node3 alone is synced in its group of one');
$alone->safe_psql('postgres', q{INSERT INTO t VALUES (9500, 'node3 alone')});
my $alone_pos = status($alone, 'applied_position');
$alone->stop;
@nodes = grep { $_ != $alone } @nodes;
$nodes[0]->safe_psql('postgres', qq{INSERT INTO t VALUES ($_, 'the group')}) for 9501 .. 9502;
cmp_ok(status($nodes[0], 'group_position'), '>', $alone_pos, 'the group went further than node3 alone');
my $alone_at = -s $alone->logfile;
$alone->append_conf('postgresql.conf', "imessages.gcs_group = '$group'\n");
$alone->start;
ok($alone->wait_for_log(qr/node "node3" is refused by group "\Q$group\E": its history differs from the group's/, $alone_at),
	'back in the group, node3 is refused: its history differs');
like(slurp_file($alone->logfile, $alone_at),
	qr/Its change set at position $alone_pos \(from node "node3", \d+ bytes\) is not the one node "node\d" holds there \(from node "node1", \d+ bytes\)/,
	'the log line names the position and both origins');
is(status($alone, 'state'), 'refused', 'its state is refused');
is($alone->safe_psql('postgres', q{SELECT count(*) FROM t WHERE id IN (9501, 9502)}), '0',
	"it applied none of the group's change sets over its own");
($rc, $out, $err) = $alone->psql('postgres', q{INSERT INTO t VALUES (9503, 'x')});
like($err, qr/55000|is not synced with its group/, 'and it takes no write');
all_synced('the others are synced', @nodes);
same_everywhere('without node3');
$alone->stop;

# --- a node of another group -------------------------------------------------
my ($other) = ImsgGroup::new_nodes(1, "imsg_other_$$", '', q{
CREATE TABLE t (id integer PRIMARY KEY, v text);
SELECT imsg_replicate('t');
}, 5);
my $other_id = status($other, 'group_id');
isnt($other_id, (keys %ids)[0], 'a node alone in another group founds its own');
$other->append_conf('postgresql.conf', "imessages.gcs_group = '$group'\n");
$other->restart;
ok($other->wait_for_log(qr/node "node5" is refused by group "\Q$group\E": it belongs to another group/),
	'started against the first group, it is refused');
like(slurp_file($other->logfile), qr/This node belongs to group \Q$other_id\E, the group's id is \Q@{[ (keys %ids)[0] ]}\E/,
	'the log line names both ids');
is(status($other, 'state'), 'refused', 'its state is refused');
($rc, $out, $err) = $other->psql('postgres', q{INSERT INTO t VALUES (1, 'x')});
like($err, qr/is not synced with its group/, 'and it takes no write');
is(status($nodes[0], 'state'), 'synced', 'the group goes on');
is($node4->safe_psql('postgres', 'SELECT group_id FROM imsg_state'), (keys %ids)[0],
	'the new node keeps the group id its transfer wrote');
my $node4_copies = () = slurp_file($node4->logfile) =~ /imessages helper copied/g;
is($node4_copies, 1, 'and, a member of the group, it gets no second transfer at the later view changes');
is(status($node4, 'state'), 'synced', 'it is still synced');

$_->stop for (@nodes, $other);
done_testing();
