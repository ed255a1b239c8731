# Faults: processes that die or are interrupted in the middle of imessages
# work, and what the others see.  After each, the messages accepted for a
# surviving recipient are all there, and the area returns to its baseline
# (no leaked memory).
#
#  1. a backend ended by FATAL (pg_terminate_backend) and one whose client
#     vanished, each with messages queued to it, sent by it and received
#     but not released;
#  2. a backend SIGKILLed in the middle of a send loop: the postmaster
#     reinitializes, the area comes back empty, the manager runs again;
#  3. the manager stopped (SIGTERM, then an ERROR) while backends wait on
#     it: imsg_ping, a sync commit and a sender waiting for room in its
#     mailbox all get a clear error at once, never hang; a new manager works;
#  4. a helper crashing with a job in its mailbox: the manager logs and
#     counts the crash, restarts it after a back-off and has the new helper
#     redo the job, so its requester gets its answer; a ping made meanwhile
#     is answered by the new helper too;
#  5. the area full with a receiver that never reads: a sender times out
#     with 53000; the manager's replies to a ping and a sync commit wait
#     for room instead of being dropped; pg_cancel_backend and
#     statement_timeout end every wait
#     (send waiting for room, imsg_receive, imsg_ping, sync commit) with
#     57014 (statement_timeout only where PostgreSQL keeps it armed: not at
#     the COMMIT of a top-level statement, which commit_timeout bounds);
#  6. a lagging manager: a transaction commits while the last parts of its
#     change set still wait in the manager's mailbox; it is delivered.
#  7. backends terminated in the middle of a change set (halfway through
#     streaming one larger than the area, and waiting for a sync commit):
#     both change sets are discarded, no partial message is kept, nothing
#     leaks;
#  8. a malformed seen vector (a count larger than its entries, and one
#     out of range): the manager logs and drops that change set instead of
#     failing on it, and a change set that follows is delivered;
#  9. malformed parts of a large message (too short, no part 0, a length
#     out of range, out of sequence) and a sender that leaves halfway
#     through one: logged and dropped, the partial message forgotten.
#
# The manager's ERROR in 3 and the helper's crash in 4 are caused by
# malformed messages sent through the test module: only with
# IMSG_TEST_EXTRA's test_module.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use ImsgGroup;

my $test_module = ImsgGroup::test_extra_enabled('test_module');

my $node = PostgreSQL::Test::Cluster->new('faults');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'imessages'
imessages.buffer_size = 1MB
imessages.max_message_size = 256kB
imessages.min_helpers = 1
imessages.max_helpers = 1
max_worker_processes = 8
restart_after_crash = on
});
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION imessages;
CREATE TABLE t (k text PRIMARY KEY, v integer);
SELECT imsg_replicate('t');
});
$node->safe_psql('postgres', 'CREATE EXTENSION imessages_test') if $test_module;

sub sql { return $node->safe_psql('postgres', shift) }

sub manager_pid
{
	$node->poll_query_until('postgres', 'SELECT imsg_manager_pid() IS NOT NULL')
	  or die 'no manager';
	return sql('SELECT imsg_manager_pid()');
}

sub helper_pid
{
	$node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM imsg_helpers() WHERE state = 'idle'")
	  or die 'no idle helper';
	return sql("SELECT pid FROM imsg_helpers() WHERE state = 'idle'");
}

# Bring the area to a known state: no mailbox but the manager's and the
# helper's, each of which has had a message (and keeps a minimum-size
# segment).  Returns allocated_bytes.
sub at_rest
{
	$node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM imsg_mailboxes WHERE backend_type NOT IN ('imessages manager', 'imessages helper')")
	  or die 'sessions still have mailboxes';
	helper_pid();
	my $pid = sql("SELECT pg_backend_pid() FROM (SELECT imsg_ping('helper', 20000), imsg_send('rest')) x");
	# its mailbox closes before it leaves pg_stat_activity
	$node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $pid")
	  or die 'pinging session did not exit';
	$node->poll_query_until('postgres',
		'SELECT used_bytes = 0 AND queued_messages = 0 FROM imsg_area')
	  or die 'area not empty at rest';
	return sql('SELECT allocated_bytes FROM imsg_area');
}

sub is_at_baseline
{
	my ($baseline, $name) = @_;
	at_rest();
	$node->poll_query_until('postgres', "SELECT allocated_bytes = $baseline FROM imsg_area")
	  or diag "allocated_bytes " . sql('SELECT allocated_bytes FROM imsg_area');
	is(sql('SELECT allocated_bytes, used_bytes FROM imsg_area'), "$baseline|0", $name);
}

# A session whose errors show their SQLSTATE
sub session
{
	my $s = $node->background_psql('postgres', on_error_stop => 0);
	$s->query_safe('\set VERBOSITY verbose');
	return $s;
}

# Start $sql in session $s; return once its backend waits in imessages.
sub start_waiting
{
	my ($s, $sql) = @_;
	my $pid = $s->query_safe('SELECT pg_backend_pid()');
	$s->{stderr} = '';
	$s->query_until(qr/waiting/, "\\echo waiting\n$sql;\n");
	$node->poll_query_until('postgres',
		"SELECT state = 'active' AND wait_event_type = 'Extension' FROM pg_stat_activity WHERE pid = $pid")
	  or die "session $pid is not waiting: $sql";
	return $pid;
}

# Wait for the session's statement to end; return its stderr.
sub finish_waiting
{
	my $s = shift;
	$s->query("SELECT 'after'");
	my $err = $s->{stderr};
	$s->{stderr} = '';
	return $err;
}

my $baseline = at_rest();
note "baseline allocated_bytes $baseline";

# ---------------------------------------------------------------------
# 1. A backend ended by FATAL, and one whose client vanished, with
# messages queued in both directions and some received but not released.
# ---------------------------------------------------------------------
for my $how ('pg_terminate_backend', 'client disconnect')
{
	my $keeper = session();
	my $keeper_pid = $keeper->query_safe(
		'SELECT pg_backend_pid() FROM (SELECT count(*) FROM imsg_receive()) x');
	my $victim = session();
	my $victim_pid = $victim->query_safe(
		'SELECT pg_backend_pid() FROM (SELECT count(*) FROM imsg_receive()) x');

	$keeper->query_safe(
		"SELECT count(imsg_send(repeat('k', 50 * i), $victim_pid)) FROM generate_series(1, 40) i");
	$victim->query_safe(
		"SELECT count(imsg_send('v' || i || repeat('.', 100 * i), $keeper_pid, 3)) FROM generate_series(1, 30) i");
	$victim->query_safe('BEGIN');
	is($victim->query_safe('SELECT count(*) FROM imsg_receive(0, 5)'), '5',
		"$how: victim received 5 of its 40 messages in an open transaction");
	is(sql("SELECT queued_messages FROM imsg_mailboxes WHERE pid = $victim_pid"), '40',
		"$how: not released yet");

	if ($how eq 'pg_terminate_backend')
	{
		is(sql("SELECT pg_terminate_backend($victim_pid)"), 't', 'victim terminated');
	}
	else
	{
		$victim->{run}->kill_kill;
	}
	$node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $victim_pid")
	  or die 'victim did not exit';
	is(sql("SELECT count(*) FROM imsg_mailboxes WHERE pid = $victim_pid"), '0',
		"$how: the victim's mailbox is closed");
	is( sql("SELECT used_bytes = (SELECT queued_bytes FROM imsg_mailboxes WHERE pid = $keeper_pid) FROM imsg_area"),
		't', "$how: only the keeper's queued messages use the area");
	is( $keeper->query_safe(q{
SELECT count(*), count(DISTINCT msg_id), bool_and(sender_pid = } . $victim_pid . q{),
       bool_and(payload = convert_to('v' || n || repeat('.', 100 * n::int), 'UTF8'))
  FROM (SELECT *, row_number() OVER (ORDER BY msg_id) AS n, row_number() OVER () AS ord
          FROM imsg_receive()) x
 WHERE n = ord}),
		"30|30|t|t",
		"$how: the keeper gets all 30 messages the victim sent, once, in order, intact");
	is($keeper->query_safe('SELECT count(*) FROM imsg_receive()'), '0',
		"$how: and nothing else");
	$keeper->quit;
	eval { $victim->quit if $how eq 'pg_terminate_backend'; };
	is_at_baseline($baseline, "$how: area back to its baseline");
}

# ---------------------------------------------------------------------
# 2. A backend SIGKILLed in the middle of a send loop: the postmaster
# reinitializes shared memory; the area is rebuilt empty.
# ---------------------------------------------------------------------
{
	my $receiver = session();
	my $receiver_pid = $receiver->query_safe(
		'SELECT pg_backend_pid() FROM (SELECT count(*) FROM imsg_receive()) x');
	$receiver->query_until(qr/receiving/, qq{\\echo receiving
DO \$\$ BEGIN LOOP PERFORM count(*) FROM imsg_receive(1000); COMMIT; END LOOP; END \$\$;
});
	my $sender = session();
	my $sender_pid = $sender->query_safe('SELECT pg_backend_pid()');
	$sender->query_until(qr/sending/, qq{\\echo sending
SET imessages.send_timeout = '60s';
SELECT count(imsg_send(repeat('s', i % 5000), $receiver_pid)) FROM generate_series(1, 100000000) i;
});
	$node->poll_query_until('postgres',
		"SELECT sent > 2000 FROM imsg_mailboxes WHERE pid = $sender_pid")
	  or die 'sender not sending';
	my $log_offset = -s $node->logfile;
	kill 'KILL', $sender_pid;
	$node->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset);
	ok($node->log_contains(qr/server process \(PID $sender_pid\) was terminated by signal 9/, $log_offset),
		'SIGKILL of a sending backend: the postmaster reinitializes');
	eval { $sender->quit; };
	eval { $receiver->quit; };
	my $manager = manager_pid();
	pass('the manager runs again after the reinitialization');
	is(sql('SELECT used_bytes, queued_messages FROM imsg_area'), '0|0',
		'the area came back empty');
	is(sql("SELECT count(*) FROM imsg_mailboxes WHERE pid IN ($sender_pid, $receiver_pid)"), '0',
		'no mailbox of the killed processes');
	cmp_ok(sql("SELECT imsg_ping()"), 'ne', '', 'imsg_ping works');
	is_at_baseline($baseline, 'SIGKILL: area at its baseline, helper answers');
}

# ---------------------------------------------------------------------
# 3. The manager stops while backends wait on it: SIGTERM, then an ERROR.
# ---------------------------------------------------------------------
for my $how ('SIGTERM', 'ERROR')
{
	if ($how eq 'ERROR' && !$test_module)
	{
		SKIP: { skip ImsgGroup::test_extra_reason('test_module'), 13; }
		next;
	}
	my $manager = manager_pid();
	my $delivered = sql('SELECT change_sets_delivered FROM imsg_manager_status()');
	kill 'STOP', $manager;
	# a malformed ping, first in its mailbox: the manager fails on it
	is(sql("SELECT imsg_test_send_raw(0, -1, '\\x01')"), 'ok', 'a malformed ping queued first')
	  if $how eq 'ERROR';

	my $pinger = session();
	start_waiting($pinger, "SELECT imsg_ping('manager', 60000)");
	my $committer = session();
	$committer->query_safe("SET imessages.commit_mode = 'sync'; SET imessages.commit_timeout = '60s'");
	start_waiting($committer, "INSERT INTO t VALUES ('lost $how', 1)");

	# fill the manager's mailbox to its quota (half the area), then one
	# more sender waits
	sql(q{
SET imessages.send_timeout = 0;
DO $$ BEGIN
  LOOP PERFORM imsg_send(repeat('f', 100 * 1024)); END LOOP;
EXCEPTION WHEN insufficient_resources THEN NULL; END $$;
});
	my $sender = session();
	$sender->query_safe("SET imessages.send_timeout = '60s'");
	start_waiting($sender, "SELECT imsg_send(repeat('w', 100 * 1024))");

	my $t0 = time;
	if ($how eq 'SIGTERM')
	{
		kill 'TERM', $manager;
	}
	kill 'CONT', $manager;

	like(finish_waiting($pinger),
		qr/08006: imessages manager exited while waiting for its reply/,
		"manager $how: a waiting imsg_ping fails with 08006");
	like(finish_waiting($committer),
		qr/08006: imessages manager exited before the change set was ordered.*\n.*The transaction is rolled back/,
		"manager $how: a waiting sync commit fails with 08006 and is rolled back");
	like(finish_waiting($sender),
		qr/55000: imessages manager is not running/,
		"manager $how: a sender waiting for room in its mailbox fails with 55000");
	cmp_ok(time - $t0, '<', 30, "manager $how: all long before their 60 s timeouts");
	$_->quit for ($pinger, $committer, $sender);

	my $new = manager_pid();
	isnt($new, $manager, "manager $how: a new manager runs");
	is(sql("SELECT count(*) FROM t WHERE k = 'lost $how'"), '0',
		"manager $how: the sync transaction did not commit");
	if ($how eq 'ERROR')
	{
		is(sql('SELECT last_error FROM imsg_manager_status()'), 'imessages payload is too short',
			'last_error says why the manager exited');
		ok($node->log_contains(qr/background worker "imessages manager" \(PID $manager\) exited with exit code 1/),
			'it exited with status 1');
	}
	cmp_ok(sql("SELECT imsg_ping('manager', 10000)"), 'ne', '', "manager $how: the new manager answers");
	is( sql("SET imessages.commit_mode = 'sync'; INSERT INTO t VALUES ('kept $how', 1);
		   SELECT count(*) FROM t WHERE k = 'kept $how'"),
		'1', "manager $how: sync commits work again");
	$node->poll_query_until('postgres',
		"SELECT change_sets_delivered = $delivered + 1 FROM imsg_manager_status()")
	  or diag 'change_sets_delivered ' . sql('SELECT change_sets_delivered FROM imsg_manager_status()');
	is(sql('SELECT change_sets_delivered - ' . $delivered . ' FROM imsg_manager_status()'), '1',
		"manager $how: only the committed change set was delivered");
	is_at_baseline($baseline, "manager $how: area back to its baseline");
}

# ---------------------------------------------------------------------
# 4. A helper crashes with a job in its mailbox.
# ---------------------------------------------------------------------
SKIP:
{
	skip ImsgGroup::test_extra_reason('test_module'), 13 unless $test_module;
	my $helper = helper_pid();
	my $crashed = sql('SELECT helpers_crashed FROM imsg_manager_status()');
	kill 'STOP', $helper;
	# a malformed job first: the helper fails on it, holding the next one
	is(sql("SELECT imsg_test_send_raw($helper, -4, '\\x01')"), 'ok', 'a malformed job for the helper');
	my $requester = session();
	start_waiting($requester, "SELECT imsg_ping('helper', 60000) IS NOT NULL");
	$node->poll_query_until('postgres',
		"SELECT queued_messages = 2 FROM imsg_mailboxes WHERE pid = $helper")
	  or die 'the ping job did not reach the helper';
	pass('a ping job waits in the helper\'s mailbox behind it');
	my $log_offset = -s $node->logfile;
	kill 'CONT', $helper;
	$node->wait_for_log(qr/imessages helper \(PID $helper\) crashed with exit status 1/, $log_offset);
	pass('the manager notices the crash');
	ok($node->log_contains(qr/Restarting it in 1000 ms/, $log_offset), 'and restarts it after a back-off');
	is(sql('SELECT helpers_crashed - ' . $crashed . ' FROM imsg_manager_status()'), '1',
		'helpers_crashed counts it');

	# a helper ping made while no helper is ready waits for the new one
	my $pinger = session();
	my $ping = $pinger->query("SELECT imsg_ping('helper', 30000) IS NOT NULL");
	is($ping, 't', 'a helper ping during the back-off is answered by the new helper');
	is($pinger->{stderr}, '', 'without error');
	$pinger->quit;

	is($requester->query("SELECT 'after'"), "t\nafter", 'the job the crashed helper held is redone: its requester gets the answer');
	is($requester->{stderr}, '', 'without error');
	ok($node->log_contains(qr/imessages manager redoes a job that helper \(PID $helper\) did not finish/, $log_offset),
		'the redo is logged');
	$requester->quit;
	isnt(helper_pid(), $helper, 'a new helper runs');
	is(sql("SELECT count(*) FROM imsg_mailboxes WHERE pid = $helper"), '0',
		'the crashed helper\'s mailbox is closed');
	is_at_baseline($baseline, 'helper crash: area back to its baseline');
}

# ---------------------------------------------------------------------
# 5. The area full with a receiver that never reads (and has no quota,
# so that it fills the area); cancel and statement_timeout end every wait.
# ---------------------------------------------------------------------
{
	my $sink = session();
	my $sink_pid = $sink->query_safe(
		'SET imessages.mailbox_quota = 0; '
		  . 'SELECT pg_backend_pid() FROM (SELECT count(*) FROM imsg_receive()) x');
	sql(qq{
SET imessages.send_timeout = 0;
DO \$\$ BEGIN
  LOOP PERFORM imsg_send(repeat('f', 100 * 1024), $sink_pid); END LOOP;
EXCEPTION WHEN insufficient_resources THEN NULL; END \$\$;
});
	my $queued = sql("SELECT queued_messages FROM imsg_mailboxes WHERE pid = $sink_pid");
	my ($failures, $waits) = split /\|/, sql('SELECT send_failures, send_waits FROM imsg_area');

	my ($ret, $out, $err) = $node->psql('postgres',
		"SET imessages.send_timeout = '300ms'; SELECT imsg_send(repeat('x', 100 * 1024), $sink_pid)",
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	like($err, qr/53000: imessages area is full/, 'full area: a send times out with 53000');
	like($err, qr/DETAIL:  \d+ of 1048576 bytes are in use; waited 300 ms for space/,
		'with the usage and the wait in DETAIL');
	like($err, qr/HINT:  Recipients must take their messages out/, 'and a hint');
	is(sql('SELECT send_failures - ' . $failures . ', send_waits > ' . $waits . ' FROM imsg_area'),
		'1|t', 'counted as a wait and a failure');
	is(sql("SELECT queued_messages FROM imsg_mailboxes WHERE pid = $sink_pid"), $queued,
		'the refused message did not arrive');

	# Not a page left: the manager's replies to a ping and a sync commit
	# (into mailboxes that have no segment yet) find the area full.  It
	# keeps them and sends them once the sink frees room.
	for my $size (1024, 16)
	{
		sql(qq{
SET imessages.send_timeout = 0;
DO \$\$ BEGIN
  LOOP PERFORM imsg_send(repeat('g', $size), $sink_pid); END LOOP;
EXCEPTION WHEN insufficient_resources THEN NULL; END \$\$;
});
	}
	my $mreceived = sql('SELECT messages_received FROM imsg_manager_status()');
	my $pinger = session();
	start_waiting($pinger, "SELECT imsg_ping('manager', 30000) IS NOT NULL");
	my $committer = session();
	$committer->query_safe("SET imessages.commit_mode = 'sync'; SET imessages.commit_timeout = '30s'");
	start_waiting($committer, "INSERT INTO t VALUES ('full area', 1)");
	$node->poll_query_until('postgres',
		"SELECT messages_received >= $mreceived + 2 FROM imsg_manager_status()")
	  or die 'the manager did not get the ping and the change set';
	is($sink->query_safe('SELECT count(*) FROM imsg_receive(0, 5)'), '5', 'the sink frees room');
	is($pinger->query("SELECT 'after'"), "t\nafter", 'full area: the ping gets its reply once there is room');
	is($pinger->{stderr}, '', 'without error');
	is($committer->query("SELECT count(*) FROM t WHERE k = 'full area'"), '1',
		'full area: the sync commit gets its reply once there is room, and commits');
	is($committer->{stderr}, '', 'without error');
	$pinger->quit;
	$committer->quit;
	ok(!$node->log_contains(qr/could not send a message/), 'no reply of the manager dropped');
	sql(qq{
SET imessages.send_timeout = 0;
DO \$\$ BEGIN
  LOOP PERFORM imsg_send(repeat('f', 100 * 1024), $sink_pid); END LOOP;
EXCEPTION WHEN insufficient_resources THEN NULL; END \$\$;
});

	my %waits = (
		'send waiting for room' => [ "SET imessages.send_timeout = '60s'",
			"SELECT imsg_send(repeat('x', 100 * 1024), $sink_pid)" ],
		'imsg_receive' => [ '', 'SELECT * FROM imsg_receive(60000)' ],
		'imsg_ping' => [ '', "SELECT imsg_ping('manager', 60000)" ],
		'sync commit' => [ "SET imessages.commit_mode = 'sync'; SET imessages.commit_timeout = '60s'",
			"DO \$\$ BEGIN INSERT INTO t VALUES ('cancelled', 1); COMMIT; END \$\$" ],
	);
	my $manager = manager_pid();
	my $discarded = sql('SELECT change_sets_discarded FROM imsg_manager_status()');
	# imsg_ping and sync commits wait while the manager does not answer
	kill 'STOP', $manager;
	for my $what (sort keys %waits)
	{
		my ($setup, $sql) = @{ $waits{$what} };

		my $s = session();
		$s->query_safe($setup) if $setup;
		my $pid = start_waiting($s, $sql);
		my $t0 = time;
		is(sql("SELECT pg_cancel_backend($pid)"), 't', "$what: cancelled");
		like(finish_waiting($s), qr/57014: canceling statement due to user request/,
			"$what: pg_cancel_backend ends the wait with 57014");
		cmp_ok(time - $t0, '<', 30, "$what: long before its 60 s timeout");

		$s->query_safe("SET statement_timeout = '300ms'");
		start_waiting($s, $sql);
		like(finish_waiting($s), qr/57014: canceling statement due to statement timeout/,
			"$what: statement_timeout ends the wait with 57014");
		$s->query_safe('RESET statement_timeout');
		is($s->query_safe("SELECT 'usable'"), 'usable', "$what: the session is usable afterwards");
		$s->quit;
	}
	# At the COMMIT of a top-level statement PostgreSQL has already disarmed
	# statement_timeout (finish_xact_command): commit_timeout bounds that wait.
	($ret, $out, $err) = $node->psql('postgres', qq{
SET imessages.commit_mode = 'sync'; SET imessages.commit_timeout = '1s'; SET statement_timeout = '100ms';
INSERT INTO t VALUES ('cancelled', 2)},
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	like($err, qr/08006: the group did not order the transaction's change set within imessages\.commit_timeout \(1000 ms\)/,
		'sync commit of an autocommit statement: ends at commit_timeout with 08006, not at statement_timeout');
	is(sql("SELECT count(*) FROM t WHERE k = 'cancelled'"), '0', 'the cancelled sync commits did not commit');
	kill 'CONT', $manager;
	$node->poll_query_until('postgres',
		"SELECT change_sets_discarded = $discarded + 3 FROM imsg_manager_status()")
	  or diag 'change_sets_discarded ' . sql('SELECT change_sets_discarded FROM imsg_manager_status()');
	is(sql('SELECT change_sets_discarded - ' . $discarded . ' FROM imsg_manager_status()'), '3',
		'the manager discards the three change sets');
	is(sql('SELECT imsg_manager_pid()'), $manager, 'the manager survived it all');
	$sink->quit;
	is_at_baseline($baseline, 'full area and interrupted waits: area back to its baseline');
}

# ---------------------------------------------------------------------
# 6. A manager that lags behind: a transaction commits while the last
# parts of its change set still wait in the manager's mailbox.  The
# manager drains at most 256 messages per round and then settles change
# sets; 254 messages queued first put chunk 0 and 1 in the first round and
# the final chunk in the next.
# ---------------------------------------------------------------------
{
	sql('CREATE TABLE lag (id integer PRIMARY KEY, pad text); SELECT imsg_replicate(\'lag\')');
	my $manager = manager_pid();
	my ($delivered, $discarded) = split /\|/,
	  sql('SELECT change_sets_delivered, change_sets_discarded FROM imsg_manager_status()');
	my $log_offset = -s $node->logfile;
	kill 'STOP', $manager;
	is(sql("SELECT count(imsg_send('q')) FROM generate_series(1, 254)"), '254',
		'254 messages wait for a stopped manager');
	# about 440 kB: 4 chunks of up to 128 kB (an eighth of the 1 MB area),
	# which fit the stopped manager's quota (half the area) with the rest
	sql("INSERT INTO lag SELECT i, repeat(md5(i::text), 32) FROM generate_series(1, 420) i");
	is(sql('SELECT queued_messages FROM imsg_area'), 258,
		'the committed transaction\'s 4 chunks are queued behind them');
	kill 'CONT', $manager;
	$node->poll_query_until('postgres',
		"SELECT change_sets_delivered + change_sets_discarded > $delivered + $discarded FROM imsg_manager_status()")
	  or die 'the change set was neither delivered nor discarded';
	is( sql("SELECT change_sets_delivered - $delivered, change_sets_discarded - $discarded FROM imsg_manager_status()"),
		'1|0', 'a committed change set whose last parts were still queued is delivered, not discarded');
	is(sql('SELECT changes FROM imsg_recent_changesets(1)'), '420', 'with all its 420 changes');
	ok(!$node->log_contains(qr/dropped part \d+ of a message/, $log_offset), 'no part dropped');
	is(sql('SELECT imsg_manager_pid()'), $manager, 'by the same manager');
}

# ---------------------------------------------------------------------
# 7. Backends terminated in the middle of a change set: one while its
# change set, larger than the area, waits for room halfway through, one
# while its sync commit waits for the manager.
# ---------------------------------------------------------------------
{
	my $manager = manager_pid();
	my ($delivered, $discarded) = split /\|/,
	  sql('SELECT change_sets_delivered, change_sets_discarded FROM imsg_manager_status()');
	kill 'STOP', $manager;
	my $streamer = session();
	$streamer->query_safe("SET imessages.send_timeout = '60s'");
	my $streamer_pid = start_waiting($streamer,
		"INSERT INTO lag SELECT i, repeat(md5(i::text), 32) FROM generate_series(1001, 3000) i");
	cmp_ok(sql('SELECT queued_messages FROM imsg_area'), '>=', 2,
		'a 2 MB change set waits for room, its first parts queued');
	my $committer = session();
	$committer->query_safe("SET imessages.commit_mode = 'sync'; SET imessages.commit_timeout = '60s'");
	my $committer_pid = start_waiting($committer, "INSERT INTO lag VALUES (5000, 'sync')");
	is(sql("SELECT pg_terminate_backend($streamer_pid), pg_terminate_backend($committer_pid)"),
		't|t', 'both terminated');
	$node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE pid IN ($streamer_pid, $committer_pid)")
	  or die 'terminated backends still there';
	eval { $streamer->quit; };
	eval { $committer->quit; };
	kill 'CONT', $manager;
	$node->poll_query_until('postgres',
		"SELECT change_sets_discarded = $discarded + 2 FROM imsg_manager_status()")
	  or diag 'change_sets_discarded ' . sql('SELECT change_sets_discarded FROM imsg_manager_status()');
	is( sql("SELECT change_sets_delivered - $delivered, change_sets_discarded - $discarded FROM imsg_manager_status()"),
		'0|2', 'both change sets are discarded, none delivered');
	is(sql('SELECT count(*) FROM lag WHERE id > 1000'), '0', 'neither transaction committed');
	is(sql('SELECT imsg_manager_pid()'), $manager, 'the manager survived it');
	is(sql('SELECT messages_in_assembly FROM imsg_manager_status()'), '0',
		'the manager keeps no part of the terminated change set');
	is_at_baseline($baseline, 'terminated change sets: area back to its baseline');
}

# 8. change sets (IMSG_T_CHANGESET = -10: int64 xid, int8 flags with
# HAS_SEEN = 4, int32 changes, then the seen vector: int16 n, n entries)
# whose seen vector lies about its length; the manager once read past the
# end and failed with an ERROR (and was restarted)
SKIP:
{
	skip ImsgGroup::test_extra_reason('test_module'), 5 unless $test_module;
	my $manager = manager_pid();
	my $log_offset = -s $node->logfile;
	my $delivered = sql('SELECT change_sets_delivered FROM imsg_manager_status()');
	is(sql("SELECT imsg_test_send_raw(0, -10, '\\x000000000000000704000000000005')"), 'ok',
		'a seen vector announcing 5 entries and carrying none');
	is(sql("SELECT imsg_test_send_raw(0, -10, '\\x00000000000000080400000000ffff')"), 'ok',
		'a seen vector with a negative count');
	$node->wait_for_log(qr/dropped the change set of transaction 8 from process \d+: its seen vector is malformed/,
		$log_offset);
	ok($node->log_contains(qr/dropped the change set of transaction 7 from process \d+: its seen vector is malformed/,
			$log_offset),
		'both are logged and dropped');
	sql("INSERT INTO t VALUES ('after bad seen', 1)");
	$node->poll_query_until('postgres',
		"SELECT change_sets_delivered > $delivered FROM imsg_manager_status()")
	  or diag 'not delivered';
	is(sql('SELECT imsg_manager_pid()'), $manager, 'the manager survived them');
	ok(!$node->log_contains(qr/imessages payload is too short/, $log_offset), 'no read past the end');
}

# 9. parts of a large message (IMSG_T_PART = -15: int32 type, int32 length,
# int32 part number, then bytes), sent raw
SKIP:
{
	skip ImsgGroup::test_extra_reason('test_module'), 7 unless $test_module;
	my $manager = manager_pid();
	my $log_offset = -s $node->logfile;
	my $discarded = sql('SELECT change_sets_discarded FROM imsg_manager_status()');
	my $part = sub {
		my ($type, $len, $no, $bytes) = @_;
		return sprintf("'\\x%08x%08x%08x%s'", $type & 0xffffffff, $len & 0xffffffff, $no, $bytes);
	};
	sql("SELECT imsg_test_send_raw(0, -15, '\\x0001')");
	$node->wait_for_log(qr/dropped part 0 of a message from process \d+: it is too short/, $log_offset);
	sql("SELECT imsg_test_send_raw(0, -15, " . $part->(-10, 100, 3, 'aabb') . ')');
	$node->wait_for_log(qr/dropped part 3 of a message from process \d+: no part 0 came before it/, $log_offset);
	sql("SELECT imsg_test_send_raw(0, -15, " . $part->(-10, -1, 0, 'aabb') . ')');
	$node->wait_for_log(qr/dropped part 0 of a message from process \d+: its message length is invalid/, $log_offset);
	pass('a short part, a part with no part 0 and a length out of range are logged and dropped');

	# part 0 then part 2 of the same message: out of sequence
	my $s = session();
	$s->query_safe("SELECT imsg_test_send_raw(0, -15, " . $part->(-10, 100, 0, 'aabb') . ')');
	$s->query_safe("SELECT imsg_test_send_raw(0, -15, " . $part->(-10, 100, 2, 'ccdd') . ')');
	$node->wait_for_log(qr/dropped part 2 of a message from process \d+: out of sequence/, $log_offset);
	is(sql('SELECT messages_in_assembly FROM imsg_manager_status()'), '0',
		'a message out of sequence is forgotten');

	# part 0 of a change set, then its sender leaves
	$s->query_safe("SELECT imsg_test_send_raw(0, -15, " . $part->(-10, 100000, 0, 'aabb') . ')');
	$node->poll_query_until('postgres', 'SELECT messages_in_assembly = 1 FROM imsg_manager_status()')
	  or diag 'partial message not counted';
	is(sql('SELECT messages_in_assembly FROM imsg_manager_status()'), '1',
		'the first part of a large message is held');
	$s->quit;
	$node->poll_query_until('postgres', 'SELECT messages_in_assembly = 0 FROM imsg_manager_status()')
	  or diag 'partial message kept';
	is( sql("SELECT messages_in_assembly, change_sets_discarded - $discarded FROM imsg_manager_status()"),
		'0|1', 'its sender gone, the partial change set is dropped and counted as discarded');

	# a large message given up for a new one from the same sender
	$s = session();
	$s->query_safe("SELECT imsg_test_send_raw(0, -15, " . $part->(-10, 100000, 0, 'aabb') . ')');
	$s->query_safe("SELECT imsg_test_send_raw(0, -15, " . $part->(-10, 100000, 0, 'aabb') . ')');
	$node->poll_query_until('postgres',
		"SELECT change_sets_discarded - $discarded = 2 FROM imsg_manager_status()")
	  or diag 'a given up message not counted';
	is( sql("SELECT messages_in_assembly, change_sets_discarded - $discarded FROM imsg_manager_status()"),
		'1|2', 'a new part 0 from the same sender replaces the message it gave up');
	$s->quit;
	$node->poll_query_until('postgres', 'SELECT messages_in_assembly = 0 FROM imsg_manager_status()')
	  or diag 'partial message kept';
	is(sql('SELECT imsg_manager_pid()'), $manager, 'the manager survived them');
	is_at_baseline($baseline, 'malformed parts: area back to its baseline');
}

ok(!$node->log_contains(qr/TRAP|PANIC/), 'no assertion failure or PANIC in the server log');
$node->stop;
done_testing();
