# The public C API, used from a separate extension (imessages_test):
# messages built in place in the area, cancelled reservations, a sender that
# fails while holding a reservation, writer and reader bounds, result codes.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ImsgGroup;

ImsgGroup::require_test_extra('test_module');

my $node = PostgreSQL::Test::Cluster->new('c_api');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'imessages'
imessages.buffer_size = 1MB
imessages.max_message_size = 64kB
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION imessages CASCADE; CREATE EXTENSION imessages_test');
$node->poll_query_until('postgres', 'SELECT imsg_manager_pid() IS NOT NULL');

my $r = $node->background_psql('postgres', on_error_stop => 0);
my $rpid = $r->query_safe(
	'SELECT pg_backend_pid() FROM (SELECT count(*) FROM imsg_receive()) x');

# built in place with the buffer writers, read back with the readers
my $id = $node->safe_psql('postgres',
	"SELECT imsg_test_build_in_place($rpid, 5, 'hello')");
is( $r->query_safe(
		"SELECT msg_id = $id, msgtype, imsg_test_decode(payload) FROM imsg_receive()"),
	't|4711|5 hello -5 7 -1',
	'a message built in place arrives whole');

# the same through the C receive API, with release
$node->safe_psql('postgres',
	"SELECT imsg_test_build_in_place($rpid, i, 'n' || i) FROM generate_series(1, 3) i");
is( $r->query_safe(
		"SELECT string_agg(format('%s>%s %s %s %s', sender <> 0, recipient = pg_backend_pid(),
		                          msgtype, role, decoded), ',' ORDER BY msg_id)
		   FROM imsg_test_receive_all(1000)"),
	't>t 4711 postgres 1 n1 -1 7 -1,t>t 4711 postgres 2 n2 -2 7 -1,t>t 4711 postgres 3 n3 -3 7 -1',
	'ImsgReceive returns every field, ImsgRelease frees them');
is( $r->query_safe(
		'SELECT queued_messages, queued_bytes FROM imsg_mailboxes WHERE pid = pg_backend_pid()'),
	'0|0',
	'released messages left the mailbox');

# a cancelled reservation is skipped, the next message arrives
is($node->safe_psql('postgres', "SELECT imsg_test_reserve_cancel($rpid)"),
	'ok', 'reserve, cancel, then send');
is($r->query_safe('SELECT count(*), min(imsg_test_decode(payload)) FROM imsg_receive()'),
	'1|1  0 0 0', 'only the committed message arrives');

# a sender failing while it holds a reservation in our mailbox must not
# block it: the abort withdraws the reservation
my ($ret, $out, $err) = $node->psql('postgres',
	"SELECT imsg_test_reserve_then_error($rpid)");
like($err, qr/failing while a message is reserved/, 'sender failed mid-build');
$node->safe_psql('postgres', "SELECT imsg_send('after the failure', $rpid)");
is( $r->query_safe(
		"SELECT string_agg(convert_from(payload, 'UTF8'), ',') FROM imsg_receive(2000)"),
	'after the failure',
	'mailbox not blocked by the failed reservation');

# writing past the reservation is an error and nothing is published
($ret, $out, $err) = $node->psql('postgres',
	"SELECT imsg_test_overfill($rpid)",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ERROR:  54000: imessages buffer is full/, 'overfilling a reservation: 54000');
like($err, qr/Writing 1 bytes after 8 of 8 bytes/, 'with the numbers in DETAIL');
$node->safe_psql('postgres', "SELECT imsg_send('next', $rpid)");
is($r->query_safe("SELECT string_agg(convert_from(payload, 'UTF8'), ',') FROM imsg_receive(2000)"),
	'next', 'only the next message arrives');

# reading past the end of a payload
($ret, $out, $err) = $node->psql('postgres',
	"SELECT imsg_test_decode('\\x0000000100000009616263'::bytea)",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ERROR:  22P03: imessages payload is too short/, 'short payload: 22P03');
($ret, $out, $err) = $node->psql('postgres',
	"SELECT imsg_test_decode('\\x00000001000000016100000000000000000007ff00'::bytea)",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ERROR:  22P03: imessages payload has trailing data/, 'trailing bytes: 22P03');

# pipelined sends: every message arrives, in order, once flushed; and a
# receiver already waiting is woken (the first send of a batch wakes it)
is($node->safe_psql('postgres', "SELECT imsg_test_send_pipelined($rpid, 200)"),
	'ok', '200 pipelined sends and a flush');
is( $r->query_safe(
		"SELECT count(*), bool_and(v = ord) FROM (SELECT ('x' || encode(payload, 'hex'))::bit(32)::integer AS v,
		        row_number() OVER () AS ord FROM imsg_receive(2000)) s"),
	'200|t', 'all arrive, in order');
# Pipelined messages travel as compact records (8-byte header, the shared
# fields once per batch); every field is still the message's own.  Sizes
# across the compact limit (16383) mix compact and full messages, in order;
# sizes around 8-byte words and the streaming-store limit (256) check the
# copy, byte by byte.
{
	my $s = $node->background_psql('postgres');
	my ($spid, $srole) = split /\|/, $s->query_safe('SELECT pg_backend_pid(), current_user');
	my $sizes = '0,1,64,1000,16383,16384,7,40000,16383,5,8,9,15,63,65,255,256,257,264';
	my $ids = $s->query_safe("SELECT imsg_test_send_pipelined_sizes($rpid, '{$sizes}')");
	my $got = $r->query_safe(qq{
SELECT string_agg(msg_id::text, ',' ORDER BY ord), string_agg(msgtype::text, ',' ORDER BY ord),
       bool_and(length(payload) = msgtype AND
                payload = (SELECT coalesce(string_agg(set_byte('\\x00'::bytea, 0, (msgtype + i) % 251), '' ORDER BY i), '')
                             FROM generate_series(0, msgtype - 1) i)),
       bool_and(sender_pid = $spid), bool_and(sender_role::text = '$srole'), count(DISTINCT sent_at) <= 5
  FROM (SELECT *, row_number() OVER () AS ord FROM imsg_receive(2000)) m});
	is($got, "$ids|$sizes|t|t|t|t",
		'pipelined messages: ids as reported at send, types, payloads, sender and role, in order');
	my @id = split /,/, $ids;
	ok((grep { $id[$_] <= $id[$_ - 1] } 1 .. $#id) == 0, 'their ids increase in send order');

	# a role change in the middle of a stream starts a new batch
	$node->safe_psql('postgres', 'CREATE ROLE imsg_other_role');
	is($s->query_safe("SELECT imsg_test_send_pipelined_roles($rpid, 'imsg_other_role')"),
		'ok', 'pipelined sends with a role change in between');
	is( $r->query_safe(
			"SELECT string_agg(msgtype || ':' || sender_role::text, ',' ORDER BY msg_id) FROM imsg_receive(2000)"),
		"1:$srole,2:imsg_other_role,3:imsg_other_role,4:$srole",
		'each pipelined message carries the role it was sent as');
	$s->quit;
}

$r->query_until(qr/waiting/, "\\echo waiting\nSELECT count(*) FROM imsg_receive(30000, 1);\n");
is($node->safe_psql('postgres', "SELECT imsg_test_send_pipelined($rpid, 3)"),
	'ok', 'pipelined sends to a waiting receiver');
# the waiting query's result (1) comes first, then this one's (2)
is($r->query_safe("SELECT count(*) FROM imsg_receive(2000)"), "1\n2",
	'the waiting receiver was woken and the rest is there');

# Pipelined sends are published as a batch: nothing is visible until the
# batch is, and then all of it is.  An open batch is published when the
# sender's transaction commits or aborts, when it sends to another
# recipient, and when it waits in imsg_receive.  Each case: the receiver
# sees nothing after the send, then waits (8 s) and must be woken long
# before its timeout by the publication.
my $r2 = $node->background_psql('postgres');
my $r2pid = $r2->query_safe(
	'SELECT pg_backend_pid() FROM (SELECT count(*) FROM imsg_receive()) x');
for my $case ('commit', 'abort', 'switch', 'wait')
{
	my $s = $node->background_psql('postgres', on_error_stop => 0);
	$s->query_safe("BEGIN");
	$s->query_safe("SELECT imsg_test_send_pipelined_noflush($rpid, 2)");
	is($r->query_safe("SELECT count(*) FROM imsg_receive(0)"), '0',
		"$case: an open batch is not visible");
	$r->query_until(qr/waiting_b/, "\\echo waiting_b\nSELECT count(*) FROM imsg_receive(8000, 5);\n");
	sleep 1;
	my $t0 = time;
	if ($case eq 'commit')
	{
		$s->query_safe("COMMIT");
	}
	elsif ($case eq 'abort')
	{
		# an ERROR ends the transaction; the accepted messages still go
		$s->query("SELECT 1/0");
		$s->query("ROLLBACK");		# not query_safe: the error text lingers
	}
	elsif ($case eq 'switch')
	{
		$s->query_safe("SELECT imsg_test_send_pipelined_noflush($r2pid, 1)");
	}
	else
	{
		$s->query_safe("SELECT count(*) FROM imsg_receive(10)");
	}
	is($r->query_safe("SELECT 'b'"), "2\nb", "$case: the batch arrives whole");
	cmp_ok(time - $t0, '<', 6, "$case: the receiver was woken, not timed out");
	$s->query_safe("COMMIT") if $case eq 'switch' || $case eq 'wait';
	$s->quit;
}

# An open batch holds nobody back: another sender's later message arrives
# at once; the batch follows, whole and in order, when it is published.
{
	my $s = $node->background_psql('postgres');
	$s->query_safe("BEGIN");
	$s->query_safe("SELECT imsg_test_send_pipelined_noflush($rpid, 3)");
	$node->safe_psql('postgres', "SELECT imsg_send('later', $rpid)");
	is( $r->query_safe(
			"SELECT string_agg(convert_from(payload, 'UTF8'), ',') FROM imsg_receive(0)"),
		'later', 'another sender is not held up by an open batch');
	$s->query_safe("COMMIT");
	is( $r->query_safe(
			"SELECT string_agg(convert_from(payload, 'UTF8'), ',') FROM imsg_receive(2000)"),
		'p,p,p', 'then the batch arrives');
	$s->quit;
}

# Pipelined sends to oneself are there for the next receive, even one
# that does not wait.
is( $node->safe_psql(
		'postgres', "BEGIN;
		 SELECT imsg_test_send_pipelined_noflush(pg_backend_pid(), 2) \\g /dev/null
		 SELECT count(*) FROM imsg_receive(0);
		 COMMIT;"),
	'2', 'a batch to oneself is seen by imsg_receive(0)');

# A receiver in the middle of a stream that meets a message still being
# written waits on its latch, honouring its timeout: it does not spin
# until the writer is done (3 s here).
{
	$node->safe_psql('postgres', "SELECT imsg_send('s1', $rpid)");
	my $s = $node->background_psql('postgres');
	is($r->query_safe("SELECT count(*) FROM imsg_receive(1000, 1)"), '1', 'in a stream');
	$s->query_until(qr/holding/, "\\echo holding\nSELECT imsg_test_reserve_hold($rpid, 3000);\n");
	my $t0 = time;
	is($r->query_safe("SELECT count(*) FROM imsg_receive(500)"), '0',
		'nothing to take behind a message being written');
	cmp_ok(time - $t0, '<', 2.5, 'the receive timed out instead of spinning');
	is($r->query_safe("SELECT count(*) FROM imsg_receive(5000)"), '1',
		'the message arrives once written');
	$s->quit;
}

# A recipient that exits with a batch addressed to it still open exits at
# once; the batch is dropped when its sender publishes it, and its memory
# goes back to the area.
{
	my $gone = $node->background_psql('postgres');
	my $gonepid = $gone->query_safe(
		'SELECT pg_backend_pid() FROM (SELECT count(*) FROM imsg_receive()) x');
	my $s = $node->background_psql('postgres');
	$s->query_safe("BEGIN");
	$s->query_safe("SELECT imsg_test_send_pipelined_noflush($gonepid, 5)");
	my $t0 = time;
	$gone->quit;
	$node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $gonepid")
	  or die 'recipient did not exit';
	cmp_ok(time - $t0, '<', 5, 'the recipient exits without waiting for the batch');
	$s->query_safe("COMMIT");
	$s->quit;
}
is($r2->query_safe('SELECT count(*) FROM imsg_receive(2000)'), '1',
	'the other recipient has its message');
$r2->quit;

# result codes of the queue layer
is($node->safe_psql('postgres', 'SELECT imsg_test_send_result(2147483647, 10, 0)'),
	'no recipient', 'unknown pid: IMSG_NO_RECIPIENT');
is($node->safe_psql('postgres', "SELECT imsg_test_send_result($rpid, 65 * 1024, 0)"),
	'too large', 'over max_message_size: IMSG_TOO_LARGE');
is($node->safe_psql('postgres', 'SELECT imsg_test_send_result(0, 10, 0)'),
	'ok', 'to the manager (IMSG_MANAGER)');
# (r's mailbox alone fills the area: no quota for it; IMSG_OVER_QUOTA is in
# t/150_mailbox_quota.pl)
$r->query_safe('SET imessages.mailbox_quota = 0');
is( $node->safe_psql(
		'postgres',
		"SET imessages.send_timeout = 0;
		 DO \$\$ BEGIN
		   FOR i IN 1..100 LOOP PERFORM imsg_send(repeat('x', 60000), $rpid); END LOOP;
		 EXCEPTION WHEN insufficient_resources THEN NULL; END \$\$;
		 SELECT imsg_test_send_result($rpid, 60000, 0)"),
	'would block', 'full area, no wait: IMSG_WOULD_BLOCK');
is($node->safe_psql('postgres', "SELECT imsg_test_send_result($rpid, 60000, 100)"),
	'timeout', 'full area, 100 ms: IMSG_TIMEOUT');
$r->query_safe('SELECT count(*) FROM imsg_receive()');
$r->quit;
$node->poll_query_until('postgres',
	'SELECT used_bytes = 0 AND queued_messages = 0 FROM imsg_area')
  or die 'area not empty';
pass('area empty at the end');
# what stays allocated at rest is at most the manager's one small segment:
# no batch segment (32 kB) leaked with a recipient that exited
cmp_ok($node->safe_psql('postgres', 'SELECT allocated_bytes FROM imsg_area'),
	'<=', 16384, 'no segment leaked');
$node->stop;
done_testing();
