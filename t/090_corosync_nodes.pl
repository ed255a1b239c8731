# Three nodes as on three machines: each PostgreSQL cluster runs in a
# network namespace of its own with its own corosync, the corosyncs talk
# over a private bridge (src/tools/corosync-lab.sh).  Checks that the group
# forms across the network, and what happens when one node's corosync is
# killed: that node's server keeps running and serves reads, a sync commit
# in flight fails at once (08007), and, no longer synced with its group, it
# refuses writes to replicated tables (55000); the other nodes see it leave
# and go on committing; it rejoins when its corosync is back and catches up
# on what it missed.  Then two nodes lose corosync, come back, and the one
# whose manager was stopped meanwhile catches up too.  Nothing is left
# running or in /dev/shm afterwards.
use strict;
use warnings;
use Cwd qw(abs_path);
use File::Temp qw(tempdir);
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ImsgGroup;

ImsgGroup::require_test_extra('corosync', 'netns');

my $lab = abs_path('src/tools/corosync-lab.sh');
my $dir = tempdir('imsg_lab_XXXX', TMPDIR => 1, CLEANUP => 1);
my @shm_before = glob('/dev/shm/qb-*');

sub lab { system('bash', $lab, @_) == 0 or die "corosync-lab.sh @_ failed\n"; }

END { system('bash', $lab, 'stop', $dir) if $dir; }
ImsgGroup::lab_start_or_end($lab, $dir, 3);

my @nodes = ImsgGroup::lab_nodes($lab, $dir, 3, 'imsg_lab', '', q{
CREATE TABLE t (id integer PRIMARY KEY, v text);
SELECT imsg_replicate('t');
});

sub all_agree
{
	my ($sql, $expected, $what, @which) = @_;
	@which = @nodes unless @which;
	for my $node (@which)
	{
		$node->poll_query_until('postgres', $sql, $expected)
		  or die "$what: " . $node->name . ' has ' . $node->safe_psql('postgres', $sql);
	}
	pass($what);
}

my $members = q{SELECT string_agg(node || '=' || gcs_nodeid, ',' ORDER BY node) FROM imsg_group_members()};
all_agree($members, 'node1=1,node2=2,node3=3',
	'the group forms across the network: each node is its own corosync node');
all_agree(q{SELECT state FROM imsg_manager_status()}, 'synced', 'every node is synced');

my $rows = q{SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM t};
$nodes[0]->safe_psql('postgres', q{SET imessages.commit_mode = 'sync'; INSERT INTO t VALUES (1, 'sync from node1')});
$nodes[1]->safe_psql('postgres', q{INSERT INTO t VALUES (2, 'async from node2')});
$nodes[2]->safe_psql('postgres', q{INSERT INTO t VALUES (3, 'async from node3')});
all_agree($rows, '1:sync from node1,2:async from node2,3:async from node3',
	'rows written on each node reach all');

# corosync's flow control: large change sets from every node at once make
# cpg_mcast_joined answer CS_ERR_TRY_AGAIN; the frames wait in order
my @bg = map { $_->background_psql('postgres') } @nodes;
for my $round (0 .. 2)
{
	for my $i (0 .. 2)
	{
		my $base = 100000 * ($i + 1) + 10000 * $round;
		$bg[$i]->query_until(qr/sent/, qq{
\\echo sent
INSERT INTO t SELECT g, repeat(md5(g::text), 64) FROM generate_series($base, $base + 1999) g;
});
	}
	$_->query_safe('SELECT 1') for @bg;
}
$_->quit for @bg;
all_agree(q{SELECT count(*), sum(length(v)) FROM t WHERE id >= 100000}, '18000|36864000',
	'large change sets sent by three nodes at once all arrive, whole');
$nodes[0]->safe_psql('postgres', 'DELETE FROM t WHERE id >= 100000');
all_agree(q{SELECT count(*) FROM t WHERE id >= 100000}, '0', 'and their delete');
for my $node (@nodes)
{
	unlike(slurp_file($node->logfile), qr/terminated by signal/, $node->name . ': no process crashed');
}

# --- node3's corosync is killed ----------------------------------------
# First frozen, with a sync commit of node3 in flight: its change set is
# multicast (into corosync's IPC) but cannot be ordered.  When corosync then
# dies, the commit fails at once with 08007: rolled back here, and whether
# another node delivered it is unknown.  (Without that it would wait for
# commit_timeout, 60 s here, and fail with a different message.)
my $coro3 = slurp_file("$dir/n3/corosync.pid");
chomp $coro3;
kill 'STOP', $coro3;
my $inflight = $nodes[2]->background_psql('postgres', on_error_stop => 0);
$inflight->query_until(qr/sent/, q{
\echo sent
SET imessages.commit_mode = 'sync';
INSERT INTO t VALUES (20, 'sync in flight when corosync died');
\echo done
});
$nodes[2]->poll_query_until('postgres', q{
SELECT count(*) = 1 FROM pg_stat_activity
 WHERE query LIKE 'INSERT INTO t VALUES (20,%' AND wait_event_type = 'Extension'})
  or die 'the sync commit is not waiting for its change set';
lab('kill', $dir, 3);
$inflight->query_until(qr/done/, '');
like($inflight->{stderr},
	qr/the connection to the group communication system "corosync" was lost before the transaction's change set was ordered/,
	'a sync commit in flight when corosync dies fails at once');
like($inflight->query("\\echo :LAST_ERROR_SQLSTATE"), qr/08007/, 'with SQLSTATE 08007 (outcome unknown)');
$inflight->quit;
$nodes[2]->poll_query_until('postgres', 'SELECT group_members = 0 FROM imsg_manager_status()')
  or die 'node3 still counts members';
ok($nodes[2]->wait_for_log(qr/imessages manager lost its connection to "corosync"; reconnecting/),
	'node3 logs the loss of corosync');
all_agree($members, 'node1=1,node2=2', 'the others see node3 leave', @nodes[0 .. 1]);

is($nodes[2]->safe_psql('postgres', 'SELECT count(*) FROM t'), '3', 'node3 keeps serving queries');
my $retry_lines = () = slurp_file($nodes[2]->logfile) =~ /could not join the group through "corosync"/g;
is($retry_lines, 1, 'node3 retries every second but says so once (then once a minute)');
is($nodes[2]->safe_psql('postgres', 'SELECT group_quorate FROM imsg_manager_status()'), 'f',
	'node3 is not quorate');
is($nodes[0]->safe_psql('postgres', 'SELECT group_quorate FROM imsg_manager_status()'), 't',
	'node1 still is');
is($nodes[2]->safe_psql('postgres', 'SELECT state FROM imsg_manager_status()'), 'disconnected',
	'node3 is disconnected from its group');
my ($rc, $out, $err) = $nodes[2]->psql('postgres',
	q{SET imessages.commit_mode = 'sync'; INSERT INTO t VALUES (30, 'sync from node3 alone')},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/55000: node "node3" is not synced with its group: writes to replicated tables are refused/,
	'a sync write on node3 fails at once with 55000, not after commit_timeout');
($rc, $out, $err) = $nodes[2]->psql('postgres', q{INSERT INTO t VALUES (31, 'async from node3 alone')});
like($err, qr/is not synced with its group/,
	'so does an async one: cut off, node3 would commit on stale data');
is($nodes[2]->safe_psql('postgres', 'SELECT count(*) FROM t WHERE id IN (30, 31)'), '0',
	'neither is committed');

$nodes[0]->safe_psql('postgres', q{SET imessages.commit_mode = 'sync'; INSERT INTO t VALUES (10, 'node1 while node3 is away')});
$nodes[1]->safe_psql('postgres', q{INSERT INTO t VALUES (11, 'node2 while node3 is away')});
all_agree(q{SELECT count(*) FROM t WHERE id IN (10, 11)}, '2',
	'nodes 1 and 2 go on committing (sync too) and replicating', @nodes[0 .. 1]);

# --- node3's corosync is back --------------------------------------------
lab('up', $dir, 3);
all_agree($members, 'node1=1,node2=2,node3=3', 'node3 rejoins');
all_agree(q{SELECT count(*) FROM t WHERE id IN (10, 11)}, '2',
	'node3 catches up on what was committed while it was away');
ok($nodes[2]->wait_for_log(qr/imessages helper catches up from position \d+ to \d+, from donor node[12]/),
	'from a donor');
all_agree(q{SELECT state FROM imsg_manager_status()}, 'synced', 'every node is synced again');
$nodes[0]->safe_psql('postgres', q{SET imessages.commit_mode = 'sync'; INSERT INTO t VALUES (12, 'after')});
all_agree(q{SELECT v FROM t WHERE id = 12}, 'after', 'node3 applies what is committed after it rejoined');
for my $node (@nodes)
{
	is($node->safe_psql('postgres', 'SELECT apply_errors FROM imsg_manager_status()'),
		'0', $node->name . ': no apply error');
}

# --- nodes 1 and 2 lose corosync: node3 is alone, connected but no quorum --
lab('kill', $dir, 1);
lab('kill', $dir, 2);
$nodes[2]->poll_query_until('postgres',
	q{SELECT group_members = 1 AND NOT group_quorate AND state = 'disconnected' FROM imsg_manager_status()})
  or die 'node3 did not lose quorum';
pass('node3 alone in its view is connected but not quorate, and not synced');
($rc, $out, $err) = $nodes[2]->psql('postgres',
	q{SET imessages.commit_mode = 'sync'; INSERT INTO t VALUES (40, 'sync from node3 without quorum')},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/55000: node "node3" is not synced with its group/,
	'a write without quorum fails at once with 55000');
like($err, qr/This node is not in the primary component of the group/, 'and says why');
# Their corosyncs come back, node1's first, and node2's manager is stopped
# (as if slow to reconnect).  Nodes 1 and 3 are a primary component (two
# of three corosync nodes, each with a manager): both synced.  A node that
# regains a majority waits up to imessages.gcs_join_wait for the managers
# of the other nodes before it orders its own change sets: 60 s on node3
# (set here), the default 3 s on node1, which then commits without node2.
$nodes[2]->safe_psql('postgres', q{ALTER SYSTEM SET imessages.gcs_join_wait = '60s'; SELECT pg_reload_conf()});
my $manager2 = $nodes[1]->safe_psql('postgres', 'SELECT pid FROM imsg_manager_status()');
kill 'STOP', $manager2;
END { kill 'CONT', $manager2 if $manager2; }
lab('up', $dir, 1);
all_agree($members, 'node1=1,node3=3', "node1's manager rejoins", @nodes[0, 2]);
all_agree(q{SELECT state FROM imsg_manager_status()}, 'synced', 'nodes 1 and 3 are synced', @nodes[0, 2]);
is($nodes[2]->safe_psql('postgres', 'SELECT group_quorate FROM imsg_manager_status()'), 'f',
	'node3 has a majority but waits for node2, seen in the group before, to order its own');
lab('up', $dir, 2);
ok($nodes[0]->wait_for_log(qr/imessages manager: this node is quorate in "corosync": change sets are ordered again/,
		$nodes[0]->wait_for_log(qr/waits up to 3000 ms for the managers of corosync nodes 2 to join/)),
	'node1 waits up to gcs_join_wait (3 s) for node2\'s manager, then orders without it');
$nodes[0]->safe_psql('postgres', q{SET imessages.commit_mode = 'sync'; INSERT INTO t VALUES (42, 'sync from node1 without node2')});
all_agree(q{SELECT v FROM t WHERE id = 42}, 'sync from node1 without node2',
	'node1 commits sync and replicates to node3 without node2\'s manager', @nodes[0, 2]);
kill 'CONT', $manager2;
all_agree($members, 'node1=1,node2=2,node3=3', 'the group forms again');
all_agree(q{SELECT group_quorate FROM imsg_manager_status()}, 't', 'every node is quorate again');
all_agree(q{SELECT v FROM t WHERE id = 42}, 'sync from node1 without node2',
	'node2 catches up on what was ordered while its manager was away');
all_agree(q{SELECT count(*) FROM t WHERE id IN (30, 31, 40)}, '0', 'the refused writes are nowhere');
ImsgGroup::same_contents(\@nodes, 't', 'every node has the same rows');

# --- cleanup ------------------------------------------------------------
$_->stop for @nodes;
lab('stop', $dir);
# (pgrep without a shell, whose own command line would name $dir)
open my $ph, '-|', 'pgrep', '-u', $>, '-f', $dir or die "pgrep: $!";
my @procs = <$ph>;
close $ph;
is(scalar(@procs), 0, 'no corosync or namespace process left') or diag(`ps -fp @procs`);
my %before = map { $_ => 1 } @shm_before;
my @left = grep { !$before{$_} } glob('/dev/shm/qb-*');
is(scalar(@left), 0, 'no /dev/shm file left behind') or diag("@left");
done_testing();
