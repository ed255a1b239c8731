# Mailboxes across process lifetimes: memory returns when a process exits,
# sends to an exited process (or to a reused slot) fail, and the module
# refuses to work when it was not preloaded.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('lifecycle');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'imessages'
imessages.buffer_size = 1MB
imessages.max_message_size = 128kB
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION imessages');
$node->poll_query_until('postgres', 'SELECT imsg_manager_pid() IS NOT NULL')
  or die 'manager did not start';

is( $node->safe_psql(
		'postgres',
		"SELECT backend_type FROM pg_stat_activity WHERE pid = imsg_manager_pid()"),
	'imessages manager',
	'manager shows in pg_stat_activity');

my $baseline = $node->safe_psql('postgres',
	'SELECT allocated_bytes FROM imsg_area');

my ($sent0, $received0) = split /\|/,
  $node->safe_psql('postgres', 'SELECT sent_total, received_total FROM imsg_area');

# A process that exits with messages queued returns all their memory.
my $keeper = $node->background_psql('postgres');
my $keeper_pid = $keeper->query_safe(
	'SELECT pg_backend_pid() FROM imsg_receive() RIGHT JOIN (SELECT 1) x ON true');

my $leaver = $node->background_psql('postgres');
my $leaver_pid = $leaver->query_safe('SELECT pg_backend_pid()');
$leaver->query_safe(
	"SELECT count(imsg_send(repeat('q', 100 * i), pg_backend_pid())) FROM generate_series(1, 60) i");
$leaver->query_safe(
	"SELECT count(imsg_send('for keeper', $keeper_pid)) FROM generate_series(1, 10)");
is( $node->safe_psql('postgres',
		"SELECT queued_messages FROM imsg_mailboxes WHERE pid = $leaver_pid"),
	'60',
	'messages queued in the leaving process');
cmp_ok(
	$node->safe_psql('postgres', 'SELECT used_bytes FROM imsg_area'),
	'>', 183000, 'area holds them');
$leaver->quit;
$node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM imsg_mailboxes WHERE pid = $leaver_pid")
  or die 'mailbox of exited process still listed';
is( $node->safe_psql('postgres',
		'SELECT used_bytes = (SELECT queued_bytes FROM imsg_mailboxes WHERE pid = '
		  . $keeper_pid . ') FROM imsg_area'),
	't',
	'only the messages still waiting for the live process use the area');

# a send to the process that exited fails
my ($ret, $stdout, $stderr) = $node->psql('postgres',
	"SELECT imsg_send('hello?', $leaver_pid)");
isnt($ret, 0, 'send to an exited process fails');
like($stderr, qr/process $leaver_pid has no imessages mailbox/,
	'with a clear message');

# the live process still gets its messages, exactly once
is($keeper->query_safe('SELECT count(*) FROM imsg_receive()'),
	'10', 'messages to a live process survive another process exiting');
$keeper->quit;
$node->poll_query_until('postgres',
	'SELECT used_bytes = 0 AND queued_messages = 0 FROM imsg_area')
  or die 'area not empty';
is($node->safe_psql('postgres', 'SELECT allocated_bytes FROM imsg_area'),
	$baseline, 'all segments returned to the allocator');
is( $node->safe_psql(
		'postgres',
		"SELECT sent_total - $sent0, received_total - $received0 FROM imsg_area"),
	'70|10',
	'area totals count the messages of exited processes exactly once');

# A sender waiting for room to a recipient that exits meanwhile fails, and
# the segment it got once room was freed goes back to the allocator.  (The
# recipient has no quota, so that its mailbox alone fills the area; the
# same for a quota: t/150_mailbox_quota.pl.)
{
	my $full = $node->background_psql('postgres');
	my $full_pid = $full->query_safe(
		'SET imessages.mailbox_quota = 0; '
		  . 'SELECT pg_backend_pid() FROM (SELECT count(*) FROM imsg_receive()) x');
	$node->safe_psql('postgres', qq{
SET imessages.send_timeout = 0;
DO \$\$ BEGIN
  LOOP PERFORM imsg_send(repeat('f', 100 * 1024), $full_pid); END LOOP;
EXCEPTION WHEN insufficient_resources THEN NULL; END \$\$;
});
	my $waits = $node->safe_psql('postgres', 'SELECT send_waits FROM imsg_area');
	my $waiter = $node->background_psql('postgres', on_error_stop => 0);
	$waiter->query_until(qr/waiting/,
		"\\echo waiting\nSET imessages.send_timeout = '60s';\n"
		  . "SELECT imsg_send(repeat('w', 100 * 1024), $full_pid);\n");
	$node->poll_query_until('postgres',
		"SELECT send_waits > $waits FROM imsg_area")
	  or die 'sender never waited';
	$full->quit;
	$waiter->{stderr} = '';
	$waiter->query("SELECT 'after'");
	like($waiter->{stderr}, qr/process $full_pid has no imessages mailbox/,
		'a sender waiting for room fails when its recipient exits');
	$waiter->quit;
	$node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM imsg_mailboxes WHERE pid = $full_pid");
	is( $node->safe_psql('postgres',
			'SELECT allocated_bytes, used_bytes FROM imsg_area'),
		"$baseline|0",
		'no segment leaked by the sender that lost its recipient');
}

# A sender that cached a recipient must not reach a later owner of the
# same slot: the mailbox generation changes.
my $sender = $node->background_psql('postgres', on_error_stop => 0);
my $victim = $node->background_psql('postgres');
my $victim_pid = $victim->query_safe(
	'SELECT pg_backend_pid() FROM (SELECT count(*) FROM imsg_receive()) x');
$sender->query_safe("SELECT imsg_send('first', $victim_pid)");
$victim->quit;
$node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM imsg_mailboxes WHERE pid = $victim_pid");
my @newcomers;
for my $i (1 .. 3)
{
	my $n = $node->background_psql('postgres');
	$n->query_safe('SELECT count(*) FROM imsg_receive()');
	push @newcomers, $n;
}
$sender->{stderr} = '';
$sender->query("SELECT imsg_send('second', $victim_pid)");
like($sender->{stderr}, qr/has no imessages mailbox/,
	'cached recipient that exited is refused');
for my $n (@newcomers)
{
	is($n->query_safe('SELECT count(*) FROM imsg_receive()'),
		'0', 'newcomer received nothing meant for its predecessor');
	$n->quit;
}
$sender->quit;

# 100,000 messages between two backends: complete, exactly once, in order.
# The receiver has no quota: the sender is to fill the area and wait for it.
$node->safe_psql('postgres', q{
CREATE TABLE recv_result (got integer, out_of_order integer, ids_not_increasing integer, last integer);
CREATE TABLE receiver (pid integer);
CREATE PROCEDURE receive_all(expected integer) LANGUAGE plpgsql AS $$
DECLARE
  got integer := 0;
  last integer := 0;
  bad integer := 0;
  badid integer := 0;
  prev_id bigint := 0;
  batch integer;
  r record;
BEGIN
  INSERT INTO receiver VALUES (pg_backend_pid());
  PERFORM count(*) FROM imsg_receive();
  COMMIT;
  WHILE got < expected LOOP
    batch := 0;
    FOR r IN SELECT * FROM imsg_receive(20000, 5000) LOOP
      batch := batch + 1;
      IF convert_from(r.payload, 'UTF8')::integer <> last + 1 THEN
        bad := bad + 1;
      END IF;
      last := convert_from(r.payload, 'UTF8')::integer;
      IF r.msg_id <= prev_id THEN
        badid := badid + 1;
      END IF;
      prev_id := r.msg_id;
    END LOOP;
    EXIT WHEN batch = 0;
    got := got + batch;
    COMMIT;
  END LOOP;
  INSERT INTO recv_result VALUES (got, bad, badid, last);
END $$;
});
my $receiver = $node->background_psql('postgres');
$receiver->query_until(qr/started/,
	"\\echo started\nSET imessages.mailbox_quota = 0;\nCALL receive_all(100000);\n");
$node->poll_query_until('postgres', 'SELECT count(*) = 1 FROM receiver')
  or die 'receiver did not start';
my $receiver_pid = $node->safe_psql('postgres', 'SELECT pid FROM receiver');
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM imsg_mailboxes WHERE pid = $receiver_pid");
my $waits_before = $node->safe_psql('postgres', 'SELECT send_waits FROM imsg_area');
is( $node->safe_psql(
		'postgres',
		"SET imessages.send_timeout = '60s';
		 SELECT count(imsg_send(i::text, $receiver_pid)) FROM generate_series(1, 100000) i"),
	'100000',
	'all 100,000 sends accepted');
$node->poll_query_until('postgres', 'SELECT count(*) = 1 FROM recv_result')
  or die 'receiver did not finish';
is($node->safe_psql('postgres', 'SELECT got, out_of_order, ids_not_increasing, last FROM recv_result'),
	'100000|0|0|100000',
	'100,000 messages arrived complete, exactly once, in order');
cmp_ok($node->safe_psql('postgres', 'SELECT send_waits FROM imsg_area'),
	'>', $waits_before, 'the 1MB area filled up and the sender waited');
$receiver->quit;
$node->poll_query_until('postgres',
	'SELECT used_bytes = 0 AND queued_messages = 0 FROM imsg_area')
  or die 'area not empty after the transfer';
pass('area empty after the transfer');
$node->stop;

# Without shared_preload_libraries: CREATE EXTENSION works, every function
# fails with 55000 and a hint.
my $plain = PostgreSQL::Test::Cluster->new('not_preloaded');
$plain->init;
$plain->start;
$plain->safe_psql('postgres', 'CREATE EXTENSION imessages');
for my $sql (
	"SELECT imsg_send('x')",
	"SELECT imsg_send('x'::bytea, 1, 0)",
	'SELECT * FROM imsg_receive()',
	'SELECT imsg_manager_pid()',
	'SELECT * FROM imsg_area',
	'SELECT * FROM imsg_mailboxes')
{
	my ($r, $o, $e) = $plain->psql('postgres', $sql,
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	like($e, qr/ERROR:  55000: imessages must be loaded via shared_preload_libraries/,
		"$sql: 55000");
	like($e, qr/HINT:  Add imessages to shared_preload_libraries/, "$sql: hint");
}
$plain->stop;

done_testing();
