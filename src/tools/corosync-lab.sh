#!/bin/bash
# A group of N corosync nodes on one machine, for tests and the benchmark:
# each node is a network namespace with its own address (10.99.0.I on a
# private bridge) and its own corosync, so that killing one node's corosync
# is a real node failure to the others.  Runs as an ordinary user: the
# namespaces are made in a user namespace of its own (unshare -c, so that
# PostgreSQL started inside is not "root"), and nothing outside it is
# touched but DIR and the /dev/shm files corosync makes.
#
#   corosync-lab.sh start DIR N     make N nodes, start their corosyncs
#   corosync-lab.sh exec DIR I CMD  run CMD in node I's network (e.g. pg_ctl)
#   corosync-lab.sh kill DIR I      SIGKILL node I's corosync, keep it down
#   corosync-lab.sh up DIR I        start node I's corosync again
#   corosync-lab.sh stop DIR        stop every corosync, remove the namespaces
#
# A SIGKILLed corosync leaves its /dev/shm/qb-* files behind: kill removes them.
set -euo pipefail

cmd=${1:?usage: corosync-lab.sh start|exec|kill|up|stop DIR ...}
dir=${2:?DIR missing}
dir=$(cd "$dir" && pwd)

corosync_bin() {
	local c
	# (command -v names a file it cannot execute if it finds no other)
	c=$(command -v corosync 2>/dev/null) && [ -x "$c" ] && { echo "$c"; return; }
	[ -x /usr/sbin/corosync ] && { echo /usr/sbin/corosync; return; }
	echo "corosync-lab: corosync is not installed" >&2
	exit 1
}

write_conf() {					# write_conf I N
	local i=$1 n=$2 j
	mkdir -p "$dir/n$i/run"
	{
		printf 'totem {\n\tversion: 2\n\tcluster_name: imsglab\n\tcrypto_cipher: none\n\tcrypto_hash: none\n'
		printf '\ttoken: 1000\n}\n'
		printf 'system {\n\trun_dir: %s\n\tstate_dir: %s\n}\n' "$dir/n$i/run" "$dir/n$i/run"
		printf 'logging {\n\tto_stderr: yes\n\tto_logfile: no\n\tto_syslog: no\n}\n'
		# votequorum: a node alone (cut off, or just restarted) is not quorate
		printf 'quorum {\n\tprovider: corosync_votequorum\n}\n'
		printf 'uidgid {\n\tuid: %s\n\tgid: %s\n}\n' "$(id -un)" "$(id -gn)"
		printf 'nodelist {\n'
		for j in $(seq 1 "$n"); do
			printf '\tnode {\n\t\tname: node%d\n\t\tnodeid: %d\n\t\tring0_addr: 10.99.0.%d\n\t}\n' "$j" "$j" "$j"
		done
		printf '}\n'
	} > "$dir/n$i/corosync.conf"
}

# Runs inside the user namespace, in the bridge's network namespace.
inside() {
	local n=$1 i pid coro
	coro=$(corosync_bin)
	ip link set lo up
	ip link add br0 type bridge
	ip link set br0 up
	for i in $(seq 1 "$n"); do
		# the node: a process holding a network namespace of its own
		unshare -n sh -c "echo \$\$ > '$dir/n$i/holder.pid'; exec sleep 2147483647" &
		while [ ! -s "$dir/n$i/holder.pid" ]; do sleep 0.02; done
		pid=$(cat "$dir/n$i/holder.pid")
		ip link add "veth$i" type veth peer name eth0 netns "$pid"
		ip link set "veth$i" master br0 up
		nsenter -t "$pid" -n sh -c "ip link set lo up && ip addr add 10.99.0.$i/24 dev eth0 && ip link set eth0 up"
	done
	for i in $(seq 1 "$n"); do
		(
			pid=$(cat "$dir/n$i/holder.pid")
			while [ ! -e "$dir/stop" ]; do
				if [ -e "$dir/n$i/up" ]; then
					# its own /run: corosync's pid file and socket names are fixed
					nsenter -t "$pid" -n unshare -m sh -c \
						"mount --bind '$dir/n$i/run' /run && exec '$coro' -f -c '$dir/n$i/corosync.conf'" \
						>> "$dir/n$i/corosync.log" 2>&1 &
					echo $! > "$dir/n$i/corosync.pid"
					wait $! || true
					rm -f "$dir/n$i/corosync.pid"
				fi
				sleep 0.05
			done
		) &
	done
	echo ready > "$dir/ready"
	while [ ! -e "$dir/stop" ]; do sleep 0.1; done
	for i in $(seq 1 "$n"); do
		[ -s "$dir/n$i/corosync.pid" ] && kill -TERM "$(cat "$dir/n$i/corosync.pid")" 2> /dev/null || true
	done
	wait_gone corosync
	for i in $(seq 1 "$n"); do kill "$(cat "$dir/n$i/holder.pid")" 2> /dev/null || true; done
	wait
}

wait_gone() {					# until no node's $1.pid file is left
	local k f
	for k in $(seq 1 200); do
		f=$(ls "$dir"/n*/"$1".pid 2> /dev/null || true)
		[ -z "$f" ] && return 0
		sleep 0.05
	done
}

node_pid() { cat "$dir/n$1/holder.pid"; }

case $cmd in
	start)
		n=${3:?N missing}
		[ "$(id -u)" != 0 ] || { echo "corosync-lab: run as the PostgreSQL user, not root" >&2; exit 1; }
		corosync_bin > /dev/null
		rm -f "$dir/ready" "$dir/stop"
		for i in $(seq 1 "$n"); do
			write_conf "$i" "$n"
			rm -f "$dir/n$i/holder.pid" "$dir/n$i/corosync.pid"
			touch "$dir/n$i/up"
		done
		setsid unshare -c -n -m --keep-caps --fork bash "$0" inside "$dir" "$n" \
			> "$dir/lab.log" 2>&1 < /dev/null &
		echo $! > "$dir/lab.pid"
		for k in $(seq 1 200); do
			[ -e "$dir/ready" ] && exit 0
			kill -0 "$(cat "$dir/lab.pid")" 2> /dev/null || break
			sleep 0.05
		done
		echo "corosync-lab: the namespaces did not come up" >&2
		cat "$dir/lab.log" >&2
		exit 1
		;;
	inside)
		inside "${3:?}"
		;;
	exec)
		i=${3:?node number missing}
		shift 3
		exec nsenter -t "$(node_pid "$i")" -U -n --preserve-credentials "$@"
		;;
	kill)
		i=${3:?node number missing}
		rm -f "$dir/n$i/up"
		pid=$(cat "$dir/n$i/corosync.pid" 2> /dev/null || true)
		[ -n "$pid" ] || exit 0
		kill -KILL "$pid"
		while kill -0 "$pid" 2> /dev/null; do sleep 0.02; done
		rm -rf /dev/shm/qb-*-"$pid"-* /dev/shm/qb-"$pid"-*
		;;
	up)
		touch "$dir/n${3:?node number missing}/up"
		;;
	stop)
		[ -s "$dir/lab.pid" ] || exit 0
		touch "$dir/stop"
		pid=$(cat "$dir/lab.pid")
		for k in $(seq 1 400); do
			kill -0 "$pid" 2> /dev/null || break
			sleep 0.05
		done
		kill -KILL -- "-$pid" 2> /dev/null || true
		rm -f "$dir/lab.pid"
		;;
	*)
		echo "corosync-lab: unknown command $cmd" >&2
		exit 2
		;;
esac
