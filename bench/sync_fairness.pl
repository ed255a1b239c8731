# How sync commits spread over three nodes that update the same rows at
# once (issue 17, item 5): pgbench -T on every node, 2 clients each,
# retrying 40001 without limit; per node the transactions committed and
# retried, and the group's certification conflicts.  Run by
# bench/sync_fairness.sh; prints one line per repetition and the medians.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../t";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ImsgGroup;

my $reps = $ENV{FAIRNESS_REPS} // 3;
my $seconds = $ENV{FAIRNESS_SECONDS} // 8;
my $rows = $ENV{FAIRNESS_ROWS} // 50;
my $tries = $ENV{FAIRNESS_TRIES} // 0;    # pgbench --max-tries; 0: no limit
# against a build before 1.0's imsg_table_checksum (to compare): no checks
my $old = $ENV{FAIRNESS_OLD} // 0;
sub idle { $old ? sleep(5) : ImsgGroup::wait_idle(@_) }

ImsgGroup::start_corosync();
my @nodes = ImsgGroup::new_nodes(3, "imsg_fair_$$", '', q{
CREATE TABLE t (id integer PRIMARY KEY, v text);
SELECT imsg_replicate('t');
});
$nodes[0]->safe_psql('postgres', "INSERT INTO t SELECT g, 'init' FROM generate_series(1, $rows) g");
idle(@nodes);

my (@min_share, @ratio);
for my $rep (1 .. $reps)
{
	my $c0 = $nodes[0]->safe_psql('postgres', 'SELECT change_sets_conflicted FROM imsg_manager_status()');
	my @done = ImsgGroup::storm(\@nodes, qq{
\\set id random(1, $rows)
BEGIN;
SET LOCAL imessages.commit_mode = 'sync';
UPDATE t SET v = 'sync-' || :client_id || '-' || random() WHERE id = :id;
COMMIT;
}, 2, "T$seconds", "--max-tries=$tries");
	my @retried = map { /number of transactions retried: (\d+)/ ? $1 : 0 } @ImsgGroup::last_outputs;
	my @failed = map { /number of failed transactions: (\d+)/ ? $1 : 0 } @ImsgGroup::last_outputs;
	idle(@nodes);
	my $c1 = $nodes[0]->safe_psql('postgres', 'SELECT change_sets_conflicted FROM imsg_manager_status()');
	my $total = 0;
	$total += $_ for @done;
	my ($lo, $hi) = (sort { $a <=> $b } @done)[0, -1];
	push @min_share, $total ? $lo / $total : 0;
	push @ratio, $lo ? $hi / $lo : 'inf';
	diag(sprintf("rep %d: committed %s (total %d, fewest/all %.2f), retried %s, failed %s, conflicts %d",
		$rep, join('/', @done), $total, $min_share[-1], join('/', @retried), join('/', @failed),
		$c1 - $c0));
	ImsgGroup::same_contents(\@nodes, 't', "rep $rep: every node has the same rows") unless $old;
}
my @s = sort { $a <=> $b } @min_share;
diag(sprintf("median share of the node with the fewest commits: %.2f (fair: 0.33)", $s[$#s / 2]));
$_->stop for @nodes;
ImsgGroup::stop_corosync();
pass('done') if $old;
done_testing();
