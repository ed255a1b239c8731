#!/usr/bin/env bash
# Build, install and run every imessages test suite against temporary
# preloaded instances: pg_regress, isolation, TAP, and the fuzz targets
# (src/tools/fuzz.sh, IMSG_FUZZ_SECONDS per target, default 20).  Prints
# one line per test and a final "N passed, M failed"; exits non-zero if
# anything failed or a suite ran nothing.  As root it installs missing
# packages with apt and runs the tests as the 'postgres' user.
#
#   --ubsan     build with -fsanitize=undefined -fno-sanitize-recover=all
#               (into IMSG_PG_ROOT, default /tmp/imessages-pgroot-ubsan),
#               run regress, isolation and tap, and count one more test:
#               no "runtime error:" in any server or test log
#   --valgrind  run regress, isolation and tap with every server process
#               under valgrind; one more test: no valgrind report whose
#               stack names imessages' own source files.  Test failures
#               are listed but not counted (timing changes under valgrind)
#
# IMSG_KEEP_WORK=1 keeps the work directory (logs) and prints its name.
# IMSG_TAP_TIMEOUT (seconds, default 300) limits each TAP file; one that
# runs longer is killed with what it started, listed with its processes,
# and counted as failed.
#
# IMSG_TEST_EXTRA (default: all of "corosync netns test_module timing")
# says which TAP tests needing more than a plain "make installcheck" run;
# the others skip.  With every word enabled a TAP file that skipped, whole
# or in part, counts as failed; otherwise its skips are listed only.
#
# Usage: src/tools/run-tests.sh [--ubsan|--valgrind] [regress] [isolation] [tap] [fuzz]
set -u

mode=plain
args=()
for a in "$@"; do
	case $a in
		--ubsan) mode=ubsan ;;
		--valgrind) mode=valgrind ;;
		*) args+=("$a") ;;
	esac
done
if [ "$mode" = ubsan ]; then
	# a sanitized build never goes into the system's tree
	export IMSG_PG_ROOT=${IMSG_PG_ROOT:-/tmp/imessages-pgroot-ubsan}
	export IMSG_COPT="-fsanitize=undefined -fno-sanitize-recover=all"
	export UBSAN_OPTIONS=print_stacktrace=1
fi
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
. "$(dirname "${BASH_SOURCE[0]}")/sanitizers.sh"
export IMSG_TEST_EXTRA=${IMSG_TEST_EXTRA-$IMSG_TEST_EXTRA_ALL}

if [ "$mode" = plain ]; then
	suites=${args[*]:-regress isolation tap fuzz}
else
	suites=${args[*]:-regress isolation tap}
fi
passed=0
failed=0
vg_failed=0

extra_packages=
[ "$mode" = valgrind ] && extra_packages=$VALGRIND_PACKAGES
ensure_packages $PACKAGES $extra_packages || { echo "0 passed, 1 failed"; exit 1; }
build_and_install || { echo "0 passed, 1 failed"; exit 1; }
work=$(make_workdir)
if [ -n "${IMSG_KEEP_WORK:-}" ]; then
	echo "work directory (kept): $work"
else
	trap 'rm -rf "$work"' EXIT
fi
bindir=
if [ "$mode" = valgrind ]; then
	bindir=$(make_valgrind_bindir "$work") || { echo "0 passed, 1 failed"; exit 1; }
fi

# Add a suite's ok/failed counts to the totals; a suite that ran nothing
# counts as a failure, and so do the skipped ones given third (counted
# even under valgrind).  Returns non-zero if the suite failed.
tally() {
	local ok=$1 bad=$2 skipped=${3:-0}
	if [ $((ok + bad + skipped)) -eq 0 ]; then
		echo "  suite ran no test"
		bad=1
	elif [ "$mode" = valgrind ] && [ "$bad" -gt 0 ]; then
		echo "  ($bad failed under valgrind: listed, not counted)"
		vg_failed=$((vg_failed + bad))
		bad=0
	fi
	passed=$((passed + ok))
	failed=$((failed + bad + skipped))
	return $((bad + skipped > 0))
}

# The TAP files of $log that skipped: whole ("skipped: reason" from prove)
# or in part (an "ok N # skip" in the file's regress_log, after its time
# stamp), one a line as
# "t/NAME.pl whole|part".
tap_skips() {
	local log=$1 f name
	grep -oE '^(\[[0-9:]+\] )?t/[[:alnum:]_]+\.pl \.+ skipped' "$log" |
		grep -oE 't/[[:alnum:]_]+\.pl' | sed 's/$/ whole/'
	for f in "$tap_logs"/regress_log_*; do
		[ -e "$f" ] || continue
		grep -qE '(^|\) )ok [0-9]+ # skip' "$f" || continue
		name=${f##*/regress_log_}
		grep -qE "^(\[[0-9:]+\] )?t/$name\.pl \.+ ok" "$log" && echo "t/$name.pl part"
	done
}

# Tally "name ... ok|FAILED" lines of pg_regress-style output.
count_regress() {
	local log=$1
	grep -E '\.\.\. (ok|FAILED)' "$log" | sed 's/^test /  /'
	tally "$(grep -cE '^(test | +)?[[:alnum:]_]+ +\.\.\. ok' "$log")" \
		"$(grep -cE '^(test | +)?[[:alnum:]_]+ +\.\.\. FAILED' "$log")"
}

run_make() {
	(cd "$work" && as_user make -s PG_CONFIG="$PG_CONFIG" ${bindir:+bindir="$bindir"} installcheck "$@")
}

# Run the TAP files one at a time, each under a time limit
# (IMSG_TAP_TIMEOUT seconds, default 300), so that one that hangs is
# reported as failed, with what its processes were doing, instead of
# stopping the whole run; prove's line for each file is printed as soon as
# the file ends.  Every file's logs are kept in $tap_logs (prove clears
# tmp_check at each start).  A file that timed out gets the line
# "t/NAME.pl .. Failed: timed out after N s" in $1.
tap_logs=
run_tap_files() {
	local log=$1 limit=${IMSG_TAP_TIMEOUT:-300} t one pid waited line
	tap_logs="$work/tap_logs"
	mkdir -p "$tap_logs"
	is_root && chown postgres: "$tap_logs"
	: >"$log"
	for t in "$work"/t/*.pl; do
		t=t/${t##*/}
		one="$work/tap_one.log"
		run_make REGRESS= ISOLATION= PROVE_FLAGS="--timer" PROVE_TESTS="$t" >"$one" 2>&1 &
		pid=$!
		waited=0
		while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt "$limit" ]; do
			sleep 1
			waited=$((waited + 1))
		done
		if kill -0 "$pid" 2>/dev/null; then
			line="$t .. Failed: timed out after $limit s"
			{
				echo "$line"
				echo "# processes when $t timed out:"
				ps -eo pid,ppid,stat,etime,wchan:24,args | grep -E 'postgres|corosync|pgbench|psql|perl' |
					grep -v grep | sed 's/^/#   /'
				# where it waited: its own log's end, and each server's
				# last lines that are not the test's statements
				for f in "$work"/tmp_check/log/*; do
					[ -f "$f" ] || continue
					echo "# --- the end of ${f##*/}:"
					grep -v 'LOG:  statement:' "$f" | tail -n 40 | sed 's/^/#   /'
				done
			} >>"$log"
			kill_tree "$pid"
			wait "$pid" 2>/dev/null
			cat "$one" >"$tap_logs/prove_${t##*/}.partial"
			# what it left running (servers are started with setsid); the
			# corosyncs are its own: t/ImsgGroup.pm lets one test at a time
			# run corosync on this machine
			pkill -KILL -f -- "$work/" 2>/dev/null
			pkill -KILL -f -- "imsg_corosync_|imsg_lab_|imsg_storm_" 2>/dev/null
		else
			wait "$pid"
			cat "$one" >>"$log"
			line=$(grep -E '^(\[[0-9:]+\] )?t/' "$one" | head -1)
		fi
		echo "  ${line:-$t .. no result line}"
		cp -a "$work"/tmp_check/log/. "$tap_logs"/ 2>/dev/null
	done
	return 0
}

# Kill process $1 and everything below it.
kill_tree() {
	local p
	for p in $(pgrep -P "$1"); do
		kill_tree "$p"
	done
	kill -KILL "$1" 2>/dev/null
}

for suite in $suites; do
	echo "== $suite"
	log="$work/$suite.log"
	case $suite in
		regress)
			run_make ISOLATION= TAP_TESTS= EXTRA_REGRESS_OPTS="--temp-instance=$work/tmp_regress" >"$log" 2>&1
			count_regress "$log" || cat "$work/regression.diffs" 2>/dev/null | head -200
			;;
		isolation)
			run_make REGRESS= TAP_TESTS= EXTRA_REGRESS_OPTS="--temp-instance=$work/tmp_isolation" >"$log" 2>&1
			count_regress "$log" || cat "$work/output_iso/regression.diffs" 2>/dev/null | head -200
			;;
		tap)
			run_tap_files "$log"
			ok=$(grep -cE '^(\[[0-9:]+\] )?t/[[:alnum:]_]+\.pl \.+ ok' "$log")
			skips=$(tap_skips "$log")
			nskipped=0
			if [ -n "$skips" ]; then
				if test_extra_all; then
					# everything is enabled (CI): a skip is a test that did not run
					echo "$skips" | sed 's/ whole$/ ... skipped: FAILED/; s/ part$/ ... some tests skipped: FAILED/; s/^/  /'
					nskipped=$(echo "$skips" | wc -l)
					ok=$((ok - $(echo "$skips" | grep -c ' part$')))
				else
					echo "  (skipped, not counted: IMSG_TEST_EXTRA=\"$IMSG_TEST_EXTRA\" lacks words of \"$IMSG_TEST_EXTRA_ALL\")"
					echo "$skips" | sed 's/ whole$/ (whole file)/; s/ part$/ (some tests)/; s/^/    /'
				fi
			fi
			if ! tally "$ok" \
				"$(grep -cE '^(\[[0-9:]+\] )?t/[[:alnum:]_]+\.pl \.+ ?($|Dubious|Failed|[0-9]+/)' "$log")" \
				"$nskipped"; then
				grep -hE 'not ok|^#' "$log" | grep -v '^#   \|^# processes when\|^# --- the end' | head -50
				# (a timed-out file's processes and log ends, whole)
				sed -n '/^# processes when/,/^[^#]/p' "$log" | grep '^#' | head -600
				for f in "$tap_logs"/regress_log_*; do
					grep -q "not ok" "$f" 2>/dev/null && { echo "--- $f"; grep -B5 -A20 "not ok" "$f" | head -80; }
				done
			fi
			;;
		fuzz)
			bash "$top/src/tools/fuzz.sh" "${IMSG_FUZZ_SECONDS:-20}" >"$log" 2>&1
			count_regress "$log" || grep -vE '\.\.\. (ok|FAILED)' "$log" | head -150
			;;
		*)
			echo "unknown suite $suite"
			failed=$((failed + 1))
			;;
	esac
done

case $mode in
	ubsan)
		echo "== ubsan"
		if check_ubsan_logs "$work"; then
			echo "  no runtime errors in the logs ... ok"
			passed=$((passed + 1))
		else
			echo "  no runtime errors in the logs ... FAILED"
			failed=$((failed + 1))
		fi
		;;
	valgrind)
		echo "== valgrind"
		if check_valgrind_logs "$work"; then
			echo "  no reports naming imessages sources ... ok"
			passed=$((passed + 1))
		else
			echo "  no reports naming imessages sources ... FAILED"
			failed=$((failed + 1))
		fi
		[ "$vg_failed" -gt 0 ] && echo "  ($vg_failed tests failed under valgrind, not counted)"
		;;
esac

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
