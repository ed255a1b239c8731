# Unit test of the payload buffer helpers: src/buffer.c built outside the
# server, driven by src/test/test_buffer.c.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use File::Temp qw(tempdir);

my $pg_config = $ENV{PG_CONFIG} // 'pg_config';
my $incdir = `$pg_config --includedir-server`;
chomp $incdir;
ok($incdir ne '', 'found the server include directory');

my $dir = tempdir(CLEANUP => 1);
my $bin = "$dir/test_buffer";
my ($out, $err);
my $cc = $ENV{CC} // 'cc';
my $ok = IPC::Run::run(
	[
		$cc, '-Wall', '-Werror', '-DIMSG_BUFFER_STANDALONE',
		"-I$incdir", '-Iinclude',
		'src/test/test_buffer.c', 'src/buffer.c', '-o', $bin
	],
	'>', \$out, '2>', \$err);
ok($ok, 'test_buffer builds') or diag($err);

$ok = IPC::Run::run([$bin], '>', \$out, '2>', \$err);
ok($ok, 'test_buffer passes') or diag($out . $err);
like($out, qr/^(\d+) checks, 0 failed, (\d+) overruns reported$/m,
	'every check passed');
my ($checks, $overruns) = $out =~ /^(\d+) checks, 0 failed, (\d+) overruns/m;
cmp_ok($checks // 0, '>=', 26, 'all checks ran');
cmp_ok($overruns // 0, '>=', 8, 'overruns were reported, not ignored');

done_testing();
