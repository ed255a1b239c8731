# Shared by run-tests.sh and demo.sh: packages, build, install, and running
# commands as a non-root user.  Source it; it sets 'top' and 'PG_CONFIG'.

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# IMSG_PG_ROOT=DIR builds, installs and tests against a private copy of the
# PostgreSQL 15 server made under DIR on first use, leaving the system tree
# alone: for sanitizer builds, and for several checkouts testing at once.
# The server is relocatable (it finds its lib and share directories relative
# to its own binary), so a copy of the two trees is a complete installation.
[ -n "${IMSG_PG_ROOT:-}" ] && PG_CONFIG=$IMSG_PG_ROOT/usr/lib/postgresql/15/bin/pg_config
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
export PG_CONFIG
PG_BIN=$(dirname "$PG_CONFIG")
PACKAGES="make gcc postgresql-15 postgresql-server-dev-15 postgresql-contrib libipc-run-perl corosync libcpg-dev libquorum-dev iproute2"
FUZZ_PACKAGES="clang-14 libclang-rt-14-dev"		# src/tools/fuzz.sh
VALGRIND_PACKAGES="valgrind"					# run-tests.sh --valgrind
# What TAP tests may need beyond a plain "make installcheck" against a
# user's server (t/ImsgGroup.pm): a test needing a word not in
# IMSG_TEST_EXTRA skips.  run-tests.sh and .ci/run enable them all.
IMSG_TEST_EXTRA_ALL="corosync netns test_module timing"

# True if IMSG_TEST_EXTRA names every word of IMSG_TEST_EXTRA_ALL.
test_extra_all() {
	local w
	for w in $IMSG_TEST_EXTRA_ALL; do
		case " ${IMSG_TEST_EXTRA:-} " in
			*" $w "*) ;;
			*) return 1 ;;
		esac
	done
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# Install what is missing of the packages named (default: $PACKAGES), as
# root only; otherwise say what to install.
ensure_packages() {
	local missing="" p
	for p in ${*:-$PACKAGES}; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
			missing="$missing $p"
	done
	[ -z "$missing" ] && { copy_pg_tree; return; }
	if ! is_root; then
		echo "missing packages:$missing (install them as root, or run this as root)" >&2
		return 1
	fi
	echo "installing:$missing"
	apt-get update -qq >/dev/null &&
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null &&
		copy_pg_tree
}

# Make the private copy IMSG_PG_ROOT names, once.
copy_pg_tree() {
	[ -z "${IMSG_PG_ROOT:-}" ] && return 0
	[ -x "$PG_CONFIG" ] && return 0
	mkdir -p "$IMSG_PG_ROOT/usr/lib/postgresql" "$IMSG_PG_ROOT/usr/share/postgresql" \
		"$IMSG_PG_ROOT/usr/include" &&
		cp -a /usr/lib/postgresql/15 "$IMSG_PG_ROOT/usr/lib/postgresql/" &&
		cp -a /usr/share/postgresql/15 "$IMSG_PG_ROOT/usr/share/postgresql/" &&
		ln -sfn /usr/include/postgresql "$IMSG_PG_ROOT/usr/include/postgresql" &&
		chmod 755 "$IMSG_PG_ROOT" && return 0
	echo "could not copy the PostgreSQL 15 tree into $IMSG_PG_ROOT" >&2
	return 1
}

# Build with -Werror (and IMSG_COPT, e.g. sanitizer flags) and install into
# the PostgreSQL 15 tree.
build_and_install() {
	make -C "$top" -s PG_CONFIG="$PG_CONFIG" COPT=-Werror clean >/dev/null 2>&1
	make -C "$top/src/test/modules/imessages_test" -s PG_CONFIG="$PG_CONFIG" clean >/dev/null 2>&1
	make -C "$top" -s PG_CONFIG="$PG_CONFIG" COPT="-Werror ${IMSG_COPT:-}" || return 1
	make -C "$top/src/test/modules/imessages_test" -s PG_CONFIG="$PG_CONFIG" COPT="-Werror ${IMSG_COPT:-}" || return 1
	if [ -w "$($PG_CONFIG --pkglibdir)" ]; then
		make -C "$top" -s PG_CONFIG="$PG_CONFIG" install >/dev/null || return 1
		# test-only extension used by t/020_c_api.pl
		make -C "$top/src/test/modules/imessages_test" -s PG_CONFIG="$PG_CONFIG" install >/dev/null || return 1
	else
		echo "cannot write $($PG_CONFIG --pkglibdir): run as root to install" >&2
		return 1
	fi
}

# A copy of the checkout that the test user can write in (pg_regress and
# prove write into the current directory).
make_workdir() {
	local dir
	dir=$(mktemp -d /tmp/imessages.XXXXXX)
	(cd "$top" && tar --exclude=.git --exclude='*.o' --exclude='*.so' -cf - .) | tar -C "$dir" -xf -
	is_root && chown -R postgres: "$dir"
	chmod 755 "$dir"
	echo "$dir"
}

# Run a command as the unprivileged test user, with no stdin.
as_user() {
	if is_root; then
		runuser -u postgres -- "$@" </dev/null
	else
		"$@" </dev/null
	fi
}

# Same, keeping stdin (for scripts fed to psql).
as_user_stdin() {
	if is_root; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}
