# Keys that do not collide (issue 20): three clusters in one corosync
# group, each with its own imessages.node_id, insert into tables with a
# bigserial primary key at once.
#
#   - without imsg_node_sequence() every node's copy of the sequence gives
#     the same keys, so the inserts collide: the table ends with as many
#     rows as ONE node inserted (each node's sequence gave 1..N, and every
#     node draws every one of them), whatever the interleaving;
#   - imsg_node_sequence() on each node then moves each copy to its own
#     values, above the keys the table holds;
#   - with it, storms of async and of sync inserts on every node: no
#     failed transaction, no conflict, no lost row, the same rows on every
#     node, each row's key congruent to the id of the node that inserted it;
#   - a fourth node that joins by full state transfer gets the tables'
#     sequences as the donor's copies: the transfer spreads them again for
#     node 4, and its inserts do not collide either.
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

my $group = "imsg_seq_$$";
my $table_sql = q{
CREATE TABLE c (id bigserial PRIMARY KEY,
                node text NOT NULL DEFAULT current_setting('imessages.node_name'));
CREATE TABLE k (id bigserial PRIMARY KEY,
                node text NOT NULL DEFAULT current_setting('imessages.node_name'),
                mode text NOT NULL);
};
my @nodes = ImsgGroup::new_nodes(3, $group, '', $table_sql);

# imsg_replicate() warns about the serial keys, naming the helper
for my $node (@nodes)
{
	# (each node by hand: sent to the group, two at once would conflict)
	my ($rc, $out, $err) = $node->psql('postgres', q{SET session_replication_role = replica; SELECT imsg_replicate('c')});
	is($rc, 0, $node->name . ': c is replicated');
	like($err, qr/WARNING:  key column "id" of table "public.c" takes its values from sequence "public.c_id_seq".*\n.*\nHINT:  Run SELECT imsg_node_sequence\('public.c_id_seq'\); on every node/,
		$node->name . ': imsg_replicate() warns that the key comes from a sequence');
}

# Pass $nodes and @extra to ImsgGroup::storm; ok() if every pgbench exited
# 0 and reports every transaction processed and none failed.  Returns the
# number of transactions processed in all.
sub clean_storm
{
	my ($what, $script, $clients, $xacts, @extra) = @_;
	my @done = ImsgGroup::storm(\@nodes, $script, $clients, $xacts, @extra);
	my @failed = map { /number of failed transactions: (\d+)/ ? $1 : 'none reported' }
	  @ImsgGroup::last_outputs;
	is( join(',', map { "$done[$_]/$ImsgGroup::last_results[$_]/$failed[$_]" } 0 .. $#nodes),
		join(',', ("@{[ $clients * $xacts ]}/0/0") x @nodes),
		"$what: every pgbench exits 0, every transaction committed, none failed (processed/exit/failed per node)");
	my $sum = 0;
	$sum += $_ for @done;
	return $sum;
}

sub count_everywhere
{
	my ($table, $expected, $what) = @_;
	is(join(',', map { $_->safe_psql('postgres', "SELECT count(*) FROM $table") } @nodes),
		join(',', ($expected) x @nodes), $what);
}

# --- 1. without the helper the keys collide ---------------------------------
# ON CONFLICT DO NOTHING: an insert whose key another node's row already
# took here is not an error, so that the storm runs to the end
my $clients = 3;
my $xacts = 200;
my $per_node = $clients * $xacts;
clean_storm('no helper, async', q{
INSERT INTO c DEFAULT VALUES ON CONFLICT (id) DO NOTHING;
}, $clients, $xacts);
ok(ImsgGroup::wait_idle(@nodes), 'no helper: the group becomes idle');
count_everywhere('c', $per_node,
	"no helper: of @{[ $per_node * 3 ]} inserts committed only $per_node rows are left on every node: the keys collided");
ImsgGroup::same_contents(\@nodes, 'c', 'no helper: every node has the same rows all the same');

# --- 2. the helper moves each node's copy to its own values ------------------
for my $i (0 .. $#nodes)
{
	my $id = $i + 1;
	my $first = $nodes[$i]->safe_psql('postgres', q{SELECT imsg_node_sequence('c_id_seq')});
	ok($first > $per_node && $first % 16 == $id,
		$nodes[$i]->name . ": imsg_node_sequence() restarts c_id_seq at $first: above the $per_node keys, congruent to $id modulo 16");
	is($nodes[$i]->safe_psql('postgres', q{SELECT seqincrement FROM pg_sequence WHERE seqrelid = 'c_id_seq'::regclass}),
		'16', $nodes[$i]->name . ': its increment is the stride');
	my ($rc, $out, $err) = $nodes[$i]->psql('postgres', q{SELECT imsg_replicate('c')});
	unlike($err, qr/WARNING/, $nodes[$i]->name . ': imsg_replicate() no longer warns');
}
my $inserted = clean_storm('after the helper, async', q{
INSERT INTO c DEFAULT VALUES;
}, $clients, $xacts);
ok(ImsgGroup::wait_idle(@nodes), 'after the helper: the group becomes idle');
count_everywhere('c', $per_node + $inserted, "after the helper: $inserted more rows on every node, none lost");
ImsgGroup::same_contents(\@nodes, 'c', 'after the helper: every node has the same rows');
is($nodes[0]->safe_psql('postgres', qq{SELECT count(*) FROM c WHERE id > $per_node AND id % 16 <> substr(node, 5)::integer}),
	'0', "after the helper: every new key is congruent to its node's id");

# --- 3. a table set up with the helper before any insert: async and sync ----
$_->safe_psql('postgres', q{SET session_replication_role = replica; SELECT imsg_replicate('k'); RESET session_replication_role;
SELECT imsg_node_sequence('k', 'id')})
  for @nodes;
my @conflicted_before =
  map { $_->safe_psql('postgres', 'SELECT change_sets_conflicted FROM imsg_manager_status()') } @nodes;
$clients = 4;
my $total = clean_storm('async inserts', q{
INSERT INTO k (mode) VALUES ('async');
}, $clients, 250);
# (no --max-tries: a 40001 would be a failed transaction)
$total += clean_storm('sync inserts', q{
BEGIN;
SET LOCAL imessages.commit_mode = 'sync';
INSERT INTO k (mode) VALUES ('sync');
COMMIT;
}, $clients, 150);
ok(ImsgGroup::wait_idle(@nodes), 'async and sync inserts: the group becomes idle');
count_everywhere('k', $total, "async and sync inserts: all $total rows on every node");
ImsgGroup::same_contents(\@nodes, 'k', 'async and sync inserts: every node has the same rows');
is($nodes[0]->safe_psql('postgres', q{SELECT count(*) FROM k WHERE id % 16 <> substr(node, 5)::integer}),
	'0', "async and sync inserts: every key is congruent to its node's id");
is($nodes[0]->safe_psql('postgres', q{SELECT string_agg(mode || ':' || n, ',' ORDER BY mode) FROM (SELECT mode, count(*) AS n FROM k GROUP BY mode) m}),
	'async:' . (3 * $clients * 250) . ',sync:' . (3 * $clients * 150), 'every async and every sync insert is there');
my @conflicted =
  map { $_->safe_psql('postgres', 'SELECT change_sets_conflicted FROM imsg_manager_status()') } @nodes;
is(join(',', map { $conflicted[$_] - $conflicted_before[$_] } 0 .. $#nodes), '0,0,0',
	'sync inserts: no change set lost certification on any node');

# --- 4. a fourth node, by full state transfer --------------------------------
my $node4 = PostgreSQL::Test::Cluster->new('node4');
ImsgGroup::start_member($node4, 4, $group, '', '');
push @nodes, $node4;
for my $node (@nodes)
{
	$node->poll_query_until('postgres',
		"SELECT group_members = 4 AND state = 'synced' FROM imsg_manager_status()")
	  or die $node->name . ' does not see node4 synced';
}
ok($node4->log_contains('imessages helper copied 2 tables'), 'node4 got the tables by full state transfer');
for my $seq ('c_id_seq', 'k_id_seq')
{
	my ($increment, $last, $called, $max) = split /\|/, $node4->safe_psql('postgres',
		"SELECT q.seqincrement, s.last_value, s.is_called, (SELECT max(id) FROM @{[ substr($seq, 0, 1) ]})
		   FROM pg_sequence q, $seq s WHERE q.seqrelid = '$seq'::regclass");
	ok($increment == 16 && $called eq 'f' && $last % 16 == 4 && $last > $max,
		"node4: the transfer spread $seq for node 4 (increment $increment, restarts at $last, above $max)");
}
unlike(slurp_file($node4->logfile), qr/WARNING:  sequence .* came with the full transfer/, 'node4: no warning about its sequences');
$total += clean_storm('async inserts on four nodes', q{
INSERT INTO k (mode) VALUES ('four');
}, 2, 100);
ok(ImsgGroup::wait_idle(@nodes), 'four nodes: the group becomes idle');
count_everywhere('k', $total, "four nodes: all $total rows on every node");
ImsgGroup::same_contents(\@nodes, 'k', 'four nodes: every node has the same rows');
is($node4->safe_psql('postgres', q{SELECT count(*) FROM k WHERE node = 'node4' AND id % 16 = 4}),
	'200', "four nodes: node4's keys are its own");

# --- 5. a node with no node id that joins by full transfer: it is told --------
my $node5 = PostgreSQL::Test::Cluster->new('node5');
ImsgGroup::start_member($node5, 5, $group, 'imessages.node_id = 0', '');
$node5->poll_query_until('postgres',
	"SELECT group_members = 5 AND state = 'synced' FROM imsg_manager_status()")
  or die 'node5 is not synced';
for my $seq ('c_id_seq', 'k_id_seq')
{
	ok($node5->log_contains(qr/WARNING:  sequence "public\.$seq" came with the full transfer as a copy of the donor's, and gives the donor's values/),
		"node5, with no imessages.node_id: the log says that $seq gives the donor's values");
}
$node5->stop;

# --- 6. a node with another node's id: both are told, and the helper refuses
my $node6 = PostgreSQL::Test::Cluster->new('node6');
ImsgGroup::start_member($node6, 6, $group, 'imessages.node_id = 2', '');
$node6->poll_query_until('postgres',
	"SELECT group_members = 5 AND state = 'synced' FROM imsg_manager_status()")
  or die 'node6 is not synced';
ok($node6->log_contains(qr/WARNING:  imessages.node_id 2 of node "node6" is also that of node "node2" of group/),
	'node6 says that node2 has its node id');
ok($nodes[1]->log_contains(qr/WARNING:  imessages.node_id 2 of node "node2" is also that of node "node6" of group/),
	'node2 says that node6 has its node id');
is($nodes[1]->safe_psql('postgres', 'SELECT imsg_node_id_clash()'), '"node6"', 'node2: imsg_node_id_clash() names node6');
is($nodes[0]->safe_psql('postgres', 'SELECT imsg_node_id_clash() IS NULL'), 't', 'node1: no clash');
ok($node6->log_contains(qr/WARNING:  sequence "public\.k_id_seq" came with the full transfer and was not spread: imessages.node_id 2 of this node is also that of node "node2"/),
	'node6: the transfer did not spread its sequences with the same id, and said why');
my ($rc6, $out6, $err6) = $node6->psql('postgres', q{SELECT imsg_node_sequence('k_id_seq')});
like($err6, qr/ERROR:  imessages.node_id 2 of this node is also that of node "node2" of its group/,
	'node6: imsg_node_sequence() refuses to spread with the id of another node');
$node6->stop;
$nodes[1]->poll_query_until('postgres', 'SELECT group_members = 4 AND imsg_node_id_clash() IS NULL FROM imsg_manager_status()')
  or fail('node2: the clash is gone with node6');

for my $node (@nodes)
{
	is($node->safe_psql('postgres', 'SELECT apply_errors FROM imsg_manager_status()'),
		'0', $node->name . ': no apply error');
	unlike(slurp_file($node->logfile), qr/terminated by signal|could not apply/,
		$node->name . ': no crash, no change set that could not be applied');
}

$_->stop for @nodes;
ok(ImsgGroup::stop_corosync(), 'corosync stopped, nothing left in /dev/shm');
done_testing();
