# Node recovery under the conditions of issue 18's last tests, three nodes
# as on three machines (src/tools/corosync-lab.sh, votequorum):
#
#   - a restart of the whole group, in another order than the nodes were
#     stopped: no primary component until a majority is back, the most
#     advanced node's state wins, the others catch up; nothing committed
#     is lost and every node ends with the same rows;
#   - pgbench on all three nodes (async, then sync) while one of them is
#     restarted twice: every node ends with the same rows.
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


END { system('bash', $lab, 'stop', $dir) if $dir; }
ImsgGroup::lab_start_or_end($lab, $dir, 3);

my @nodes = ImsgGroup::lab_nodes($lab, $dir, 3, 'imsg_restart', '', q{
CREATE TABLE t (id integer PRIMARY KEY, v text);
SELECT imsg_replicate('t');
CREATE TABLE u (id integer PRIMARY KEY, v text, n integer);
SELECT imsg_replicate('u');
});

sub synced
{
	my ($what, @which) = @_;
	for my $node (@which)
	{
		$node->poll_query_until('postgres',
			q{SELECT state = 'synced' AND applied_position = group_position FROM imsg_manager_status()})
		  or return fail("$what: " . $node->name . ' is ' .
			  $node->safe_psql('postgres', 'SELECT state, applied_position, group_position FROM imsg_manager_status()'));
	}
	return pass($what);
}

sub same_everywhere
{
	my ($what) = @_;
	ok(ImsgGroup::wait_idle(@nodes), "$what: the group is idle");
	ImsgGroup::same_contents(\@nodes, 't', "$what: every node has the same rows in t");
	ImsgGroup::same_contents(\@nodes, 'u', "$what: every node has the same rows in u");
}

synced('the group forms', @nodes);
my $mixed = ImsgGroup::mixed_script();
$nodes[0]->safe_psql('postgres', q{INSERT INTO u SELECT g, 'init', 0 FROM generate_series(1, 300) g});
ImsgGroup::storm(\@nodes, $mixed, 2, 100);

# --- the whole group stops, node1 first, and starts node3 first ----------
$nodes[0]->stop('fast');
ImsgGroup::storm([ @nodes[1, 2] ], $mixed, 2, 100);
$nodes[1]->safe_psql('postgres', q{INSERT INTO t VALUES (1001, 'node2 while node1 is down')});
ok(ImsgGroup::wait_idle(@nodes[1, 2]), 'nodes 2 and 3 agree');
$nodes[1]->stop('fast');
$nodes[2]->poll_query_until('postgres', q{SELECT state = 'disconnected' FROM imsg_manager_status()})
  or fail('node3 alone is not in the primary component');
my ($rc, $out, $err) = $nodes[2]->psql('postgres', q{INSERT INTO t VALUES (1002, 'node3 alone')});
like($err, qr/node "node3" is not synced with its group/, 'node3 alone takes no write');
my $last = $nodes[2]->safe_psql('postgres', 'SELECT group_position FROM imsg_manager_status()');
$nodes[2]->stop('fast');

$nodes[2]->start;
ok($nodes[2]->wait_for_log(qr/node "node3" belongs to group/), 'node3 started alone read its state');
sleep 2;
is($nodes[2]->safe_psql('postgres', 'SELECT state FROM imsg_manager_status()'), 'disconnected',
	'and waits for a majority: one manager of three is not a primary component');
$nodes[0]->start;
synced('node3 and node1 form the group again; node1 catches up from node3', @nodes[0, 2]);
is($nodes[0]->safe_psql('postgres', 'SELECT group_position FROM imsg_manager_status()'), $last,
	'at the position of the most advanced node');
like(slurp_file($nodes[0]->logfile), qr/imessages helper catches up from position \d+ to $last, from donor node3/,
	'node1 fetched what it missed from node3');
is($nodes[0]->safe_psql('postgres', 'SELECT v FROM t WHERE id = 1001'), 'node2 while node1 is down',
	'what node2 committed while node1 was down is on node1');
$nodes[1]->start;
synced('node2 rejoins', @nodes);
is($nodes[0]->safe_psql('postgres', 'SELECT count(*) FROM t WHERE id = 1002'), '0',
	'the refused write is nowhere');
same_everywhere('after the whole group restarted');

# --- pgbench on every node while node3 restarts twice ---------------------
for my $mode ('async', 'sync')
{
	my $pgdir = tempdir('imsg_storm_XXXX', TMPDIR => 1, CLEANUP => 1);
	open my $fh, '>', "$pgdir/mixed.sql" or die;
	print $fh $mixed;
	close $fh;
	local $ENV{PGOPTIONS} = "-c imessages.commit_mode=$mode";
	my @bg;
	my @outs = ('', '');
	my @errs = ('', '');
	for my $i (0, 1)
	{
		push @bg, IPC::Run::start(
			[ 'pgbench', '-n', '-h', $nodes[$i]->host, '-p', $nodes[$i]->port, '-c', 2, '-j', 1,
			  '-T', 12, '-f', "$pgdir/mixed.sql", '--max-tries=100', 'postgres' ],
			'<', \undef, '>', \$outs[$i], '2>', \$errs[$i]);
	}
	my $node3_xacts = 0;
	my $node3_failed = 0;
	for my $round (1 .. 3)
	{
		my ($n) = ImsgGroup::storm([ $nodes[2] ], $mixed, 2, 100, '--max-tries=100');
		$node3_xacts += $n;
		# (sync: a transaction that lost certification 100 times is failed)
		$node3_failed += ($ImsgGroup::last_outputs[0] =~ /number of failed transactions: (\d+)/)[0] // 0;
		last if $round == 3;
		$nodes[2]->restart;
		synced("$mode: node3 catches up after restart $round", $nodes[2]);
	}
	$_->finish for @bg;
	my $total = 0;
	$total += ($_ =~ /number of transactions actually processed: (\d+)/)[0] // 0 for @outs;
	cmp_ok($total, '>', 0, "$mode: nodes 1 and 2 committed $total transactions meanwhile");
	# (a client whose transaction fails other than by a serialization
	# failure is aborted: a synced node refused a write at a view change)
	is(join('', map { /(.*aborted.*)/ ? "$1\n" : '' } @errs), '',
		"$mode: no client on nodes 1 and 2 failed while node3 restarted");
	is($node3_xacts + $node3_failed, 3 * 200,
		"$mode: node3's transactions between restarts all committed, or failed certification ($node3_failed)");
	is($node3_failed, 0, 'none failed in async mode') if $mode eq 'async';
	same_everywhere("$mode storm with node3 restarted twice");
}

$_->stop for @nodes;
done_testing();
