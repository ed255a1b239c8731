#!/usr/bin/env bash
# Build the libFuzzer targets in src/test/fuzz/ with clang-14 and run each
# for a bounded time, starting from its committed seed corpus:
#   fuzz_buffer     the payload buffer readers and fixed writers (src/buffer.c)
#   fuzz_changeset  the structural walk of change sets (src/changeset_reader.c)
# Each target first replays its corpus (src/test/fuzz/corpus/<name>/, which
# keeps every input that ever failed), then fuzzes.  The change-set seeds
# must also walk as their names say (-bad-: malformed; -cN-: N changes).
# Prints "  <target> ... ok|FAILED" per target; on a failure, the sanitizer
# report and the failing input (hex and base64), also kept under
# /tmp/imessages-fuzz-artifacts/.  Exits non-zero if any target failed.
# As root it installs clang-14 and libclang-rt-14-dev with apt if missing.
#
# Usage: src/tools/fuzz.sh [seconds per target]   (default 20)
set -u
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

secs=${1:-20}
fuzz=$top/src/test/fuzz
keep=/tmp/imessages-fuzz-artifacts
failed=0

ensure_packages $PACKAGES $FUZZ_PACKAGES || exit 1
incdir=$("$PG_CONFIG" --includedir-server) || exit 1
libdir=$("$PG_CONFIG" --pkglibdir) || exit 1
out=$(mktemp -d /tmp/imessages-fuzz.XXXXXX)
trap 'rm -rf "$out"' EXIT

cflags="-g -O1 -Wall -Werror -Wno-ignored-attributes -fno-sanitize-recover=all
	-DIMSG_BUFFER_STANDALONE -I$incdir -I$top/include -I$top/src"
build() {
	local name=$1 sanitizers=$2
	shift 2
	# shellcheck disable=SC2086
	# libpgcommon: hash_bytes_extended(), which names rows in change sets
	clang-14 $cflags -fsanitize="$sanitizers" "$@" -L"$libdir" -lpgcommon -lpgport \
		-o "$out/$name" >"$out/$name.build" 2>&1 ||
		{ cat "$out/$name.build"; return 1; }
}

# Show and keep what made target $1 fail (its log is $2).
report() {
	local name=$1 log=$2 a
	grep -vE '^(#[0-9]+|INFO:|	NEW_FUNC|"[^"]*" # Uses)' "$log" | tail -60 | sed 's/^/    /'
	for a in "$out/$name"-*; do
		[ -f "$a" ] || continue
		mkdir -p "$keep" && cp "$a" "$keep/"
		echo "    input $(basename "$a") (kept in $keep/):"
		od -An -tx1 -v "$a" | head -20 | sed 's/^/     /'
		echo "     base64: $(base64 -w0 "$a" | head -c 2000)"
	done
}

# Seeds of fuzz_changeset must walk as their names say.
check_seeds() {
	local line file n
	"$out/walk_seeds" "$fuzz/corpus/changeset"/* >"$out/seeds.out" 2>&1 || { cat "$out/seeds.out"; return 1; }
	while read -r file n line; do
		case $(basename "$file") in
			*-bad-*) [ "$n" = -1 ] && continue ;;
			*-c[0-9]*-*)
				[ "$n" = "$(basename "$file" | sed -E 's/.*-c([0-9]+)-.*/\1/')" ] && continue ;;
			*) [ "$n" -ge 0 ] && continue ;;
		esac
		echo "    seed $(basename "$file") walks to $n $line"
		return 1
	done <"$out/seeds.out"
}

run_target() {
	local name=$1 corpus=$fuzz/corpus/${1#fuzz_} log=$out/$1.log runs t0 t1
	mkdir -p "$out/corpus-$name"
	cp "$corpus"/* "$out/corpus-$name/"
	t0=$(date +%s)
	# replay every committed input, then fuzz from them
	if ! "$out/$name" "$corpus"/* >"$log" 2>&1; then
		echo "  $name ... FAILED (a committed input fails)"
		report "$name" "$log"
		return 1
	fi
	if [ "$name" = fuzz_changeset ] && ! check_seeds; then
		echo "  $name ... FAILED (a seed walks to the wrong result)"
		return 1
	fi
	if ! "$out/$name" -max_total_time="$secs" -timeout=10 -print_final_stats=1 \
		-artifact_prefix="$out/$name-" "$out/corpus-$name" >"$log" 2>&1; then
		echo "  $name ... FAILED"
		report "$name" "$log"
		return 1
	fi
	t1=$(date +%s)
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	echo "  $name ... ok ($runs runs in $((t1 - t0)) s, $(ls "$out/corpus-$name" | wc -l) corpus inputs)"
}

src="$top/src/buffer.c"
if ! build fuzz_buffer fuzzer,address,undefined "$fuzz/fuzz_buffer.c" "$src" ||
	! build fuzz_changeset fuzzer,address,undefined "$fuzz/fuzz_changeset.c" "$top/src/changeset_reader.c" "$src" ||
	! build walk_seeds address,undefined -DFUZZ_WALK_MAIN "$fuzz/fuzz_changeset.c" "$top/src/changeset_reader.c" "$src"; then
	echo "  fuzz_buffer ... FAILED (build)"
	echo "  fuzz_changeset ... FAILED (build)"
	exit 1
fi
for t in fuzz_buffer fuzz_changeset; do
	run_target "$t" || failed=$((failed + 1))
done
[ "$failed" -eq 0 ]
