# Per-mailbox quotas (imessages.mailbox_quota, imessages.manager_mailbox_quota):
# one process that never reads cannot fill the area for everyone.  A backend
# that never reads is filled to its quota; a send past it fails with 53000
# naming the mailbox, its queued bytes and its quota, at once with
# send_timeout = 0 and after the timeout otherwise; meanwhile sends to the
# manager and to another backend go through at once (send_timeout = 0).  A
# sender waiting for the quota is woken when the recipient reads, when its
# quota is raised, and fails when it exits.  imsg_mailboxes shows the
# quotas, only superusers change them, 0 turns them off, and the manager's
# mailbox has its own.  With the test module: the C API's IMSG_OVER_QUOTA,
# nowait and after a timeout, and pipelined batches kept within the quota.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ImsgGroup;

my $with_module = ImsgGroup::test_extra_enabled('test_module');

my $node = PostgreSQL::Test::Cluster->new('quota');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'imessages'
imessages.buffer_size = 1MB
imessages.max_message_size = 128kB
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION imessages');
$node->safe_psql('postgres', 'CREATE EXTENSION imessages_test') if $with_module;
$node->poll_query_until('postgres', 'SELECT imsg_manager_pid() IS NOT NULL')
  or die 'manager did not start';

sub sql { return $node->safe_psql('postgres', $_[0]); }

# fill(target, len): nowait sends of len bytes to target (NULL: the
# manager) until one fails; how many went, and the failure's SQLSTATE,
# message, detail and hint
sql(q{
CREATE FUNCTION fill(target integer, len integer, OUT sent integer,
                     OUT st text, OUT msg text, OUT det text, OUT hint text)
LANGUAGE plpgsql AS $$
BEGIN
  sent := 0;
  PERFORM set_config('imessages.send_timeout', '0', true);
  LOOP
    PERFORM imsg_send(repeat('f', len), target, sent);
    sent := sent + 1;
  END LOOP;
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                          det = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
END $$;
});

my $size = sql('SELECT size_bytes FROM imsg_area');
my $quota = $size / 4;
my $manager_pid = sql('SELECT imsg_manager_pid()');

# a backend that never reads, and a second one
my $sink = $node->background_psql('postgres');
my $sink_pid = $sink->query_safe(
	'SELECT pg_backend_pid() FROM (SELECT count(*) FROM imsg_receive()) x');
my $other = $node->background_psql('postgres');
my $other_pid = $other->query_safe(
	'SELECT pg_backend_pid() FROM (SELECT count(*) FROM imsg_receive()) x');

is(sql("SELECT quota_bytes FROM imsg_mailboxes WHERE pid = $sink_pid"),
	$quota, "a backend's mailbox has a quarter of the area by default");
is(sql("SELECT quota_bytes FROM imsg_mailboxes WHERE pid = $manager_pid"),
	$size / 2, "the manager's mailbox has half of it");

# Fill the sink to its quota: the send that would take it over fails at
# once (send_timeout 0) with the quota's error, not the full area's.
my ($sent, $st, $msg, $det, $hint) = split /\|/,
  sql("SELECT * FROM fill($sink_pid, 10000)");
my ($queued, $quota_seen) = split /\|/,
  sql("SELECT queued_bytes, quota_bytes FROM imsg_mailboxes WHERE pid = $sink_pid");
is($st, '53000', 'over the quota: 53000 insufficient_resources');
is($msg, "imessages mailbox of process $sink_pid is over its quota",
	'the message names the mailbox');
like(
	$det,
	qr/^The mailbox holds $queued bytes of unread messages and its quota is $quota bytes; the message needs \d+ bytes; waited 0 ms for the process to take messages out\.$/,
	'the detail gives its queued bytes and its quota');
like($hint, qr/imsg_receive\(\).*imessages\.mailbox_quota/,
	'the hint says what to do and names the setting');
my ($needed) = $det =~ /needs (\d+) bytes/;
cmp_ok($queued, '<=', $quota, 'the mailbox holds no more than its quota');
cmp_ok($queued + $needed, '>', $quota, 'and the refused message would not fit');
cmp_ok($sent, '>=', 20, "$sent messages of 10 kB went in first");
is($quota_seen, $quota, 'imsg_mailboxes shows the quota');
cmp_ok(sql('SELECT used_bytes FROM imsg_area'), '<', $size / 2,
	'the area is far from full');

# With a timeout the sender waits, then fails the same way.
my $send_waits = sql('SELECT send_waits FROM imsg_area');
my ($ret, $out, $err) = $node->psql('postgres',
	"SET imessages.send_timeout = '1s'; SELECT imsg_send(repeat('w', 10000), $sink_pid)"
);
isnt($ret, 0, 'a send over the quota with a timeout fails');
like($err, qr/ERROR:  imessages mailbox of process $sink_pid is over its quota/,
	'with the quota error');
like($err, qr/its quota is $quota bytes; .*waited 1000 ms/,
	'after waiting the whole timeout');

# A sender waiting for the sink's quota; meanwhile others send at once.
my $waiter = $node->background_psql('postgres', on_error_stop => 0);
my $waiter_pid = $waiter->query_safe('SELECT pg_backend_pid()');
$waiter->query_until(qr/waiting/,
	"\\echo waiting\nSET imessages.send_timeout = '300s';\n"
	  . "SELECT imsg_send(repeat('w', 10000), $sink_pid, 999);\n");
$node->poll_query_until('postgres',
	"SELECT wait_event_type = 'Extension' FROM pg_stat_activity WHERE pid = $waiter_pid"
) or die 'the sender never waited';
# (a send may wait moments for the manager to take what came before: the
# area is 1 MB; what it must not do is fail on the sink's quota)
is( sql(qq{
SET imessages.send_timeout = '10s';
SELECT count(imsg_send(repeat('m', 10000))) FROM generate_series(1, 30);
SELECT count(imsg_send(repeat('o', 10000), $other_pid)) FROM generate_series(1, 20);
}),
	"30\n20",
	'sends to the manager and to another backend go on at once');
is($other->query_safe('SELECT count(*) FROM imsg_receive()'),
	'20', 'the other backend got them');
cmp_ok(sql('SELECT send_waits FROM imsg_area'),
	'>', $send_waits, 'imsg_area.send_waits counts waits for a quota');

# The sink reads: the waiter's message goes in, after the others.
is($sink->query_safe('SELECT count(*) FROM imsg_receive() WHERE msgtype < 999'),
	$sent, 'the sink takes out what filled it');
is($sink->query_safe('SELECT msgtype FROM imsg_receive(60000)'),
	'999', 'the waiting sender is woken and its message arrives');
$waiter->{stderr} = '';
$waiter->query("SELECT 'after'");
is($waiter->{stderr}, '', 'the waiting send succeeded');

# Raising the quota wakes a waiting sender too: fill again, wait, then the
# sink (a superuser session) sets its quota to 0.
($sent) = split /\|/, sql("SELECT * FROM fill($sink_pid, 10000)");
$waiter->query_until(qr/waiting/,
	"\\echo waiting\nSELECT imsg_send(repeat('w', 10000), $sink_pid, 999);\n");
$node->poll_query_until('postgres',
	"SELECT wait_event_type = 'Extension' FROM pg_stat_activity WHERE pid = $waiter_pid"
) or die 'the sender never waited';
$sink->query_safe('SET imessages.mailbox_quota = 0');
is(sql("SELECT quota_bytes IS NULL FROM imsg_mailboxes WHERE pid = $sink_pid"),
	't', 'imsg_mailboxes shows no quota (NULL) once it is 0');
$node->poll_query_until('postgres',
	"SELECT queued_messages = $sent + 1 FROM imsg_mailboxes WHERE pid = $sink_pid")
  or die 'the waiting sender was not woken by the new quota';
$waiter->query("SELECT 'after'");
is($waiter->{stderr}, '', 'a raised quota wakes the waiting sender');

# 0: no quota, the sink takes more than a quarter of the area
is( sql("SELECT count(imsg_send(repeat('n', 10000), $sink_pid)) FROM generate_series(1, 20)"),
	'20', 'with quota 0 the sink takes more');
cmp_ok(sql("SELECT queued_bytes FROM imsg_mailboxes WHERE pid = $sink_pid"),
	'>', $quota, 'more than its former quota');
is($sink->query_safe('SELECT count(*) FROM imsg_receive()'),
	$sent + 21, 'and every message is there');
$sink->query_safe("SET imessages.mailbox_quota = '64kB'");
is(sql("SELECT quota_bytes FROM imsg_mailboxes WHERE pid = $sink_pid"),
	'65536', 'a superuser session sets its own quota');

# only superusers set it
sql('CREATE ROLE regress_quota LOGIN');
($ret, $out, $err) = $node->psql('postgres', 'SET imessages.mailbox_quota = 0',
	extra_params => [ '-U', 'regress_quota' ]);
like($err, qr/permission denied to set parameter "imessages.mailbox_quota"/,
	'SET imessages.mailbox_quota is refused to a non-superuser');
($ret, $out, $err) = $node->psql('postgres', 'SET imessages.manager_mailbox_quota = 0',
	extra_params => [ '-U', 'regress_quota' ]);
like($err, qr/cannot be changed now/,
	'imessages.manager_mailbox_quota is not set in a session');

# A sender waiting for a recipient that exits fails as a send to it does.
sql("SELECT * FROM fill($sink_pid, 10000)");
$waiter->{stderr} = '';
$waiter->query_until(qr/waiting/,
	"\\echo waiting\nSELECT imsg_send(repeat('w', 10000), $sink_pid, 999);\n");
$node->poll_query_until('postgres',
	"SELECT wait_event_type = 'Extension' FROM pg_stat_activity WHERE pid = $waiter_pid"
) or die 'the sender never waited';
$sink->quit;
$waiter->query("SELECT 'after'");
like($waiter->{stderr}, qr/process $sink_pid has no imessages mailbox/,
	'a sender waiting for the quota fails when its recipient exits');

# The manager's own quota: a reload sets it; with the manager stopped
# (SIGSTOP), sends to it fail at its quota, naming it, while sends to a
# backend still go.
$node->append_conf('postgresql.conf', "imessages.manager_mailbox_quota = '64kB'\n");
$node->reload;
$node->poll_query_until('postgres',
	"SELECT quota_bytes = 65536 FROM imsg_mailboxes WHERE pid = $manager_pid")
  or die 'the manager did not take its new quota';
pass('the manager takes imessages.manager_mailbox_quota at a reload');
kill 'STOP', $manager_pid;
($sent, $st, $msg, $det, $hint) = split /\|/, sql("SELECT * FROM fill(NULL, 1000)");
$out = sql("SELECT count(imsg_send(repeat('o', 10000), $other_pid)) FROM generate_series(1, 5)");
kill 'CONT', $manager_pid;
is($msg, "imessages mailbox of process $manager_pid is over its quota",
	"a send over the manager's quota names the manager");
like($det, qr/its quota is 65536 bytes/, "with the manager's quota");
like($hint, qr/imessages\.manager_mailbox_quota/, "the hint names the manager's setting");
is($out, '5', 'sends to a backend go on meanwhile');
is($other->query_safe('SELECT count(*) FROM imsg_receive()'), '5', 'and arrive');
$node->poll_query_until('postgres',
	"SELECT queued_messages = 0 FROM imsg_mailboxes WHERE pid = $manager_pid")
  or die 'the manager did not drain its mailbox';
pass('the manager drains its mailbox once it runs again');

SKIP:
{
	skip ImsgGroup::test_extra_reason('test_module'), 6 unless $with_module;

	# the C API: IMSG_OVER_QUOTA, nowait and after a timeout; others: ok
	my $cr = $node->background_psql('postgres');
	my $cr_pid = $cr->query_safe(
		"SET imessages.mailbox_quota = '64kB'; "
		  . 'SELECT pg_backend_pid() FROM (SELECT count(*) FROM imsg_receive()) x');
	sql("SELECT * FROM fill($cr_pid, 1000)");
	is( sql(qq{SELECT imsg_test_send_result($cr_pid, 1000, 0),
	                  imsg_test_send_result($cr_pid, 1000, 200),
	                  imsg_test_send_result($other_pid, 1000, 0)}),
		'over quota|over quota|ok',
		'ImsgSend returns IMSG_OVER_QUOTA nowait and after a timeout');
	is($cr->query_safe('SELECT count(*) > 0 FROM imsg_receive()'), 't', 'drained');

	# a pipelined stream stops at the quota: batches fit in what it leaves
	my ($n, $result) = split / /,
	  sql("SELECT imsg_test_send_pipelined_timeout($cr_pid, 100000, 100, 0)"), 2;
	is($result, 'over quota', 'a pipelined stream ends in IMSG_OVER_QUOTA');
	my ($q, $qq) = split /\|/,
	  sql("SELECT queued_bytes, quota_bytes FROM imsg_mailboxes WHERE pid = $cr_pid");
	cmp_ok($q, '<=', $qq, "its $n messages stay within the quota");
	is($cr->query_safe('SELECT count(*) FROM imsg_receive()'), $n,
		'every accepted pipelined message arrives');
	is(sql("SELECT imsg_test_send_pipelined_timeout($cr_pid, 100, 100, 0)"),
		'100 ok', 'and the stream goes on once the recipient has read');
	$cr->query_safe('SELECT count(*) FROM imsg_receive()');
	$cr->quit;
}

$other->quit;
$waiter->quit;
$node->poll_query_until('postgres',
	'SELECT used_bytes = 0 AND queued_messages = 0 FROM imsg_area')
  or die 'area not empty at the end';
pass('nothing left in the area');

$node->stop;
done_testing();
