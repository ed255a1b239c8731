# The replication manager and its helper pool: start, exit and crash of
# helpers, the max_worker_processes limit, manager restarts, and waits on
# a manager that stops answering.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ImsgGroup;

# a malformed message (imessages_test) and context-switch counts: only
# with IMSG_TEST_EXTRA's test_module and timing
my $test_module = ImsgGroup::test_extra_enabled('test_module');
my $timing = ImsgGroup::test_extra_enabled('timing');

my $node = PostgreSQL::Test::Cluster->new('manager');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'imessages'
imessages.buffer_size = 1MB
imessages.min_helpers = 2
max_worker_processes = 8
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION imessages');
$node->safe_psql('postgres', 'CREATE EXTENSION imessages_test') if $test_module;

sub idle_helpers
{
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM imsg_helpers() WHERE state = 'idle'");
}

sub status
{
	my $cols = shift;
	return $node->safe_psql('postgres', "SELECT $cols FROM imsg_manager_status()");
}

$node->poll_query_until('postgres',
	"SELECT count(*) = 2 FROM imsg_helpers() WHERE state = 'idle'")
  or die 'two helpers did not start';
is(idle_helpers(), '2', 'min_helpers = 2: two helpers run');
is(status('helpers_running, helpers_started'), '2|2', 'status counts them');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'imessages helper'"),
	'2', 'helpers show in pg_stat_activity');

# SIGTERM one helper: it exits cleanly, the pool is back to two
my @pids = split /\n/,
  $node->safe_psql('postgres', 'SELECT pid FROM imsg_helpers() ORDER BY pid');
my $log_offset = -s $node->logfile;
kill 'TERM', $pids[0];
$node->poll_query_until('postgres',
	"SELECT count(*) = 2 AND bool_and(pid <> $pids[0]) FROM imsg_helpers() WHERE state = 'idle'")
  or die 'pool not back to two';
pass('pool back to two after SIGTERM of a helper');
is(status('helpers_exited, helpers_crashed, helpers_started'), '1|0|3',
	'the SIGTERMed helper counts as exited, its replacement as started');
ok($node->log_contains(qr/imessages helper \(PID $pids[0]\) exited/, $log_offset),
	'its exit is logged');
cmp_ok($node->safe_psql('postgres', "SELECT imsg_ping('helper')"), 'ne', '',
	'the new pool answers');

# A helper that exits with an error counts as crashed and is replaced
# after a back-off; here its database is missing.
$log_offset = -s $node->logfile;
$node->append_conf('postgresql.conf', "imessages.database = 'imsg_missing_db'");
$node->reload;
$node->poll_query_until('postgres', "SELECT current_setting('imessages.database') = 'imsg_missing_db'");
@pids = split /\n/,
  $node->safe_psql('postgres', 'SELECT pid FROM imsg_helpers() ORDER BY pid');
kill 'TERM', $pids[0];
$node->wait_for_log(qr/imessages helper \(PID \d+\) crashed with exit status 1/, $log_offset);
pass('the crash is logged with its exit status');
ok($node->log_contains(qr/Restarting it in \d+ ms/, $log_offset), 'with the back-off');
cmp_ok(status('helpers_crashed'), '>=', 1, 'helpers_crashed counts it');
$node->append_conf('postgresql.conf', "imessages.database = 'postgres'");
$node->reload;
$node->poll_query_until('postgres',
	"SELECT count(*) = 2 FROM imsg_helpers() WHERE state = 'idle'")
  or die 'pool did not recover';
pass('pool recovers once helpers can start again');

# Ask for more helpers than max_worker_processes allows: the manager logs
# the refusal with a hint and keeps running with what it got.
$node->append_conf('postgresql.conf', qq{
max_worker_processes = 4
imessages.min_helpers = 8
imessages.max_helpers = 8
});
$log_offset = -s $node->logfile;
$node->restart;
$node->wait_for_log(qr/imessages\.min_helpers \(8\) is more than the 3 helpers allowed/, $log_offset);
pass('min_helpers above the limit is logged');
ok($node->log_contains(qr/HINT:  Raise imessages\.max_helpers and max_worker_processes/, $log_offset),
	'with a hint');
# 4 workers: the logical replication launcher, the manager, two helpers
$node->wait_for_log(qr/imessages manager could not start a helper: no background worker slot is free/,
	$log_offset);
ok($node->log_contains(qr/HINT:  Raise max_worker_processes \(now 4\)/, $log_offset),
	'a refused registration is logged with a hint');
$node->poll_query_until('postgres',
	"SELECT count(*) = 2 FROM imsg_helpers() WHERE state = 'idle'")
  or die 'helpers did not start';
is(status('helpers_running'), '2', 'the manager runs the helpers it could get');
cmp_ok($node->safe_psql('postgres', "SELECT imsg_ping()"), 'ne', '',
	'and keeps answering');

# SIGTERM the manager: it comes back, its mailbox works, nothing leaks
$node->append_conf('postgresql.conf', qq{
max_worker_processes = 8
imessages.min_helpers = 2
imessages.max_helpers = 4
});
$node->restart;
$node->poll_query_until('postgres',
	"SELECT count(*) = 2 FROM imsg_helpers() WHERE state = 'idle'");
my $old_manager = $node->safe_psql('postgres', 'SELECT imsg_manager_pid()');
$node->safe_psql('postgres',
	"SELECT count(imsg_send('before ' || i)) FROM generate_series(1, 100) i");
kill 'TERM', $old_manager;
$node->poll_query_until('postgres',
	"SELECT imsg_manager_pid() IS NOT NULL AND imsg_manager_pid() <> $old_manager")
  or die 'manager did not come back';
pass('manager restarted after SIGTERM');
cmp_ok($node->safe_psql('postgres', "SELECT imsg_ping()"), 'ne', '',
	'imsg_ping works with the new manager');
$node->poll_query_until('postgres',
	"SELECT count(*) = 2 FROM imsg_helpers() WHERE state = 'idle'")
  or die 'new manager has no helpers';
cmp_ok($node->safe_psql('postgres', "SELECT imsg_ping('helper')"), 'ne', '',
	'and its new helpers answer');
is($node->safe_psql('postgres', 'SELECT imsg_send(\'after\') > 0'), 't',
	'messages to the manager are accepted again');
$node->poll_query_until('postgres',
	'SELECT used_bytes = 0 AND queued_messages = 0 FROM imsg_area')
  or die 'area not empty after manager restart';
pass('no message memory leaked across the restart');

# A manager that stops answering: a ping times out with a clear error.
my $manager = $node->safe_psql('postgres', 'SELECT imsg_manager_pid()');
kill 'STOP', $manager;
my ($ret, $out, $err) = $node->psql('postgres', "SELECT imsg_ping('manager', 300)",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/08006: imessages ping to the manager timed out/, 'ping to a stopped manager times out');
like($err, qr/No reply within 300 ms/, 'with the timeout in DETAIL');

# ... and a backend waiting on it gets an error as soon as it exits
my $waiter = $node->background_psql('postgres', on_error_stop => 0);
$waiter->query_until(qr/waiting/, "\\echo waiting\nSELECT imsg_ping('manager', 60000);\n");
sleep 1;
my $t0 = time;
kill 'TERM', $manager;
kill 'CONT', $manager;
$waiter->{stderr} = '';
$waiter->query("SELECT 'done'");
like($waiter->{stderr}, qr/imessages manager exited while waiting for its reply/,
	'a waiting backend learns that the manager exited');
cmp_ok(time - $t0, '<', 30, 'long before its 60 s timeout');
$waiter->quit;
$node->poll_query_until('postgres',
	"SELECT imsg_manager_pid() IS NOT NULL AND imsg_manager_pid() <> $manager")
  or die 'manager did not come back';

# The manager exits with status 1 on an error, is restarted, and says why.
SKIP:
{
	skip ImsgGroup::test_extra_reason('test_module'), 4 unless $test_module;
	$manager = $node->safe_psql('postgres', 'SELECT imsg_manager_pid()');
	is($node->safe_psql('postgres', "SELECT imsg_test_send_raw(0, -1, '\\x01')"),
		'ok', 'a malformed ping to the manager');
	$node->poll_query_until('postgres',
		"SELECT imsg_manager_pid() IS NOT NULL AND imsg_manager_pid() <> $manager")
	  or die 'manager did not restart after its error';
	is(status('last_error'), 'imessages payload is too short',
		'last_error tells why the previous manager exited');
	ok($node->log_contains(qr/background worker "imessages manager" \(PID $manager\) exited with exit code 1/),
		'it exited with status 1');
	cmp_ok($node->safe_psql('postgres', "SELECT imsg_ping()"), 'ne', '',
		'the restarted manager answers');
}

# A stream of user messages keeps the manager looking for more, in short
# sleeps that leave the CPU to the sender, instead of sleeping on its latch
# after each pass: every such sleep cost the sender a kill() to wake it.
# 300,000 messages in one statement put it to sleep 900 to 5,900 times
# before, now a few.  Counted with the DEBUG2 line the manager logs before
# each wait on its latch (its context switches would count the poll's own
# short sleeps too).  (The restarted manager's helpers say they are ready
# with messages of their own: wait for them first, and count delivered user
# messages.)
$node->poll_query_until('postgres',
	"SELECT count(*) = 2 FROM imsg_helpers() WHERE state = 'idle'")
  or die 'the restarted manager did not start its helpers';
$manager = $node->safe_psql('postgres', 'SELECT imsg_manager_pid()');
my $delivered = status('messages_delivered');
my $latch_wait = qr/imessages manager waits on its latch/;
my $reload_offset = -s $node->logfile;
$node->append_conf('postgresql.conf', 'log_min_messages = debug2');
$node->reload;
# the manager has read the setting once it logs its first wait
$node->wait_for_log($latch_wait, $reload_offset);
my $manager_sleeps = sub {
	my $offset = shift;
	my $log = slurp_file($node->logfile, $offset);
	my $count = () = $log =~ /\[$manager\] DEBUG:  $latch_wait/g;
	return $count;
};
# Another process busy on this machine can keep the sender off the CPU
# for longer than the manager looks, and the manager then sleeps as it
# should; so the stream is sent three times and the quietest one counts
# (before the poll, none went below 900).
my @sleeps;
for my $round (1 .. 3)
{
	my $offset = -s $node->logfile;
	my $sent = $node->safe_psql('postgres',
		"SELECT count(imsg_send(repeat('x', 64))) FROM generate_series(1, 300000)");
	is($sent, '300000', "stream $round of 300,000 messages to the manager is sent");
	$node->poll_query_until('postgres',
		"SELECT messages_delivered >= $delivered + 300000 * $round FROM imsg_manager_status()")
	  or die 'the manager did not take the stream';
	push @sleeps, $manager_sleeps->($offset);
}
SKIP:
{
	skip ImsgGroup::test_extra_reason('timing'), 1 unless $timing;
	diag("the manager slept @sleeps times during the three streams");
	cmp_ok((sort { $a <=> $b } @sleeps)[0], '<', 300,
		'the manager does not sleep after each pass of a stream');
}
is(status('messages_delivered'), $delivered + 900000,
	'it multicasts every message once, and the group delivers each back');

$node->stop;
done_testing();
