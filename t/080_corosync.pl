# Three PostgreSQL clusters joined to one Corosync CPG group through one
# corosync that this test starts itself (unprivileged, in a user and mount
# namespace of its own, so that its fixed /run paths are private; it needs
# the machine's network namespace to have no other corosync).  Checks
# membership, replication of rows written on each node to all, large
# change sets split into frames, apply errors counted and logged with the
# change set's sequence number, a node whose manager stops leaving the
# group while the others go on, and cleanup.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ImsgGroup;

ImsgGroup::require_test_extra('corosync');

my $group = "imsg_tap_$$";
ImsgGroup::start_corosync_or_end();

# --- three nodes --------------------------------------------------------
my @nodes;
for my $i (1 .. 3)
{
	my $node = PostgreSQL::Test::Cluster->new("node$i");
	$node->init;
	$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'imessages'
max_worker_processes = 16
imessages.gcs = corosync
imessages.gcs_group = '$group'
imessages.node_name = 'node$i'
imessages.certification_window = 1000
restart_after_crash = on
});
	$node->append_conf('postgresql.conf',
		"imessages.node_conninfo = 'host=" . $node->host . ' port=' . $node->port . " dbname=postgres'\n");
	$node->start;
	$node->safe_psql('postgres', q{
SET session_replication_role = replica;
CREATE EXTENSION imessages;
CREATE TABLE acc (id integer PRIMARY KEY, owner text, balance numeric);
SELECT imsg_replicate('acc');
});
	push @nodes, $node;
}

for my $node (@nodes)
{
	$node->poll_query_until('postgres',
		"SELECT group_members = 3 AND state = 'synced' FROM imsg_manager_status()")
	  or die $node->name . ' does not see three members';
	$node->poll_query_until('postgres',
		"SELECT string_agg(node, ',' ORDER BY node) = 'node1,node2,node3' FROM imsg_group_members()")
	  or die $node->name . ' does not know every member by name';
}
pass('every node sees the three members, by name');
is( $nodes[1]->safe_psql('postgres',
		'SELECT node, gcs_nodeid = 1, pid > 0, joined_at IS NOT NULL FROM imsg_group_members() WHERE is_local'),
	'node2|t|t|t', 'imsg_group_members marks this node');

sub all_agree
{
	my ($sql, $expected, $what) = @_;
	for my $node (@nodes)
	{
		$node->poll_query_until('postgres', $sql, $expected)
		  or die "$what: " . $node->name . ' has ' . $node->safe_psql('postgres', $sql);
	}
	pass($what);
}

my $rows = q{SELECT string_agg(id || ':' || owner || ':' || balance, ',' ORDER BY id) FROM acc};

# rows written on each node appear on all
$nodes[0]->safe_psql('postgres', q{INSERT INTO acc VALUES (1, 'ann', 100), (2, 'bob', 50)});
$nodes[1]->safe_psql('postgres', q{INSERT INTO acc VALUES (3, 'cid', 10)});
$nodes[2]->safe_psql('postgres', q{UPDATE acc SET balance = balance + 1 WHERE id = 1});
all_agree($rows, '1:ann:101,2:bob:50,3:cid:10', 'inserts and an update from three nodes reach all');
$nodes[1]->safe_psql('postgres', q{DELETE FROM acc WHERE id = 2});
all_agree($rows, '1:ann:101,3:cid:10', 'a delete reaches all');

for my $node (@nodes)
{
	is($node->safe_psql('postgres', 'SELECT apply_errors FROM imsg_manager_status()'),
		'0', $node->name . ': no apply error');
}
# applied changes are not captured again: each node delivered 4 change sets
# (one per transaction), not more
all_agree('SELECT change_sets_delivered FROM imsg_manager_status()', '4',
	'each transaction was delivered once on every node (no echo)');

# a change set bigger than a CPG frame (~1 MiB) is split and reassembled
$nodes[0]->safe_psql('postgres',
	q{INSERT INTO acc SELECT i, repeat(md5(i::text), 100), i FROM generate_series(1000, 2999) i});
all_agree('SELECT count(*), sum(length(owner)) FROM acc WHERE id >= 1000',
	'2000|6400000', 'a 6 MB change set reaches all, whole');

# apply errors are logged with the change set's sequence number and counted
# (set up by hand on node1 only: imsg_replicate() does not travel then)
$nodes[0]->safe_psql('postgres', q{
SET session_replication_role = replica;
CREATE TABLE only_here (id integer PRIMARY KEY);
SELECT imsg_replicate('only_here');
RESET session_replication_role;
INSERT INTO only_here VALUES (1);
});
for my $node (@nodes[1 .. 2])
{
	$node->poll_query_until('postgres', 'SELECT apply_errors = 1 FROM imsg_manager_status()')
	  or die $node->name . ' did not count the apply error';
	like(slurp_file($node->logfile),
		qr/could not apply change set \d+ \(transaction \d+ of node "node1"\): replicated table "public.only_here" does not exist on this node/,
		$node->name . ': the error is logged with the sequence number');
}
# a table whose definition differs is refused, not written into
$_->safe_psql('postgres', 'CREATE TABLE differs (id integer PRIMARY KEY, v integer)') for @nodes[0 .. 1];
$nodes[2]->safe_psql('postgres', 'CREATE TABLE differs (id integer PRIMARY KEY, v text)');
$_->safe_psql('postgres', q{SET session_replication_role = replica; SELECT imsg_replicate('differs')})
  for @nodes;
$nodes[0]->safe_psql('postgres', 'INSERT INTO differs VALUES (1, 1)');
$nodes[1]->poll_query_until('postgres', 'SELECT count(*) = 1 FROM differs')
  or die 'node2 did not apply';
$nodes[2]->poll_query_until('postgres', 'SELECT apply_errors = 2 FROM imsg_manager_status()')
  or die 'node3 did not refuse the differing table';
is($nodes[2]->safe_psql('postgres', 'SELECT count(*) FROM differs'), '0',
	'node3 refused to write into a table that differs');
like(slurp_file($nodes[2]->logfile), qr/replicated table "public.differs" differs on this node/,
	'and said why');

# sync mode: two nodes change the same row concurrently.  node1 updates it
# and holds its transaction open; node2 updates it and commits first, so
# its change set is delivered first and wins; node1's commit then fails
# with 40001 (certification in delivery order) and is applied nowhere.
my $s1 = $nodes[0]->background_psql('postgres', on_error_stop => 0);
$s1->query_safe("SET imessages.commit_mode = 'sync'");
$s1->query_safe("BEGIN");
$s1->query_safe("UPDATE acc SET owner = 'node1 wins?' WHERE id = 3");
$nodes[1]->safe_psql('postgres', q{
SET imessages.commit_mode = 'sync';
UPDATE acc SET owner = 'node2 wins' WHERE id = 3;
});
$s1->{stderr} = '';    # BackgroundPsql keeps stderr across queries
$s1->query("COMMIT");
like($s1->{stderr}, qr/could not serialize access due to a concurrent update on another node/,
	'the later of two conflicting sync commits fails');
like($s1->query("\\echo :LAST_ERROR_SQLSTATE"), qr/40001/, 'with SQLSTATE 40001');
$s1->quit;
all_agree(q{SELECT owner FROM acc WHERE id = 3}, 'node2 wins',
	'the change set delivered first wins on every node');
is( $nodes[2]->safe_psql('postgres', 'SELECT change_sets_conflicted FROM imsg_manager_status()'),
	'1', 'every node counted the conflict');
for my $node (@nodes)
{
	is($node->safe_psql('postgres', 'SELECT apply_errors FROM imsg_manager_status()'),
		$node == $nodes[2] ? '2' : ($node == $nodes[1] ? '1' : '0'),
		$node->name . ': no new apply error');
}
# a sync update that does not conflict commits as usual
$nodes[0]->safe_psql('postgres', q{SET imessages.commit_mode = 'sync'; UPDATE acc SET balance = 7 WHERE id = 3});
all_agree(q{SELECT balance FROM acc WHERE id = 3}, '7', 'a later sync update of that row is fine');

# async mode: no certification, the later change overwrites the earlier on
# every node.  node1 changes a row and holds its transaction open; node2
# changes the same row and commits (delivered first); then node1 commits
# (delivered later): node1's value must win everywhere, node1 included,
# where node2's change reached the row after node1's commit.
my $a1 = $nodes[0]->background_psql('postgres');
$a1->query_safe("BEGIN");
$a1->query_safe("UPDATE acc SET owner = 'async node1' WHERE id = 1");
$nodes[1]->safe_psql('postgres', q{UPDATE acc SET owner = 'async node2' WHERE id = 1});
$nodes[2]->poll_query_until('postgres', q{SELECT owner = 'async node2' FROM acc WHERE id = 1})
  or die 'node2 change not delivered';
$a1->query_safe("COMMIT");
$a1->quit;
all_agree(q{SELECT owner FROM acc WHERE id = 1}, 'async node1',
	'async: the change delivered last wins on every node, its own included');
# and two nodes inserting the same key: the later insert's row everywhere
my $a2 = $nodes[1]->background_psql('postgres');
$a2->query_safe("BEGIN");
$a2->query_safe("INSERT INTO acc VALUES (77, 'insert node2', 2)");
$nodes[2]->safe_psql('postgres', q{INSERT INTO acc VALUES (77, 'insert node3', 3)});
$nodes[0]->poll_query_until('postgres', q{SELECT count(*) = 1 FROM acc WHERE id = 77})
  or die 'node3 insert not delivered';
$a2->query_safe("COMMIT");
$a2->quit;
all_agree(q{SELECT owner FROM acc WHERE id = 77}, 'insert node2',
	'async: the later of two inserts of one key wins everywhere');

# certification forgets rows written more than certification_window (1000)
# change sets ago, pruning every 250: 3000 one-row change sets leave at
# most 1250 rows in the map, the same on every node
$nodes[0]->safe_psql('postgres', q{
DO $$ BEGIN
	FOR i IN 10001 .. 13000 LOOP
		INSERT INTO acc VALUES (i, 'many', 0);
		COMMIT;
	END LOOP;
END $$;
});
all_agree(q{SELECT count(*) FROM acc WHERE owner = 'many'}, '3000', '3000 one-row change sets reach all');
for my $node (@nodes)
{
	my $rows = $node->safe_psql('postgres', 'SELECT certification_rows FROM imsg_manager_status()');
	ok($rows > 0 && $rows <= 1250, $node->name . ": the certification map is bounded ($rows rows)");
}
is( join(',', map { $_->safe_psql('postgres', 'SELECT certification_rows FROM imsg_manager_status()') } @nodes),
	join(',', ($nodes[0]->safe_psql('postgres', 'SELECT certification_rows FROM imsg_manager_status()')) x 3),
	'and holds the same number of rows on every node');

# a node whose manager is killed leaves the group (the postmaster of node3
# reinitializes and starts a new manager); the others go on committing
my $m3 = $nodes[2]->safe_psql('postgres', 'SELECT imsg_manager_pid()');
kill 'KILL', $m3;
$nodes[0]->safe_psql('postgres', q{INSERT INTO acc VALUES (4, 'dan', 1)});
$nodes[1]->poll_query_until('postgres', 'SELECT count(*) = 1 FROM acc WHERE id = 4')
  or die 'node2 stopped getting changes';
pass('while node3 is away, the others go on committing and replicating');
# it comes back as a new member (a new manager pid), catches up on what it
# missed (from its own change-set log and a donor's) and gets what is
# committed from then on
$nodes[0]->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM imsg_group_members() WHERE node = 'node3' AND pid <> $m3")
  or die 'node3 did not rejoin';
$nodes[2]->poll_query_until('postgres', "SELECT group_members = 3 FROM imsg_manager_status()")
  or die 'node3 does not see the group';
$nodes[2]->poll_query_until('postgres', "SELECT state = 'synced' FROM imsg_manager_status()")
  or die 'node3 is not synced again';
$nodes[0]->safe_psql('postgres', q{INSERT INTO acc VALUES (5, 'eve', 1)});
$nodes[2]->poll_query_until('postgres', 'SELECT count(*) = 1 FROM acc WHERE id = 5')
  or die 'node3 did not get changes after rejoining';
pass('node3 rejoins as a new member and applies new change sets');
is($nodes[2]->safe_psql('postgres', 'SELECT count(*) FROM acc WHERE id = 4'), '1',
	'and what was committed while its manager was away');

# --- cleanup ------------------------------------------------------------
$_->stop for @nodes;
my $clean = ImsgGroup::stop_corosync();
is(`pgrep -u $> -x corosync` // '', '', 'no corosync left running');
# the killed manager could not close its IPC buffers: stop_corosync
# removes what this test's processes left, then nothing may remain
ok($clean, 'no /dev/shm file left behind');
done_testing();
