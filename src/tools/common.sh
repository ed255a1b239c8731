# Shared by run-tests.sh and demo.sh: packages, build, install, and running
# commands as a non-root user.  Source it; it sets 'top' and 'PG_CONFIG'.

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
PG_BIN=$(dirname "$PG_CONFIG")
PACKAGES="make gcc postgresql-15 postgresql-server-dev-15 postgresql-contrib libipc-run-perl"

is_root() { [ "$(id -u)" -eq 0 ]; }

# Install what is missing (root only; otherwise say what to install).
ensure_packages() {
	local missing="" p
	for p in $PACKAGES; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
			missing="$missing $p"
	done
	[ -z "$missing" ] && return 0
	if ! is_root; then
		echo "missing packages:$missing (install them as root, or run this as root)" >&2
		return 1
	fi
	echo "installing:$missing"
	apt-get update -qq >/dev/null &&
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

# Build with -Werror and install into the PostgreSQL 15 tree.
build_and_install() {
	make -C "$top" -s PG_CONFIG="$PG_CONFIG" COPT=-Werror clean >/dev/null 2>&1
	make -C "$top/src/test/modules/imessages_test" -s PG_CONFIG="$PG_CONFIG" clean >/dev/null 2>&1
	make -C "$top" -s PG_CONFIG="$PG_CONFIG" COPT=-Werror || return 1
	make -C "$top/src/test/modules/imessages_test" -s PG_CONFIG="$PG_CONFIG" COPT=-Werror || return 1
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
