# Helpers for TAP tests of several imessages nodes in one Corosync group:
# one corosync on loopback, started unprivileged in a user and mount
# namespace of its own (its /run paths are fixed), N clusters joined to
# it, pgbench storms against all nodes at once, and the checks that the
# group is idle and every node holds the same rows.
package ImsgGroup;

use strict;
use warnings;
use Fcntl qw(:flock);
use File::Temp qw(tempdir);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# Tests that need more than a plain "make installcheck" against a user's
# server offers run only when the environment variable IMSG_TEST_EXTRA (a
# space-separated list of words, like PostgreSQL's PG_TEST_EXTRA) names
# what they need; otherwise they skip, saying which word runs them.
# src/tools/run-tests.sh and .ci/run enable every word.
our %TEST_EXTRA = (
	corosync => 'corosync',    # installed; t/080: none other running
	netns => 'network namespaces',    # src/tools/corosync-lab.sh
	test_module => 'the test module imessages_test',    # not in "make install"
	timing => 'context-switch counts',);

# True if IMSG_TEST_EXTRA names every word given.
sub test_extra_enabled
{
	my %on = map { $_ => 1 } split(' ', $ENV{IMSG_TEST_EXTRA} // '');
	for my $word (@_)
	{
		die "unknown IMSG_TEST_EXTRA word \"$word\"" unless $TEST_EXTRA{$word};
		return 0 unless $on{$word};
	}
	return 1;
}

# Why a test that needs these words (those not enabled) does not run.
sub test_extra_reason
{
	my @off = grep { !test_extra_enabled($_) } @_;
	return 'requires ' . join(' and ', map { $TEST_EXTRA{$_} } @off)
	  . '; set IMSG_TEST_EXTRA to include "' . join(' ', @off) . '" to run';
}

# At the top of a test file: skip the whole file unless every word given
# is enabled.
sub require_test_extra
{
	plan skip_all => test_extra_reason(@_) unless test_extra_enabled(@_);
	return;
}

my $coro_pid;
my $coro_dir;
my @shm_before;

# whatever happens, do not leave corosync running
END { stop_corosync(); }

sub corosync_log
{
	return $coro_dir && -e "$coro_dir/corosync.log" ? slurp_file("$coro_dir/corosync.log") : '';
}

# corosync's IPC sockets are abstract: one name per network namespace,
# so two tests running corosync at once (two checkouts testing on one
# machine) would take each other's.  A test that starts corosync holds
# this lock until it exits; the next one waits.
my $corosync_lock;

sub lock_corosync
{
	return if $corosync_lock;
	open($corosync_lock, '>>', '/tmp/imsg_corosync.lock')
	  or die "cannot open the corosync lock: $!";
	flock($corosync_lock, LOCK_EX) or die "cannot take the corosync lock: $!";
}

# Start one corosync on 127.0.0.1 with no quorum provider (every view is
# quorate: right for several clusters on one machine).  Dies if it does
# not come up.
sub start_corosync
{
	lock_corosync();
	my ($corosync) =
	  grep { -x $_ } map { "$_/corosync" } (split(/:/, $ENV{PATH}), '/usr/sbin', '/sbin');
	die 'corosync is not installed' unless defined $corosync;
	$coro_dir = tempdir('imsg_corosync_XXXX', TMPDIR => 1, CLEANUP => 1);
	mkdir "$coro_dir/run";
	open my $fh, '>', "$coro_dir/corosync.conf" or die;
	print $fh <<"EOF";
totem {
	version: 2
	cluster_name: imsgtap
	crypto_cipher: none
	crypto_hash: none
}
system {
	run_dir: $coro_dir/run
	state_dir: $coro_dir/run
}
logging {
	to_stderr: yes
	to_logfile: no
	to_syslog: no
}
quorum {
}
nodelist {
	node {
		name: node1
		nodeid: 1
		ring0_addr: 127.0.0.1
	}
}
EOF
	close $fh;
	@shm_before = glob('/dev/shm/qb-*');
	$coro_pid = fork();
	die "fork: $!" unless defined $coro_pid;
	if ($coro_pid == 0)
	{
		open STDOUT, '>', "$coro_dir/corosync.log";
		open STDERR, '>&', \*STDOUT;
		exec('unshare', '-r', '-m', 'sh', '-c',
			"mount --bind $coro_dir/run /run && exec $corosync -f -c $coro_dir/corosync.conf");
		die "exec: $!";
	}
	for (1 .. 100)
	{
		return 1 if corosync_log() =~ /ready to provide service/;
		last if corosync_log() =~ /exiting with status/;
		select(undef, undef, undef, 0.1);
	}
	die "corosync did not start:\n" . corosync_log();
}

# start_corosync() as the first test: if corosync does not come up, say
# why and end this file (failed), leaving the other files to run.
sub start_corosync_or_end
{
	return 1 if ok(eval { start_corosync() }, 'corosync is up');
	diag("corosync did not start: $@");
	done_testing();
	exit;
}

# Stop corosync and remove the /dev/shm files this test's processes left
# (a killed manager cannot close its IPC buffers).  True if nothing of
# ours is left behind.
sub stop_corosync
{
	return 1 unless $coro_pid;
	kill 'TERM', $coro_pid;
	waitpid($coro_pid, 0);
	$coro_pid = 0;
	my %before = map { $_ => 1 } @shm_before;
	my @ours = grep { !$before{$_} && (stat $_)[4] == $> } glob('/dev/shm/qb-*');
	unlink @ours;
	return !grep { !$before{$_} } glob('/dev/shm/qb-*');
}

# Initialize $node as member node$i (imessages.node_id $i) of $group
# ($conf appended), start it, create the extension and run $setup_sql.
# Its node_conninfo is how the others reach it to catch up from its
# change-set log (a unix socket: sockets reach across network namespaces
# too).
sub start_member
{
	my ($node, $i, $group, $conf, $setup_sql) = @_;
	$node->init;
	$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'imessages'
max_worker_processes = 16
max_connections = 40
imessages.gcs = corosync
imessages.gcs_group = '$group'
imessages.node_name = 'node$i'
imessages.node_id = $i
imessages.commit_timeout = 60000
$conf
});
	$node->append_conf('postgresql.conf',
		"imessages.node_conninfo = 'host=" . $node->host . ' port=' . $node->port . " dbname=postgres'\n");
	$node->start;
	# each node is set up by hand, as on the DBA's every machine: with
	# session_replication_role = replica, imsg_replicate() does not travel
	$node->safe_psql('postgres',
		"SET session_replication_role = replica; CREATE EXTENSION imessages; $setup_sql");
}

# Start corosync-lab.sh's $count namespaced corosyncs in $dir as the first
# test; if they do not come up, say why and end this file (failed).
sub lab_start_or_end
{
	my ($lab, $dir, $count) = @_;
	lock_corosync();
	return 1 if ok(system('bash', $lab, 'start', $dir, $count) == 0,
		"$count corosync nodes started, each in its own network namespace");
	diag("corosync-lab.sh start failed; its messages are in this test's log");
	done_testing();
	exit;
}

# N started clusters, node1..nodeN (or from node$first on), in group
# $group, each with the extension created and $setup_sql run.  $conf is
# appended to each postgresql.conf.
sub new_nodes
{
	my ($count, $group, $conf, $setup_sql, $first) = @_;
	$first //= 1;
	my @nodes;
	for my $i ($first .. $first + $count - 1)
	{
		my $node = PostgreSQL::Test::Cluster->new("node$i");
		start_member($node, $i, $group, $conf, $setup_sql);
		push @nodes, $node;
	}
	for my $node (@nodes)
	{
		$node->poll_query_until('postgres',
			"SELECT group_members = $count AND group_quorate AND state = 'synced'
			        AND group_id = (SELECT group_id FROM imsg_state) FROM imsg_manager_status()")
		  or die $node->name . " does not see $count members";
	}
	return @nodes;
}

# N clusters as on N machines, each in the network namespace of its own
# corosync started by src/tools/corosync-lab.sh in $dir (lab start done by
# the caller): node1..nodeN in group $group, each started by start_member.
# pg_ctl start runs in node I's namespace; every other program as usual.
sub lab_nodes
{
	my ($lab, $dir, $count, $group, $conf, $setup_sql) = @_;
	my $bindir = `pg_config --bindir`;
	chomp $bindir;
	my @nodes;
	for my $i (1 .. $count)
	{
		my $inst = "$dir/inst$i";
		mkdir $inst;
		mkdir "$inst/bin";
		for my $prog (glob("$bindir/*"))
		{
			my $name = ($prog =~ m{([^/]+)$})[0];
			next if $name eq 'pg_ctl';
			symlink($prog, "$inst/bin/$name") or die "symlink: $!";
		}
		open my $fh, '>', "$inst/bin/pg_ctl" or die;
		# (only start matters: stop must work even after the namespaces are gone)
		print $fh qq{#!/bin/sh
case " \$* " in
*" start "*|*" restart "*) exec bash '$lab' exec '$dir' $i '$bindir/pg_ctl' "\$@" ;;
*) exec '$bindir/pg_ctl' "\$@" ;;
esac
};
		close $fh;
		chmod 0755, "$inst/bin/pg_ctl";

		my $node = PostgreSQL::Test::Cluster->new("node$i", install_path => $inst);
		start_member($node, $i, $group, $conf, $setup_sql);
		push @nodes, $node;
	}
	return @nodes;
}

# A pgbench script of inserts, updates and deletes on tables t (id, v) and
# u (id, v, n), keys 1..300.
sub mixed_script
{
	return q{
\set id random(1, 300)
\set op random(1, 5)
\if :op = 1
INSERT INTO t VALUES (:id, 'ins-' || :client_id) ON CONFLICT (id) DO UPDATE SET v = excluded.v;
\elif :op = 2
DELETE FROM t WHERE id = :id;
\elif :op = 3
UPDATE u SET v = 'upd-' || :client_id, n = n + 1 WHERE id = :id;
\elif :op = 4
INSERT INTO u VALUES (:id, 'ins', 0) ON CONFLICT (id) DO UPDATE SET n = u.n + 1;
\else
DELETE FROM u WHERE id = :id;
\endif
};
}

# pgbench's output and exit status of each node in the last storm (for
# the benchmarks, and tests that check failed transactions).
our @last_outputs;
our @last_results;

# Run one pgbench per node at once, each with the script $script (text),
# $clients clients and $xacts transactions per client ("T<n>": for n
# seconds instead); returns, per node, the number of transactions pgbench
# reports as processed.  A failed transaction ends its client in PG15's
# pgbench, so the script must not fail; sync scripts pass --max-tries so
# that serialization failures (40001) are retried.
sub storm
{
	my ($nodes, $script, $clients, $xacts, @extra) = @_;
	my @count = $xacts =~ /^T(\d+)$/ ? ('-T', $1) : ('-t', $xacts);
	my $dir = tempdir('imsg_storm_XXXX', TMPDIR => 1, CLEANUP => 1);
	open my $fh, '>', "$dir/script.sql" or die;
	print $fh $script;
	close $fh;
	my (@runs, @outs, @errs);
	for my $i (0 .. $#$nodes)
	{
		my $node = $nodes->[$i];
		my @cmd = ('pgbench', '-n', '-h', $node->host, '-p', $node->port,
			'-c', $clients, '-j', 1, @count, '-f', "$dir/script.sql", @extra, 'postgres');
		$outs[$i] = '';
		$errs[$i] = '';
		push @runs, IPC::Run::start(\@cmd, '<', \undef, '>', \$outs[$i], '2>', \$errs[$i]);
	}
	my @done;
	@last_results = ();
	for my $i (0 .. $#runs)
	{
		$runs[$i]->finish;
		push @last_results, $runs[$i]->result(0);
		my ($n) = $outs[$i] =~ /number of transactions actually processed: (\d+)/;
		diag($nodes->[$i]->name . ": pgbench: $errs[$i]") if $runs[$i]->result || !defined $n;
		push @done, $n // 0;
	}
	@last_outputs = @outs;
	return @done;
}

# Wait until the group is idle: every node is at the same group position,
# twice in a row, and has applied everything up to it.
sub wait_idle
{
	my @nodes = @_;
	my $last = '';
	for (1 .. 1200)
	{
		my @states = map {
			$_->safe_psql('postgres',
				'SELECT group_position, change_sets_to_apply + (group_position - applied_position) FROM imsg_manager_status()')
		} @nodes;
		my %delivered = map { (split /\|/)[0] => 1 } @states;
		my $busy = grep { (split /\|/)[1] != 0 } @states;
		my $now = join(',', @states);
		return 1 if keys(%delivered) == 1 && !$busy && $now eq $last;
		$last = $now;
		select(undef, undef, undef, 0.25);
	}
	diag("the group is not idle: $last");
	return 0;
}

# Each node's imsg_table_checksum() of $table, and an ordered md5 of its
# rows computed by SQL, as "checksum md5"; ok() if every node has the same.
sub same_contents
{
	my ($nodes, $table, $what) = @_;
	my @sums = map {
		$_->safe_psql('postgres',
			"SELECT (SELECT s.rows || '/' || s.digest FROM imsg_table_checksum('$table') s) || ' ' ||
			        (SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM $table t)")
	} @$nodes;
	my %distinct = map { $_ => 1 } @sums;
	ok(keys(%distinct) == 1, $what)
	  or diag(join("\n", map { $nodes->[$_]->name . ": $sums[$_]" } 0 .. $#sums));
	return keys(%distinct) == 1;
}

1;
