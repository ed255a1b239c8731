# Conservation under load: many concurrent senders (SQL backends, and a
# C-API sender through the test module) and receivers (backends, and the
# manager), random payload sizes from 1 byte to imessages.max_message_size,
# through a 1 MB area that is full again and again, so that senders wait
# and some time out.
#
# A writer to a replicated table commits transactions whose change sets
# (about 300 kB, 3 chunks each) stream to the manager meanwhile; each is
# delivered exactly once, none discarded.
#
# Every payload carries its sender, its per-sender sequence number (also in
# msgtype, for payloads too short to hold them) and, from 48 bytes on, an
# md5 of the rest.  Senders log each accepted message (and each refused
# one, SQLSTATE 53000), receivers log each message they take out, in the
# same transaction; afterwards the test checks that every accepted message
# arrived exactly once, at the right recipient, intact and in per-sender
# order, that nothing refused or never sent arrived, that the manager
# delivered exactly the messages accepted for it, that the area's counters
# agree, and that the area is empty and back to its baseline at rest.
#
# Short by default (CI, ~10-15 s).  IMSG_STRESS_LONG=1 runs a longer
# version (6 SQL senders x 5,000 messages, 200,000 C messages, 300
# change sets; about 2.5 minutes here).
#
# The C-API sender needs the test module (IMSG_TEST_EXTRA's test_module);
# without it the SQL senders run alone.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ImsgGroup;

my $test_module = ImsgGroup::test_extra_enabled('test_module');
my $long = $ENV{IMSG_STRESS_LONG} ? 1 : 0;
my $nsenders = $long ? 6 : 4;		# SQL senders
my $nmsgs = $long ? 5000 : 400;		# per SQL sender
my $nreceivers = 3;					# backends; receiver 3 is slow
my $c_msgs = $long ? 200000 : 5000;	# C-API pipelined sender, to receiver 1
$c_msgs = 0 unless $test_module;
my $cs_xacts = $long ? 300 : 20;	# transactions of the replicated-table writer
my $max_size = 256 * 1024;
my $seed = time % 100000;
note "long=$long senders=$nsenders x $nmsgs, C sender $c_msgs, seed $seed";

my $node = PostgreSQL::Test::Cluster->new('stress');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'imessages'
imessages.buffer_size = 1MB
imessages.max_message_size = 256kB
imessages.min_helpers = 0
max_connections = 30
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION imessages');
$node->safe_psql('postgres', 'CREATE EXTENSION imessages_test') if $test_module;
$node->poll_query_until('postgres', 'SELECT imsg_manager_pid() IS NOT NULL')
  or die 'manager did not start';

# Baseline at rest: the manager's mailbox once it has had a message.
$node->safe_psql('postgres', "SELECT imsg_send('warm-up')");
$node->poll_query_until('postgres',
	'SELECT used_bytes = 0 AND queued_messages = 0 FROM imsg_area')
  or die 'warm-up message not taken out';
my $baseline = $node->safe_psql('postgres', 'SELECT allocated_bytes FROM imsg_area');
my ($sent0, $received0, $waits0, $failures0) = split /\|/,
  $node->safe_psql('postgres',
	'SELECT sent_total, received_total, send_waits, send_failures FROM imsg_area');
my ($delivered0, $mreceived0, $cs_delivered0, $cs_discarded0) = split /\|/,
  $node->safe_psql('postgres',
	'SELECT messages_delivered, messages_received, change_sets_delivered, change_sets_discarded
	   FROM imsg_manager_status()');

$node->safe_psql('postgres', q{
CREATE TABLE sent_log (sender int, seq int, recipient int, len int, sum text,
                       PRIMARY KEY (sender, seq));
CREATE TABLE send_fail (sender int, seq int, recipient int, len int);
CREATE TABLE recv_log (receiver int, ord int, msg_id bigint, sender_pid int,
                       msgtype int, len int, sum text, header_ok bool, cvalue int);
CREATE TABLE receivers (no int PRIMARY KEY, pid int);
CREATE TABLE senders_done (sender int PRIMARY KEY, pid int);
CREATE TABLE c_result (pid int, result text);
CREATE TABLE replicated (xact int, id int, pad text, PRIMARY KEY (xact, id));
SELECT imsg_replicate('replicated');

-- payload of message 'seq' of sender 's', 'len' bytes: below 48 bytes a
-- prefix of pseudo-random bytes; from 48 on "ssss:qqqqqqqq:<md5 of rest>:"
-- then the rest
CREATE FUNCTION stress_payload(s int, seq int, len int) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  body bytea;
BEGIN
  SELECT string_agg(decode(md5(s || ':' || seq || ':' || i), 'hex'), ''::bytea ORDER BY i)
    INTO body FROM generate_series(0, len / 16) i;
  IF len < 48 THEN
    RETURN substring(body FROM 1 FOR len);
  END IF;
  body := substring(body FROM 1 FOR len - 47);
  RETURN convert_to(format('%s:%s:%s:', lpad(s::text, 4, '0'), lpad(seq::text, 8, '0'),
                           md5(body)), 'SQL_ASCII') || body;
END $$;

-- does the payload carry the sender, seq and checksum that msgtype says?
CREATE FUNCTION stress_header_ok(msgtype int, p bytea) RETURNS bool
LANGUAGE sql IMMUTABLE AS $$
  SELECT length(p) < 48 OR
    encode(substring(p FROM 1 FOR 47), 'escape') =
      format('%s:%s:%s:', lpad((msgtype / 1000000)::text, 4, '0'),
             lpad((msgtype % 1000000)::text, 8, '0'), md5(substring(p FROM 48)))
$$;

CREATE PROCEDURE stress_sender(me int, n int, maxlen int, seed float8)
LANGUAGE plpgsql AS $$
DECLARE
  recipients int[];
  r int;
  len int;
  p bytea;
BEGIN
  PERFORM setseed(seed);
  -- 0 is the manager
  SELECT array_agg(pid ORDER BY no) || 0 INTO recipients FROM receivers;
  FOR seq IN 1..n LOOP
    len := CASE WHEN seq % 40 = 0 THEN maxlen
                WHEN seq % 40 = 1 THEN 1
                ELSE 1 + floor((maxlen - 1) * random() ^ 3)::int END;
    r := recipients[1 + floor(random() * array_length(recipients, 1))::int];
    p := stress_payload(me, seq, len);
    BEGIN
      PERFORM imsg_send(p, nullif(r, 0), me * 1000000 + seq);
      INSERT INTO sent_log VALUES (me, seq, r, len, md5(p));
    EXCEPTION WHEN insufficient_resources THEN
      INSERT INTO send_fail VALUES (me, seq, r, len);
    END;
    IF seq % 20 = 0 THEN COMMIT; END IF;
  END LOOP;
  INSERT INTO senders_done VALUES (me, pg_backend_pid());
  COMMIT;
END $$;

CREATE PROCEDURE stress_receiver(me int, nsenders int, slow bool)
LANGUAGE plpgsql AS $$
DECLARE
  ord int := 0;
  batch int;
  finishing bool;
  r record;
BEGIN
  PERFORM count(*) FROM imsg_receive();
  INSERT INTO receivers VALUES (me, pg_backend_pid());
  COMMIT;
  LOOP
    -- once every sender is done, what they sent is all in the mailbox
    SELECT count(*) = nsenders INTO finishing FROM senders_done;
    batch := 0;
    FOR r IN SELECT * FROM imsg_receive(CASE WHEN finishing THEN 0 ELSE 200 END,
                                        CASE WHEN slow THEN 3 ELSE 50 END) LOOP
      batch := batch + 1;
      ord := ord + 1;
      INSERT INTO recv_log VALUES (me, ord, r.msg_id, r.sender_pid, r.msgtype,
        length(r.payload), md5(r.payload),
        r.msgtype = 7 OR stress_header_ok(r.msgtype, r.payload),
        CASE WHEN r.msgtype = 7 AND length(r.payload) = 4
             THEN ('x' || encode(r.payload, 'hex'))::bit(32)::int END);
    END LOOP;
    COMMIT;
    EXIT WHEN finishing AND batch = 0;
    IF slow AND batch > 0 THEN PERFORM pg_sleep(0.05); END IF;
  END LOOP;
END $$;
});

my @sessions;
for my $i (1 .. $nreceivers)
{
	my $slow = $i == $nreceivers ? 'true' : 'false';
	my $s = $node->background_psql('postgres');
	# senders_done counts the C sender too
	$s->query_until(qr/started/,
		"\\echo started\nCALL stress_receiver($i, " . ($nsenders + 2) . ", $slow);\n");
	push @sessions, $s;
}
$node->poll_query_until('postgres', "SELECT count(*) = $nreceivers FROM receivers")
  or die 'receivers did not start';

my $t0 = time;
for my $i (1 .. $nsenders)
{
	my $s = $node->background_psql('postgres');
	my $sseed = (($seed + $i * 7919) % 100000) / 100000.0;
	$s->query_until(qr/started/,
		"\\echo started\nSET imessages.send_timeout = '100ms';\n"
		  . "CALL stress_sender($i, $nmsgs, $max_size, $sseed);\n");
	push @sessions, $s;
}
{
	# (without the test module it only says it is done)
	my $s = $node->background_psql('postgres');
	my $c_send = $test_module ? qq{
INSERT INTO c_result SELECT pg_backend_pid(), imsg_test_send_pipelined(pid, $c_msgs)
  FROM receivers WHERE no = 1;} : '';
	$s->query_until(qr/started/, qq{\\echo started
SET imessages.send_timeout = '30s';$c_send
INSERT INTO senders_done SELECT 100, pg_backend_pid();
});
	push @sessions, $s;
}
{
	my $s = $node->background_psql('postgres', on_error_stop => 0);
	my $script = "\\echo started\nSET imessages.send_timeout = '60s';\n";
	$script .= "INSERT INTO replicated SELECT $_, i, repeat(md5(i::text), 8) FROM generate_series(1, 1000) i;\n"
	  for 1 .. $cs_xacts;
	$script .= "INSERT INTO senders_done SELECT 200, pg_backend_pid();\n";
	$s->query_until(qr/started/, $script);
	push @sessions, $s;
}

# Every receiver ends once all senders are done and its mailbox is empty.
$node->poll_query_until('postgres', 'SELECT count(*) = ' . ($nsenders + 2) . ' FROM senders_done')
  or die 'senders did not finish';
$node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM pg_stat_activity WHERE query LIKE 'CALL stress_receiver%' AND state = 'active'")
  or die 'receivers did not finish';
note 'workload ran ' . (time - $t0) . ' s';

my $q = sub { $node->safe_psql('postgres', shift) };

my ($accepted, $refused, $to_manager) = split /\|/, $q->(
	'SELECT (SELECT count(*) FROM sent_log), (SELECT count(*) FROM send_fail),
	        (SELECT count(*) FROM sent_log WHERE recipient = 0)');
note "accepted $accepted, refused (53000) $refused, to the manager $to_manager";
is($accepted + $refused, $nsenders * $nmsgs, 'every SQL send was either accepted or refused with 53000');
cmp_ok($accepted, '>', 0, 'sends were accepted');
SKIP:
{
	skip ImsgGroup::test_extra_reason('test_module'), 1 unless $test_module;
	is($q->('SELECT result FROM c_result'), 'ok', "the C sender's $c_msgs pipelined sends were all accepted");
}
cmp_ok($q->("SELECT count(*) FROM sent_log WHERE len = 1"), '>', 0,
	'1-byte payloads were accepted');
cmp_ok($q->("SELECT count(*) FROM sent_log WHERE len = $max_size"), '>', 0,
	'payloads of imessages.max_message_size were accepted');

# SQL senders' messages to backends: each accepted one exactly once, at
# its recipient, intact; nothing else.
is( $q->(q{
SELECT count(*) FROM
  (SELECT * FROM sent_log WHERE recipient <> 0) s
  FULL JOIN (SELECT l.*, msgtype / 1000000 AS sender, msgtype % 1000000 AS seq, rc.pid AS rpid
               FROM recv_log l JOIN receivers rc ON rc.no = l.receiver
              WHERE msgtype <> 7) r
  ON r.sender = s.sender AND r.seq = s.seq
WHERE s.sender IS NULL OR r.sender IS NULL OR r.rpid <> s.recipient
   OR r.len <> s.len OR r.sum <> s.sum}),
	'0', 'every accepted message arrived at its recipient, with its length and checksum, and nothing else arrived');
is( $q->(q{
SELECT count(*) FROM (SELECT msgtype FROM recv_log GROUP BY msgtype, sender_pid, cvalue
                      HAVING count(*) > 1) d}),
	'0', 'no message arrived twice');
is( $q->(q{
SELECT count(*) FROM send_fail f JOIN recv_log r ON r.msgtype = f.sender * 1000000 + f.seq}),
	'0', 'no refused message arrived');
is($q->('SELECT count(*) FROM recv_log WHERE NOT header_ok'), '0',
	'every payload carries its own sender, sequence number and a matching checksum');
is( $q->(q{
SELECT count(*) FROM recv_log r JOIN senders_done d ON d.sender = r.msgtype / 1000000
 WHERE r.msgtype <> 7 AND r.sender_pid <> d.pid}),
	'0', 'sender_pid is the sending backend');

# Per-sender FIFO at each receiver: sequence numbers and message ids grow
is( $q->(q{
SELECT count(*) FROM (
  SELECT msgtype % 1000000 AS seq, msg_id,
         lag(msgtype % 1000000) OVER w AS prev_seq, lag(msg_id) OVER w AS prev_id
    FROM recv_log WHERE msgtype <> 7
  WINDOW w AS (PARTITION BY receiver, msgtype / 1000000 ORDER BY ord)) x
WHERE seq <= prev_seq OR msg_id <= prev_id}),
	'0', 'per-sender FIFO held at every receiver');
SKIP:
{
	skip ImsgGroup::test_extra_reason('test_module'), 1 unless $test_module;
	is( $q->(q{
SELECT count(*), count(*) FILTER (WHERE cvalue = rn), min(cvalue), max(cvalue)
  FROM (SELECT cvalue, row_number() OVER (ORDER BY ord) AS rn
          FROM recv_log WHERE msgtype = 7 AND receiver = 1) x}),
		"$c_msgs|$c_msgs|1|$c_msgs",
		'the C sender\'s messages arrived complete, exactly once and in order');
}

# The manager: every user message accepted for it is delivered by the GCS
$node->poll_query_until('postgres',
	"SELECT messages_delivered - $delivered0 >= $to_manager FROM imsg_manager_status()")
  or diag 'manager delivered too few';
is($q->("SELECT messages_delivered - $delivered0 FROM imsg_manager_status()"),
	$to_manager, 'the manager delivered exactly the messages accepted for it');

# Change sets: every committed transaction's delivered once, none discarded
is($q->('SELECT count(DISTINCT xact) FROM replicated'), $cs_xacts,
	"the writer's $cs_xacts transactions committed");
$node->poll_query_until('postgres',
	"SELECT change_sets_delivered - $cs_delivered0 >= $cs_xacts FROM imsg_manager_status()")
  or diag 'change sets delivered too few';
is( $q->("SELECT change_sets_delivered - $cs_delivered0, change_sets_discarded - $cs_discarded0
            FROM imsg_manager_status()"),
	"$cs_xacts|0", 'each committed change set was delivered once, none discarded');
ok(!$node->log_contains(qr/dropped chunk|is damaged/), 'no change-set chunk dropped or damaged');

# The area's own accounting agrees: the manager took out the messages
# accepted for it and the change-set chunks
my $mreceived = $q->("SELECT messages_received - $mreceived0 FROM imsg_manager_status()");
my $chunks = $mreceived - $to_manager;
cmp_ok($chunks, '>=', 3 * $cs_xacts, 'change sets went in chunks');
is( $q->("SELECT sent_total - $sent0, received_total - $received0, send_failures - $failures0 FROM imsg_area"),
	($accepted + $c_msgs + $chunks) . '|' . ($q->('SELECT count(*) FROM recv_log') + $mreceived) . "|$refused",
	'sent_total, received_total and send_failures count exactly these messages');
cmp_ok($q->('SELECT send_waits FROM imsg_area'), '>', $waits0,
	'the area was full and senders waited');
cmp_ok($q->('SELECT peak_bytes FROM imsg_area'), '<=', 1024 * 1024,
	'the area never held more than its size');

# At rest: empty, and back to the baseline once the sessions are gone
is($q->('SELECT used_bytes, queued_messages FROM imsg_area'), '0|0',
	'used_bytes and queued_messages are 0 at rest');
$_->quit for @sessions;
$node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM imsg_mailboxes WHERE backend_type <> 'imessages manager'")
  or die 'mailboxes of exited sessions still listed';
# the manager keeps a minimum-size segment after a message, as at the baseline
$node->safe_psql('postgres', "SELECT imsg_send('rest')");
$node->poll_query_until('postgres', 'SELECT used_bytes = 0 FROM imsg_area')
  or die 'manager did not take its message out';
$node->poll_query_until('postgres', "SELECT allocated_bytes = $baseline FROM imsg_area")
  or diag 'allocated_bytes: ' . $q->('SELECT allocated_bytes FROM imsg_area') . " baseline $baseline";
is($q->('SELECT allocated_bytes, used_bytes FROM imsg_area'), "$baseline|0",
	'allocated_bytes back to its baseline once the sessions exited');
ok(!$node->log_contains(qr/TRAP|PANIC|server process .* was terminated/),
	'no assertion failure or crash in the server log');

$node->stop;
done_testing();
