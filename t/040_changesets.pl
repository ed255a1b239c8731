# Change sets under load and failure: a 50 MB transaction through the
# default 8 MB area, sync commits while the manager is stopped, and a sync
# commit that waits without blocking other commits.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use ImsgGroup;

# the manager's context-switch counts: only with IMSG_TEST_EXTRA's timing
my $timing = ImsgGroup::test_extra_enabled('timing');

my $node = PostgreSQL::Test::Cluster->new('changesets');
$node->init(allows_streaming => 1);	# sync rep waits need a wal sender slot
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'imessages'
imessages.min_helpers = 0
});
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION imessages;
CREATE TABLE big (id integer PRIMARY KEY, pad text);
CREATE TABLE t (k text PRIMARY KEY, v integer);
SELECT imsg_replicate('big'), imsg_replicate('t');
});
$node->poll_query_until('postgres', 'SELECT imsg_manager_pid() IS NOT NULL');
is($node->safe_psql('postgres', 'SELECT size_bytes FROM imsg_area'),
	8 * 1024 * 1024, 'the default 8 MB area');

sub status
{
	return $node->safe_psql('postgres',
		"SELECT $_[0] FROM imsg_manager_status()");
}

# A 50 MB transaction: streamed to the manager in chunks and delivered whole
my $delivered = status('change_sets_delivered');
$node->safe_psql('postgres',
	"INSERT INTO big SELECT i, repeat(md5(i::text), 320) FROM generate_series(1, 5000) i");
$node->poll_query_until('postgres',
	"SELECT change_sets_delivered > $delivered FROM imsg_manager_status()")
  or die 'the big change set was not delivered';
my ($changes, $bytes, $payload) = split /\|/, $node->safe_psql('postgres',
	'SELECT changes, bytes, payload IS NULL FROM imsg_recent_changesets(1)');
is($changes, 5000, 'all 5,000 changes arrived (counted by walking the reassembled change set)');
cmp_ok($bytes, '>', 50_000_000, 'the change set is over 50 MB');
is($payload, 't', 'too big to keep in the ring, so without payload');
cmp_ok($node->safe_psql('postgres', 'SELECT peak_bytes FROM imsg_area'),
	'<=', 8 * 1024 * 1024, 'the area never held more than its size');
ok(!$node->log_contains(qr/is damaged/), 'no damaged change set logged');
$node->poll_query_until('postgres', 'SELECT used_bytes = 0 FROM imsg_area')
  or die 'area not empty';
pass('area empty afterwards');

# A sync commit while the manager is stopped: times out with a clear error
# and the transaction is not committed
my $manager = $node->safe_psql('postgres', 'SELECT imsg_manager_pid()');
my $discarded = status('change_sets_discarded');
$delivered = status('change_sets_delivered');
kill 'STOP', $manager;
my ($ret, $out, $err) = $node->psql('postgres', q{
SET imessages.commit_mode = 'sync';
SET imessages.commit_timeout = '500ms';
INSERT INTO t VALUES ('lost', 1);
}, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/08006: the group did not order the transaction's change set within imessages\.commit_timeout \(500 ms\)/,
	'a sync commit times out with a clear error');
like($err, qr/The transaction is rolled back/, 'saying that it was rolled back');
is($node->safe_psql('postgres', "SELECT count(*) FROM t WHERE k = 'lost'"),
	'0', 'the transaction is not committed');

# A sync commit waiting for its delivery does not block other commits
my $waiter = $node->background_psql('postgres', on_error_stop => 0);
$waiter->query_until(qr/waiting/, q{
\echo waiting
SET imessages.commit_mode = 'sync';
SET imessages.commit_timeout = '60s';
INSERT INTO t VALUES ('sync waits', 1);
});
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE query LIKE 'INSERT INTO t VALUES (''sync waits''%' AND state = 'active'")
  or die 'sync commit not waiting';
is($node->safe_psql('postgres', "INSERT INTO t VALUES ('async passes', 2); SELECT count(*) FROM t WHERE k = 'async passes'"),
	'1', 'an async commit completes while a sync commit waits');
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'INSERT INTO t VALUES (''sync waits''%' AND state = 'active'"),
	'1', 'the sync commit is still waiting');
kill 'CONT', $manager;
$waiter->query_safe("SELECT 1");
$waiter->quit;
is($node->safe_psql('postgres', "SELECT string_agg(k, ',' ORDER BY k) FROM t"),
	'async passes,sync waits', 'once the manager runs, the sync commit completes');
$node->poll_query_until('postgres',
	"SELECT change_sets_delivered = $delivered + 2 AND change_sets_discarded = $discarded + 1 FROM imsg_manager_status()")
  or die 'unexpected delivery counts';
pass('the two committed change sets are delivered, the timed-out one discarded');
is( $node->safe_psql('postgres', q{
SELECT string_agg(d.key->>'k', ',' ORDER BY r.seq)
  FROM imsg_recent_changesets(2) r, imsg_changeset_decode(r.payload) d}),
	'sync waits,async passes',
	'the sync change set was ordered first, the lost one never delivered');

# A transaction that commits while the manager still has its last chunks
# queued: they were sent before the commit, so the change set is complete
# and delivered, not discarded as if the transaction had failed.  With 8 kB
# chunks, ~3 MB makes more chunks than the manager takes in one batch (256)
# before it looks at the commit log; stopping it makes them all wait (in
# its mailbox, whose quota is half the area: 4 MB).
$delivered = status('change_sets_delivered');
$discarded = status('change_sets_discarded');
kill 'STOP', $manager;
$node->safe_psql('postgres', q{
SET imessages.max_message_size = '8kB';
INSERT INTO big SELECT i, repeat(md5(i::text), 40) FROM generate_series(100001, 102400) i;
});
kill 'CONT', $manager;
$node->poll_query_until('postgres',
	"SELECT change_sets_delivered + change_sets_discarded > $delivered + $discarded FROM imsg_manager_status()")
  or die 'the change set was neither delivered nor discarded';
is(status('change_sets_delivered') - $delivered, 1,
	'a change set whose transaction committed before all its chunks were read is delivered');
is(status('change_sets_discarded') - $discarded, 0, 'and not discarded');
is($node->safe_psql('postgres', 'SELECT changes FROM imsg_recent_changesets(1)'),
	'2400', 'with all its changes');

# Settling without a wake-up per commit (imessages.settle_delay): while
# transactions with change sets keep committing, the manager looks at their
# outcome on a timer and backends skip their SetLatch; once idle it is
# woken again.  A lost wake-up would leave a change set in the mailbox with
# nothing to deliver it, so each step must deliver within a few seconds.
sub delivered_within
{
	my ($want, $secs) = @_;
	for (1 .. $secs * 20)
	{
		return 1 if status('change_sets_delivered') >= $want;
		usleep(50_000);
	}
	return 0;
}

$delivered = status('change_sets_delivered');
my $burst = join '', map { "INSERT INTO t VALUES ('settle $_', $_);\n" } 1 .. 200;
$node->safe_psql('postgres', $burst);
ok(delivered_within($delivered + 200, 10),
	'200 async commits in a row are all delivered');

# ... and without a wake-up per commit: with a 50 ms settle_delay, 400
# commits in a row wake the manager about once per 50 ms, not 400 times
# (with the local GCS, the pass that delivered a change set used to forget
# that it had settled one, and the manager slept until the next commit woke
# it).  Counted with the manager's voluntary context switches.
sub voluntary_switches
{
	return 0 unless $timing;
	open my $fh, '<', "/proc/$_[0]/status" or die "no /proc/$_[0]/status: $!";
	my ($n) = map { /^voluntary_ctxt_switches:\s+(\d+)/ ? $1 : () } <$fh>;
	close $fh;
	return $n;
}
$node->append_conf('postgresql.conf', 'imessages.settle_delay = 50');
$node->reload;
$node->poll_query_until('postgres', q{
SELECT setting = '50' FROM pg_settings WHERE name = 'imessages.settle_delay'});
$manager = $node->safe_psql('postgres', 'SELECT imsg_manager_pid()');
$burst = join '', map { "INSERT INTO t VALUES ('polled $_', $_);\n" } 1 .. 400;
my $switches = voluntary_switches($manager);
$node->safe_psql('postgres', $burst);
$switches = voluntary_switches($manager) - $switches;
SKIP:
{
	skip ImsgGroup::test_extra_reason('timing'), 1 unless $timing;
	cmp_ok($switches, '<', 200,
		'400 async commits in a row do not wake the manager one by one');
}
ok(delivered_within($delivered + 600, 10), 'and are all delivered');
$node->append_conf('postgresql.conf', 'imessages.settle_delay = 1');
$node->reload;
$node->poll_query_until('postgres', q{
SELECT setting = '1' FROM pg_settings WHERE name = 'imessages.settle_delay'});
$delivered += 400;

# the manager has gone idle: the next commit must wake it
usleep(300_000);
$node->safe_psql('postgres', "INSERT INTO t VALUES ('after idle', 0)");
ok(delivered_within($delivered + 201, 5),
	'a commit after the manager went idle wakes it and is delivered');

# a sync commit right after async ones, and after idle
$node->safe_psql('postgres', q{
SET imessages.commit_mode = 'sync';
INSERT INTO t VALUES ('sync after burst', 1);
});
ok(delivered_within($delivered + 202, 5), 'a sync commit is delivered');

# A transaction that stays in progress after sending its change set (here:
# a sync commit, ordered by the group, then waiting for a synchronous
# standby that does not exist) must not keep the
# manager waking every settle_delay: after a few looks it sleeps until
# woken.  Counted with the manager's voluntary context switches.
$node->append_conf('postgresql.conf', "synchronous_standby_names = 'nobody'");
$node->reload;
$node->poll_query_until('postgres', q{SELECT current_setting('synchronous_standby_names') = 'nobody'});
my $stuck = $node->background_psql('postgres', on_error_stop => 0);
$stuck->query_until(qr/started/, q{
SET imessages.commit_mode = 'sync';
\echo started
INSERT INTO t VALUES ('waits for a standby', 0);
});
$node->poll_query_until('postgres', q{
SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event = 'SyncRep'});
usleep(200_000);
$switches = voluntary_switches($manager);
sleep 1;
$switches = voluntary_switches($manager) - $switches;
SKIP:
{
	skip ImsgGroup::test_extra_reason('timing'), 1 unless $timing;
	cmp_ok($switches, '<', 200,
		'a transaction stuck in progress does not keep the manager polling every millisecond');
}
$node->safe_psql('postgres', q{
SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event = 'SyncRep'});
$stuck->quit;
$node->append_conf('postgresql.conf', "synchronous_standby_names = ''");
$node->reload;
$node->poll_query_until('postgres', q{SELECT current_setting('synchronous_standby_names') = ''});
ok(delivered_within($delivered + 203, 5),
	'its change set is delivered once the transaction commits');

# settle_delay = 0: every commit wakes the manager, as before
$node->append_conf('postgresql.conf', 'imessages.settle_delay = 0');
$node->reload;
$node->poll_query_until('postgres', q{
SELECT setting = '0' FROM pg_settings WHERE name = 'imessages.settle_delay'});
$burst = join '', map { "INSERT INTO t VALUES ('nodelay $_', $_);\n" } 1 .. 50;
$node->safe_psql('postgres', $burst);
ok(delivered_within($delivered + 253, 10),
	'with imessages.settle_delay = 0 every commit is delivered');
is(status('change_sets_discarded'), $discarded, 'none of them discarded');

$node->stop;
done_testing();
