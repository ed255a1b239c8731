#!/usr/bin/perl
# Writes the generated part of the fuzz seed corpus:
#   src/test/fuzz/corpus/changeset/gen-*   change sets (format: "Change-set
#                                          format" in src/imessages_int.h)
#   src/test/fuzz/corpus/buffer/gen-*      programs for fuzz_buffer.c
# The corpus/changeset/real-* files are change sets captured from a server
# (imsg_recent_changesets() after the statements in corpus/README), and
# crash-* files are inputs that once failed.  Run from the top directory:
#   perl src/test/fuzz/make_seeds.pl
use strict;
use warnings;

my $dir = 'src/test/fuzz/corpus';

sub put
{
	my ($name, $bytes) = @_;
	open(my $fh, '>:raw', "$dir/$name") or die "$dir/$name: $!";
	print $fh $bytes;
	close $fh;
}

# change-set pieces
sub str { pack('N', length $_[0]) . $_[0] }
sub hdr { pack('NC', 0x49435331, 1) }
# relation: id, schema, name, [column, type, flags]...
sub rel
{
	my ($id, $schema, $name, @cols) = @_;
	my $r = 'R' . pack('N', $id) . str($schema) . str($name) . pack('n', scalar @cols);
	$r .= str($_->[0]) . str($_->[1]) . pack('C', $_->[2]) for @cols;
	return $r;
}
# values: each undef (null), ['t', text] or ['b', bytes]
sub vals
{
	my $v = pack('n', scalar @_);
	$v .= defined $_ ? $_->[0] . str($_->[1]) : 'n' for @_;
	return $v;
}
sub ins { 'I' . pack('N', shift) . vals(@_) }
sub del { 'D' . pack('N', shift) . vals(@_) }
sub upd { my ($id, $key, $row) = @_; 'U' . pack('N', $id) . vals(@$key) . vals(@$row) }

my @t = (['id', 'integer', 1], ['v', 'text', 2]);
my $t = rel(0, 'public', 't', @t);
my $one = ['b', pack('N', 1)];

put('changeset/gen-c0-header-only', hdr());
put('changeset/gen-c3-insert-update-delete',
	hdr() . $t . ins(0, $one, ['t', 'a']) . upd(0, [$one], [$one, undef]) . del(0, $one));
put('changeset/gen-c3-no-columns', hdr() . rel(3, 's', 'n') . ins(3) . del(3) . upd(3, [], []));
put('changeset/gen-c1-max-relation-id', hdr() . rel(65535, 's', 'big', ['k', 'int8', 1]) . del(65535, undef));
put('changeset/gen-c1-redeclared', hdr() . $t . rel(0, 'public', 't', ['id', 'integer', 1]) . ins(0, $one));
put('changeset/gen-c2-empty-strings', hdr() . rel(1, '', '', ['', '', 3]) . ins(1, ['t', '']) . del(1, ['b', '']));
# malformed: each must walk to -1 (names with -bad-; -cN- means N changes)
put('changeset/gen-bad-relation-id', hdr() . rel(65536, 's', 'x') . ins(65536));
put('changeset/gen-bad-undeclared', hdr() . $t . ins(1, $one, undef));
put('changeset/gen-bad-value-count', hdr() . $t . ins(0, $one));
put('changeset/gen-bad-value-kind', hdr() . $t . 'I' . pack('N', 0) . pack('n', 2) . 'x' . str('1') . 'n');
put('changeset/gen-bad-unknown-tag', hdr() . $t . 'Z' . pack('N', 0));
put('changeset/gen-bad-truncated', substr(hdr() . $t . ins(0, $one, ['t', 'abc']), 0, -2));
put('changeset/gen-bad-huge-string', hdr() . 'R' . pack('N', 0) . pack('N', 0xffffffff) . 'x');
put('changeset/gen-bad-negative-columns', hdr() . 'R' . pack('N', 0) . str('s') . str('t') . pack('n', 0xffff));
put('changeset/gen-bad-version', pack('NC', 0x49435331, 2));
put('changeset/gen-bad-magic', pack('NC', 0x49435332, 1));
# cut short at each kind of field
put('changeset/gen-bad-short-record', hdr() . 'I' . pack('n', 0));
put('changeset/gen-bad-short-string-length', hdr() . 'R' . pack('N', 0) . pack('n', 0));
put('changeset/gen-bad-short-column-flags', hdr() . 'R' . pack('N', 0) . str('s') . str('t') . pack('n', 1) . str('c') . str('int4'));
put('changeset/gen-bad-short-value-count', hdr() . $t . 'I' . pack('N', 0) . "\x00");
put('changeset/gen-bad-short-value-kind', hdr() . $t . 'I' . pack('N', 0) . pack('n', 2));
# the regress test's malformed inputs (sql/changeset.sql)
put('changeset/gen-bad-regress-1', "\x00");
put('changeset/gen-bad-regress-2', pack('H*', '4943533101520000000000000001700000000161'));

# fuzz_buffer programs: byte 0 program length k, byte 1 writer capacity
# (x/128 of the payload), k operation bytes, the payload.  Operations (low
# 3 bits): 0-3 int8/16/32/64, 4 bytes (length in the high 5 bits; 31: the
# next 4 program bytes), 5 string, 6 string then read inside it, 7 back out.
sub prog
{
	my ($cap, $ops, $payload) = @_;
	return pack('CC', length $ops, $cap) . $ops . $payload;
}
my $payload = pack('CnNNN', 0x81, 0x8002, 0x80000003, 0x80000000, 4) . str('hello');
put('buffer/gen-ints-and-string', prog(128, pack('C*', 0, 1, 2, 3, 5, 0), $payload));
put('buffer/gen-writer-too-small', prog(40, pack('C*', 3, 3, 2, 5), $payload));
put('buffer/gen-nested',
	prog(255, pack('C*', 6, 6, 2, 0, 7, 1, 7, 5, 0),
		str(str(pack('N', 7) . 'x') . pack('n', 9)) . str('tail')));
put('buffer/gen-bytes-lengths',
	prog(128, pack('C*', 4 | (3 << 3), 4 | (31 << 3), 0xff, 0xff, 0xff, 0xff, 4 | (31 << 3), 0, 0, 0, 2, 4),
		'abcdef'));
put('buffer/gen-string-too-long', prog(128, pack('C*', 5, 6, 0), pack('N', 0xffffffff) . 'ab'));
put('buffer/gen-empty-payload', prog(0, pack('C*', 0 .. 7), ''));
