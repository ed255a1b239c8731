# DDL on replicated tables travels through the group (src/ddl.c): three
# clusters in one corosync group; ALTER TABLE, CREATE INDEX and DROP TABLE
# run on one node while the others write, and run on every node at the
# same place in the order, so that every node ends with the same columns,
# indexes and rows.  Statements that cannot be replicated are refused with
# their error, and a statement that fails on one node stops that node
# (state 'stopped', writes refused) instead of letting it diverge; mended
# and restarted, it applies the statement and catches up.  imsg_replicate()
# and imsg_unreplicate() travel too: a table created on one node arrives
# on the others, with its rows.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use File::Temp qw(tempdir);
use ImsgGroup;

ImsgGroup::require_test_extra('corosync');

ImsgGroup::start_corosync_or_end();

my @nodes = ImsgGroup::new_nodes(3, "imsg_ddl_$$", '', q{
CREATE TABLE t (id integer PRIMARY KEY, v text);
SELECT imsg_replicate('t');
CREATE TABLE u (id integer PRIMARY KEY);
SELECT imsg_replicate('u');
});
my ($n1, $n2, $n3) = @nodes;
$n1->safe_psql('postgres', "INSERT INTO t SELECT g, 'init' FROM generate_series(1, 200) g");
ok(ImsgGroup::wait_idle(@nodes), 'the initial rows reach every node');

# pgbench on some nodes for a few seconds, in the background
my $dir = tempdir('imsg_storm_XXXX', TMPDIR => 1, CLEANUP => 1);
my $scripts = 0;
sub start_storm
{
	my ($on, $script, $seconds) = @_;
	my $file = "$dir/script" . ++$scripts . '.sql';
	open my $fh, '>', $file or die;
	print $fh $script;
	close $fh;
	my @runs;
	for my $node (@$on)
	{
		my ($out, $err) = ('', '');
		my @cmd = ('pgbench', '-n', '-h', $node->host, '-p', $node->port, '-c', 2, '-j', 1,
			'-T', $seconds, '--max-tries=1000', '-f', $file, 'postgres');
		push @runs, [ IPC::Run::start(\@cmd, '<', \undef, '>', \$out, '2>', \$err), \$out, \$err, $node ];
	}
	return \@runs;
}

# Wait for a storm: the number of transactions each node committed, and
# how many failed (pgbench's count, after its retries).
sub finish_storm
{
	my ($runs) = @_;
	my ($done, $failed, $aborted) = (0, 0, 0);
	for my $r (@$runs)
	{
		$r->[0]->finish;
		$aborted++ if $r->[0]->result;
		my ($n) = ${ $r->[1] } =~ /number of transactions actually processed: (\d+)/;
		my ($f) = ${ $r->[1] } =~ /number of failed transactions: (\d+)/;
		diag($r->[3]->name . ": pgbench: ${ $r->[2] }") if $r->[0]->result || !defined $n;
		$done += $n // 0;
		$failed += $f // 0;
	}
	return ($done, $failed, $aborted);
}

sub on_every_node
{
	my ($sql) = @_;
	return join(',', map { $_->safe_psql('postgres', $sql) } @nodes);
}

# 1. ADD COLUMN on node1 while node2 and node3 update rows (async)
my $storm = start_storm([ $n2, $n3 ], q{
\set id random(1, 200)
UPDATE t SET v = 'upd-' || :client_id WHERE id = :id;
}, 4);
sleep 1;
$n1->safe_psql('postgres', 'ALTER TABLE t ADD COLUMN n integer NOT NULL DEFAULT 0');
my ($done, $failed, $aborted) = finish_storm($storm);
cmp_ok($done, '>', 0, 'ADD COLUMN: the writers on the other nodes went on');
is($failed, 0, 'ADD COLUMN: no writer failed');
$n2->safe_psql('postgres', "INSERT INTO t (id, v, n) SELECT g, 'new', 7 FROM generate_series(1001, 1100) g");
ok(ImsgGroup::wait_idle(@nodes), 'ADD COLUMN: the group becomes idle');
is(on_every_node("SELECT string_agg(attname, ' ' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 't'::regclass AND attnum > 0 AND NOT attisdropped"),
	join(',', ('id v n') x 3), 'ADD COLUMN: every node has the new column');
is(on_every_node('SELECT sum(n) FROM t WHERE id > 1000'), join(',', (700) x 3),
	'ADD COLUMN: rows written on another node with the new column arrive everywhere');
ImsgGroup::same_contents(\@nodes, 't', 'ADD COLUMN: every node has the same rows');

# 2. CREATE INDEX on node2
$n2->safe_psql('postgres', 'CREATE INDEX t_n_idx ON t (n)');
ok(ImsgGroup::wait_idle(@nodes), 'CREATE INDEX: the group becomes idle');
is(on_every_node("SELECT count(*) FROM pg_indexes WHERE tablename = 't' AND indexname = 't_n_idx'"),
	'1,1,1', 'CREATE INDEX: the index is on every node');

# 3. DROP COLUMN on node3 while node1 and node2 write n, in sync mode:
# a sync change set that had not seen the statement is retried (40001)
$storm = start_storm([ $n1, $n2 ], q{
SET imessages.commit_mode = sync;
\set id random(1, 200)
UPDATE t SET n = n + 1 WHERE id = :id;
}, 4);
sleep 1;
$n3->safe_psql('postgres', 'ALTER TABLE t DROP COLUMN v');
($done, $failed) = finish_storm($storm);
cmp_ok($done, '>', 0, 'DROP COLUMN: the sync writers on the other nodes went on');
is($failed, 0, 'DROP COLUMN: no writer failed for good');
ok(ImsgGroup::wait_idle(@nodes), 'DROP COLUMN: the group becomes idle');
is(on_every_node("SELECT count(*) FROM pg_attribute WHERE attrelid = 't'::regclass AND attname = 'v' AND NOT attisdropped"),
	'0,0,0', 'DROP COLUMN: the column is gone on every node');
ImsgGroup::same_contents(\@nodes, 't', 'DROP COLUMN: every node has the same rows');

# 4. statements refused on a replicated table, each with its error
my ($ret, $out, $err) = $n1->psql('postgres', 'CREATE INDEX CONCURRENTLY t_c_idx ON t (n)');
like($err, qr/CREATE INDEX CONCURRENTLY is not supported on replicated table "public.t"/,
	'CREATE INDEX CONCURRENTLY is refused');
($ret, $out, $err) = $n1->psql('postgres', 'ALTER TABLE t DISABLE TRIGGER ALL');
like($err, qr/ENABLE\/DISABLE TRIGGER is not supported on replicated table/,
	'disabling the capture trigger is refused');
($ret, $out, $err) = $n1->psql('postgres', 'ALTER TABLE t DROP CONSTRAINT t_pkey');
like($err, qr/replicated table "public.t" must keep its primary key/,
	'dropping the primary key is refused');
($ret, $out, $err) = $n1->psql('postgres', 'ALTER TABLE t SET SCHEMA pg_temp');
like($err, qr/SET SCHEMA is not supported on replicated table/, 'SET SCHEMA is refused');
is(on_every_node("SELECT count(*) FROM pg_indexes WHERE tablename = 't'"), '2,2,2',
	'a refused statement changed no node');

# 5. a statement that fails on one node stops that node, not the group
$n3->safe_psql('postgres', 'CREATE TABLE t_v_idx (x integer)');    # takes the name
$n1->safe_psql('postgres', "ALTER TABLE t ADD COLUMN v text DEFAULT 'back'");
$n1->safe_psql('postgres', 'CREATE INDEX t_v_idx ON t (v)');
$n3->poll_query_until('postgres', "SELECT state = 'stopped' FROM imsg_manager_status()")
  or die 'node3 did not stop';
is($n3->safe_psql('postgres', 'SELECT ddl_errors FROM imsg_manager_status()'), '1',
	'the failed statement is counted');
like(slurp_file($n3->logfile), qr/node "node3" stops applying: the DDL statement at position \d+, from node "node1", failed on this node/,
	'the node says it stops applying');
($ret, $out, $err) = $n3->psql('postgres', 'UPDATE t SET n = 0 WHERE id = 1');
like($err, qr/node "node3" is not synced with its group.*\n.*The node is stopped/,
	'a stopped node refuses writes to replicated tables');
$n1->safe_psql('postgres', 'UPDATE t SET n = n + 100 WHERE id <= 10');
$n2->poll_query_until('postgres', "SELECT count(*) = 2 FROM pg_indexes WHERE indexname IN ('t_v_idx', 't_n_idx')")
  or die 'node2 did not create the index';
is($n3->safe_psql('postgres', "SELECT count(*) FROM t WHERE n >= 100"), '0',
	'the stopped node applies nothing after the statement');

# mended and restarted, it runs the statement and catches up
$n3->safe_psql('postgres', 'DROP TABLE t_v_idx');
$n3->safe_psql('postgres', 'SELECT pg_terminate_backend(imsg_manager_pid())');
$n3->poll_query_until('postgres', "SELECT state = 'synced' FROM imsg_manager_status()")
  or die 'node3 did not come back';
ok(ImsgGroup::wait_idle(@nodes), 'mended: the group becomes idle');
is(on_every_node("SELECT count(*) FROM pg_indexes WHERE indexname = 't_v_idx'"), '1,1,1',
	'mended: the statement ran on the node that had stopped');
ImsgGroup::same_contents(\@nodes, 't', 'mended: every node has the same rows');

# 6. DROP TABLE on node2
$n2->safe_psql('postgres', 'DROP TABLE u');
ok(ImsgGroup::wait_idle(@nodes), 'DROP TABLE: the group becomes idle');
is(on_every_node("SELECT count(*) FROM pg_class WHERE relname = 'u'"), '0,0,0',
	'DROP TABLE: the table is gone on every node');
is(on_every_node("SELECT ddl_errors || '/' || CASE WHEN state = 'donor' THEN 'synced' ELSE state END FROM imsg_manager_status()"),
	'0/synced,0/synced,1/synced', 'no statement failed since (node3 counts its one since it started)');
cmp_ok((split /,/, on_every_node('SELECT ddl_applied FROM imsg_manager_status()'))[0], '>=', 3,
	'node1 counts the statements of the others it applied');

# 7. imsg_replicate() travels: a table created on node1 only, with rows,
# while node2 and node3 write t, arrives on every node with its columns,
# defaults, constraints, indexes and rows, replicated; a node that had a
# table of that name of its own takes node1's rows in place of its own
$n1->safe_psql('postgres', q{
CREATE SCHEMA app;
CREATE TABLE app.orders (
    id bigserial PRIMARY KEY,
    code text NOT NULL UNIQUE,
    qty integer NOT NULL DEFAULT 1 CHECK (qty > 0),
    price numeric(10,2),
    doubled integer GENERATED ALWAYS AS (qty * 2) STORED,
    tags text[] COLLATE "C");
CREATE INDEX orders_price_idx ON app.orders (price) WHERE price IS NOT NULL;
CREATE TABLE app.kinds (id integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, name text);
ALTER TABLE app.orders ADD COLUMN kind integer REFERENCES app.kinds;
INSERT INTO app.kinds (name) SELECT 'kind ' || g FROM generate_series(1, 5) g;
INSERT INTO app.orders (code, qty, price, kind, tags)
  SELECT 'c' || g, g % 7 + 1, g * 1.5, g % 5 + 1, ARRAY['x' || g] FROM generate_series(1, 500) g;
CREATE TABLE mixed (id integer PRIMARY KEY, v text);
INSERT INTO mixed SELECT g, 'node1' FROM generate_series(1, 20) g;
});
$n3->safe_psql('postgres', q{CREATE TABLE mixed (id integer PRIMARY KEY, v text);
INSERT INTO mixed SELECT g, 'node3' FROM generate_series(11, 40) g});
$storm = start_storm([ $n2, $n3 ], q{
\set id random(1, 200)
UPDATE t SET n = n + 1 WHERE id = :id;
}, 4);
sleep 1;
$n1->safe_psql('postgres', q{SELECT imsg_replicate('app.kinds'); SELECT imsg_replicate('app.orders');
SELECT imsg_replicate('mixed')});
($done, $failed, $aborted) = finish_storm($storm);
is("$failed/$aborted", '0/0', 'imsg_replicate: the writers on the other nodes went on');
ok(ImsgGroup::wait_idle(@nodes), 'imsg_replicate: the group becomes idle');
is(on_every_node(q{SELECT string_agg(relation::text, ' ' ORDER BY relation::text) FROM imsg_replicated_tables}),
	join(',', ('app.kinds app.orders mixed t') x 3), 'imsg_replicate: the tables are replicated on every node');
my $shape = q{SELECT string_agg(x, E'\n' ORDER BY x) FROM (
  SELECT format('%s %s %s %s %s', attname, format_type(atttypid, atttypmod), attnotnull, attgenerated,
                pg_get_expr(adbin, adrelid)) AS x
    FROM pg_attribute LEFT JOIN pg_attrdef ON adrelid = attrelid AND adnum = attnum
   WHERE attrelid = 'app.orders'::regclass AND attnum > 0 AND NOT attisdropped
  UNION ALL SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'app.orders'::regclass
  UNION ALL SELECT indexdef FROM pg_indexes WHERE schemaname = 'app' AND tablename = 'orders'
  UNION ALL SELECT attname || ' identity ' || attidentity::text FROM pg_attribute WHERE attrelid = 'app.kinds'::regclass AND attidentity <> '') s};
my @shapes = map { $_->safe_psql('postgres', $shape) } @nodes;
like($shapes[0], qr/orders_price_idx.*WHERE \(price IS NOT NULL\)/, 'imsg_replicate: node1 has the partial index');
is($shapes[1], $shapes[0], 'imsg_replicate: node2 created the same columns, defaults, constraints and indexes');
is($shapes[2], $shapes[0], 'imsg_replicate: node3 created the same columns, defaults, constraints and indexes');
is(on_every_node(q{SELECT count(*) || ' ' || sum(doubled) FROM app.orders}),
	join(',', ('500 ' . $n1->safe_psql('postgres', 'SELECT sum(doubled) FROM app.orders')) x 3),
	'imsg_replicate: the rows came, generated columns computed');
ImsgGroup::same_contents(\@nodes, 'app.orders', 'imsg_replicate: every node has the same orders');
ImsgGroup::same_contents(\@nodes, 'mixed', "imsg_replicate: node3's own rows of a table it had gave way to node1's");
is($n3->safe_psql('postgres', q{SELECT count(*) || ' ' || min(v) || ' ' || max(v) FROM mixed}), '20 node1 node1',
	"imsg_replicate: node3 has node1's 20 rows of mixed, none of its own");
ImsgGroup::same_contents(\@nodes, 't', 'imsg_replicate: t, written meanwhile, is the same everywhere');

# the table arrived replicated: writes on every node reach the others,
# and the sequence the new nodes created gives their own keys
like($n2->safe_psql('postgres', q{SELECT seqincrement FROM pg_sequence WHERE seqrelid = 'app.orders_id_seq'::regclass}),
	qr/^16$/, 'imsg_replicate: node2 spread the sequence it created (imessages.node_id is set)');
$n1->safe_psql('postgres', q{SELECT imsg_node_sequence('app.orders_id_seq')});
$storm = start_storm([ $n1, $n2, $n3 ], q{
INSERT INTO app.orders (code, qty, price, kind) VALUES (md5(random()::text), 2, 3.5, 1);
\set id random(1, 200)
UPDATE app.orders SET qty = qty + 1 WHERE id = :id;
}, 4);
($done, $failed, $aborted) = finish_storm($storm);
cmp_ok($done, '>', 0, 'writes on the new table on every node');
is("$failed/$aborted", '0/0', 'writes on the new table: no transaction failed, no client aborted (no key collided)');
ok(ImsgGroup::wait_idle(@nodes), 'after writes on the new table: the group becomes idle');
ImsgGroup::same_contents(\@nodes, 'app.orders', 'after writes on the new table on every node: the same rows everywhere');

# a second imsg_replicate() of a replicated table sends nothing (a ping
# of node2's is delivered after anything it sent before)
my $pos = $n1->safe_psql('postgres', 'SELECT group_position FROM imsg_manager_status()');
$n2->safe_psql('postgres', q{SELECT imsg_replicate('app.orders')});
ok(ImsgGroup::wait_idle(@nodes), 'a second imsg_replicate(): the group is idle');
is($n1->safe_psql('postgres', 'SELECT group_position FROM imsg_manager_status()'), $pos,
	'imsg_replicate() of a table already replicated sends nothing');
# a temporary table cannot travel; nor can a table be sent in REPEATABLE READ
($ret, $out, $err) = $n1->psql('postgres', q{CREATE TEMP TABLE tmp1 (id integer PRIMARY KEY); SELECT imsg_replicate('tmp1')});
like($err, qr/cannot replicate temporary table "tmp1"/, 'a temporary table is refused');
($ret, $out, $err) = $n1->psql('postgres', q{CREATE TABLE rr (id integer PRIMARY KEY);
BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT imsg_replicate('rr'); COMMIT});
like($err, qr/imsg_replicate\(\) cannot send a table to the group in a REPEATABLE READ transaction/,
	'imsg_replicate() in REPEATABLE READ is refused');
# a node where the table of that name has another owner refuses it, and stops
$n3->safe_psql('postgres', q{CREATE ROLE regress_other; CREATE TABLE theirs (id integer PRIMARY KEY);
ALTER TABLE theirs OWNER TO regress_other; INSERT INTO theirs VALUES (42)});
$n1->safe_psql('postgres', q{CREATE ROLE regress_mine; GRANT EXECUTE ON FUNCTION imsg_replicate(regclass), imsg_capture(), imsg_refuse_truncate() TO regress_mine;
GRANT CREATE ON SCHEMA public TO regress_mine});
$n2->safe_psql('postgres', q{CREATE ROLE regress_mine});
$n1->safe_psql('postgres', q{SET ROLE regress_mine; CREATE TABLE theirs (id integer PRIMARY KEY); INSERT INTO theirs VALUES (1);
SELECT imsg_replicate('theirs')});
$n3->poll_query_until('postgres', "SELECT state = 'stopped' FROM imsg_manager_status()")
  or die 'node3 did not stop';
like(slurp_file($n3->logfile), qr/table "public.theirs" is owned by "regress_other" here, not by "regress_mine" as on node "node1"/,
	'a table of another owner is not taken over: the node stops, and says why');
is($n3->safe_psql('postgres', 'SELECT id FROM theirs'), '42', "and the other owner's rows are still there");
$n2->poll_query_until('postgres', q{SELECT count(*) = 1 FROM theirs})
  or die 'node2 did not get theirs';
is($n2->safe_psql('postgres', q{SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'theirs'}), 'regress_mine',
	'a node that had no such table created it for the same owner');
$n3->safe_psql('postgres', q{DROP TABLE theirs});
$n3->safe_psql('postgres', 'SELECT pg_terminate_backend(imsg_manager_pid())');
$n3->poll_query_until('postgres', "SELECT state = 'synced' FROM imsg_manager_status()")
  or die 'node3 did not come back';
ok(ImsgGroup::wait_idle(@nodes), 'mended: the group is idle');
ImsgGroup::same_contents(\@nodes, 'theirs', 'mended: node3 created it and has its rows');

# the helpers run what the statement carries as superuser: it is built
# from the catalogs, for an owner of the table who may call imsg_replicate()
$n1->safe_psql('postgres', q{CREATE ROLE regress_ddl_owner; CREATE TABLE owned (id integer PRIMARY KEY);
ALTER TABLE owned OWNER TO regress_ddl_owner});
($ret, $out, $err) = $n1->psql('postgres', q{SET ROLE regress_ddl_owner; SELECT imsg_capture_replicate('owned', 'replicate')});
like($err, qr/cannot send imsg_replicate\(\) of table "owned" to the group: permission denied for function imsg_replicate/,
	'sending a table needs the right to call imsg_replicate()');
$n1->safe_psql('postgres', q{GRANT EXECUTE ON FUNCTION imsg_replicate(regclass) TO regress_ddl_owner});
($ret, $out, $err) = $n1->psql('postgres', q{SET ROLE regress_ddl_owner; SELECT imsg_capture_replicate('owned', 'replicate')});
like($err, qr/imsg_replicate\(\) has not run on the table here/, 'and imsg_replicate() itself to have made it replicated');
($ret, $out, $err) = $n1->psql('postgres', q{SET ROLE regress_ddl_owner; SELECT imsg_capture_replicate('t', 'replicate')});
like($err, qr/must be owner of table t/, 'and the ownership of the table');
ok(ImsgGroup::wait_idle(@nodes), 'after the refusals: the group is idle');
is($n2->safe_psql('postgres', q{SELECT to_regclass('owned') IS NULL}), 't', 'nothing of it reached another node');

# imsg_unreplicate() travels too
$n2->safe_psql('postgres', q{SELECT imsg_unreplicate('mixed')});
ok(ImsgGroup::wait_idle(@nodes), 'imsg_unreplicate: the group becomes idle');
is(on_every_node(q{SELECT count(*) FROM imsg_replicated_tables WHERE table_name = 'mixed'}), '0,0,0',
	'imsg_unreplicate: mixed is no longer replicated on any node');
$n1->safe_psql('postgres', q{UPDATE mixed SET v = 'local' WHERE id = 1});
ok(ImsgGroup::wait_idle(@nodes), 'after a write to the unreplicated table: the group is idle');
is($n3->safe_psql('postgres', q{SELECT v FROM mixed WHERE id = 1}), 'node1',
	'imsg_unreplicate: a write to it stays on its node');

$_->stop for @nodes;
ImsgGroup::stop_corosync();
done_testing();
