#!/usr/bin/env bash
# Build, install and run every imessages test suite against temporary
# preloaded instances: pg_regress, isolation, TAP.  Prints one line per
# test and a final "N passed, M failed"; exits non-zero if anything failed
# or a suite ran nothing.  As root it installs missing packages with apt
# and runs the tests as the 'postgres' user.
#
# Usage: src/tools/run-tests.sh [regress] [isolation] [tap]   (default: all)
set -u
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

suites=${*:-regress isolation tap}
passed=0
failed=0

ensure_packages || exit 1
build_and_install || { echo "0 passed, 1 failed"; exit 1; }
work=$(make_workdir)
trap 'rm -rf "$work"' EXIT

# Add a suite's ok/failed counts to the totals; a suite that ran nothing
# counts as a failure.  Returns non-zero if the suite failed.
tally() {
	local ok=$1 bad=$2
	if [ $((ok + bad)) -eq 0 ]; then
		echo "  suite ran no test"
		bad=1
	fi
	passed=$((passed + ok))
	failed=$((failed + bad))
	return $((bad > 0))
}

# Tally "name ... ok|FAILED" lines of pg_regress-style output.
count_regress() {
	local log=$1
	grep -E '\.\.\. (ok|FAILED)' "$log" | sed 's/^test /  /'
	tally "$(grep -cE '^(test | +)?[[:alnum:]_]+ +\.\.\. ok' "$log")" \
		"$(grep -cE '^(test | +)?[[:alnum:]_]+ +\.\.\. FAILED' "$log")"
}

run_make() {
	(cd "$work" && as_user make -s PG_CONFIG="$PG_CONFIG" installcheck "$@")
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
			run_make REGRESS= ISOLATION= PROVE_FLAGS="--timer" >"$log" 2>&1
			grep -E '^(\[[0-9:]+\] )?t/' "$log" | sed 's/^/  /'
			if ! tally "$(grep -cE '^(\[[0-9:]+\] )?t/[[:alnum:]_]+\.pl \.+ ok' "$log")" \
				"$(grep -cE '^(\[[0-9:]+\] )?t/[[:alnum:]_]+\.pl \.+ ?($|Dubious|Failed|[0-9]+/)' "$log")"; then
				grep -hE 'not ok|^#' "$log" | head -50
				for f in "$work"/tmp_check/log/regress_log_*; do
					grep -q "not ok" "$f" 2>/dev/null && { echo "--- $f"; grep -B5 -A20 "not ok" "$f" | head -80; }
				done
			fi
			;;
		*)
			echo "unknown suite $suite"
			failed=$((failed + 1))
			;;
	esac
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
