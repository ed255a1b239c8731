#!/usr/bin/env bash
# Sync commits per node when three nodes update the same rows at once.
# Usage: bench/sync_fairness.sh (FAIRNESS_REPS, FAIRNESS_SECONDS,
# FAIRNESS_ROWS, FAIRNESS_TRIES in the environment change the defaults 3,
# 8, 50 and 0: pgbench --max-tries, 0 retrying 40001 without limit, 1 not
# retrying, as in issue 17's report).
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../src/tools/common.sh"
ensure_packages $PACKAGES || exit 1
build_and_install || exit 1
work=$(make_workdir) || exit 1
cd "$work" || exit 1
as_postgres() { if is_root; then runuser -u postgres -- "$@"; else "$@"; fi; }
as_postgres env FAIRNESS_REPS="${FAIRNESS_REPS:-3}" FAIRNESS_SECONDS="${FAIRNESS_SECONDS:-8}" \
	FAIRNESS_ROWS="${FAIRNESS_ROWS:-50}" FAIRNESS_TRIES="${FAIRNESS_TRIES:-0}" \
	make -s PG_CONFIG="$PG_CONFIG" installcheck REGRESS= ISOLATION= \
	PROVE_TESTS=bench/sync_fairness.pl PROVE_FLAGS=--verbose </dev/null 2>&1 | grep -E '^# |^ok|^not ok'
