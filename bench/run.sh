#!/usr/bin/env bash
# Benchmark imessages against LISTEN/NOTIFY and shm_mq on a throwaway
# preloaded cluster.  Usage: bench/run.sh [--quick] [--reps N]
# Prints medians (min-max) with the baselines of the same run and their
# ratios; writes bench/out/results.csv, bench/out/summary.txt and
# bench/out/throughput.png.  As root it installs what it needs with apt.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../src/tools/common.sh"
PACKAGES="$PACKAGES gnuplot-nox python3"

ensure_packages || exit 1
build_and_install || exit 1
make -C "$top/bench/imessages_bench" -s PG_CONFIG="$PG_CONFIG" COPT=-Werror install >/dev/null || exit 1
make -C "$top" -s -f bench/pgclient.mk PG_CONFIG="$PG_CONFIG" || exit 1
mkdir -p "$top/bench/out"
is_root && chown postgres: "$top/bench/out"
exec python3 "$top/bench/bench.py" --pg-bin "$PG_BIN" --top "$top" "$@"
