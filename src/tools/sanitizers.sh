# Sourced by run-tests.sh (after common.sh): what --ubsan and --valgrind
# need besides the normal run.

# Fail (listing them) if any server or test log under $1 has a UBSan
# report.  Only logs: the copy of the checkout there holds sources too.
check_ubsan_logs() {
	local dir=$1 hits
	hits=$(find "$dir" -type f \( -name '*.log' -o -name 'regress_log_*' \
		-o -name '*.diffs' -o -path '*/results/*' \) -print0 |
		xargs -0 -r grep -l 'runtime error:')
	[ -z "$hits" ] && return 0
	for f in $hits; do
		echo "--- $f"
		grep -B2 -A12 'runtime error:' "$f" | head -40
	done
	return 1
}

# A bindir in $1/vgbin whose postgres runs the real one under valgrind,
# for "make installcheck bindir=...": the other programs are symlinks,
# except pg_ctl, a copy, so that it starts the postgres next to it (initdb
# resolves its symlink and bootstraps with the real postgres, quickly).
# Valgrind writes one log per process into $1/valgrind/.  Prints the path.
make_valgrind_bindir() {
	local vg=$1/vgbin logs=$1/valgrind f
	mkdir -p "$vg" "$logs" || return 1
	for f in "$PG_BIN"/*; do
		ln -s "$f" "$vg/$(basename "$f")"
	done
	rm -f "$vg/postgres" "$vg/pg_ctl"
	cp "$PG_BIN/pg_ctl" "$vg/pg_ctl"
	cat >"$vg/postgres" <<-WRAPPER
	#!/bin/sh
	exec valgrind --quiet --trace-children=yes --leak-check=no \\
	    --num-callers=40 --fullpath-after= --gen-suppressions=all \\
	    --error-markers=VALGRINDERROR-BEGIN,VALGRINDERROR-END \\
	    --suppressions=$top/src/tools/valgrind.supp \\
	    --log-file=$logs/%p.log "$PG_BIN/postgres" "\$@"
	WRAPPER
	chmod 755 "$vg/postgres"
	is_root && chown -R postgres: "$vg" "$logs"
	echo "$vg"
}

# Fail if a valgrind report under $1/valgrind has a stack naming one of
# imessages' own sources (paths under the checkout, or its libraries).
# The server makes benign reports of its own; those are counted only.
check_valgrind_logs() {
	local dir=$1/valgrind ours=0 others=0 f
	for f in "$dir"/*.log; do
		[ -s "$f" ] || continue
		# one report per record: VALGRINDERROR-BEGIN .. -END
		eval "$(awk -v top="$top/" -v file="$f" '
			/VALGRINDERROR-BEGIN/ { rep = ""; inrep = 1; next }
			/VALGRINDERROR-END/ {
				inrep = 0
				if (index(rep, top) || rep ~ /imessages(_test)?\.so/) {
					ours++
					print "--- " file > "/dev/stderr"
					print rep > "/dev/stderr"
				} else
					others++
				next
			}
			inrep { rep = rep $0 "\n" }
			END { printf "ours=$((ours + %d)); others=$((others + %d))\n", ours, others }
		' "$f")"
	done
	echo "  valgrind: $ours reports in imessages code, $others elsewhere (server), $(ls "$dir" | wc -l) processes"
	[ "$ours" -eq 0 ]
}
