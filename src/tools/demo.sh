#!/usr/bin/env bash
# The main job: a throwaway cluster with imessages preloaded, a short demo
# of messages flowing to the replication manager and between two backends,
# and the monitoring views.  Installs what it needs when run as root; the
# cluster lives in a temporary directory and is removed at the end.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ensure_packages || exit 1
build_and_install || exit 1

dir=$(mktemp -d /tmp/imessages-demo.XXXXXX)
is_root && chown postgres: "$dir"
port=${PGPORT_DEMO:-54329}
cleanup() {
	as_user "$PG_BIN/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1
	rm -rf "$dir"
}
trap cleanup EXIT

as_user "$PG_BIN/initdb" -D "$dir/data" -A trust -U postgres >/dev/null || exit 1
cat >>"$dir/data/postgresql.conf" <<CONF
shared_preload_libraries = 'imessages'
port = $port
listen_addresses = ''
unix_socket_directories = '$dir'
imessages.buffer_size = 8MB
CONF
as_user "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null || {
	cat "$dir/server.log"
	exit 1
}

psql_demo() { as_user_stdin "$PG_BIN/psql" -X -h "$dir" -p "$port" -U postgres -d postgres "$@"; }

psql_demo -q <<'SQL'
\pset footer off
\echo '== imessages demo: a preloaded throwaway cluster'
CREATE EXTENSION imessages;
DO $$ BEGIN
  FOR i IN 1..500 LOOP EXIT WHEN imsg_manager_pid() IS NOT NULL; PERFORM pg_sleep(0.01); END LOOP;
END $$;
SELECT pid, backend_type, backend_start::time(0) FROM pg_stat_activity WHERE backend_type = 'imessages manager';

\echo '== 10,000 messages to the replication manager (recipient NULL), in one statement'
\timing on
SELECT count(imsg_send('change ' || i)) AS sent FROM generate_series(1, 10000) i;
\timing off
DO $$ BEGIN
  FOR i IN 1..500 LOOP
    EXIT WHEN (SELECT queued_messages FROM imsg_mailboxes WHERE pid = imsg_manager_pid()) = 0;
    PERFORM pg_sleep(0.01);
  END LOOP;
END $$;
SELECT pid, backend_type, queued_messages, received FROM imsg_mailboxes WHERE pid = imsg_manager_pid();
SQL

echo "== backend to backend: one session waits in imsg_receive(), another sends to it"
psql_demo -qAt -c "CREATE TABLE demo_receiver(pid int)" >/dev/null
psql_demo -q <<'SQL' >"$dir/receiver.out" 2>&1 &
INSERT INTO demo_receiver SELECT pg_backend_pid() FROM (SELECT count(*) FROM imsg_receive()) x;
\pset footer off
SELECT msg_id, sender_pid, msgtype, convert_from(payload, 'UTF8') AS payload, sent_at::time(3)
  FROM imsg_receive(10000) ;
SQL
receiver_job=$!
for _ in $(seq 1 200); do
	[ -n "$(psql_demo -qAt -c 'SELECT pid FROM demo_receiver')" ] && break
	sleep 0.05
done
psql_demo -q <<'SQL'
\pset footer off
SELECT pg_backend_pid() AS sender_pid,
       imsg_send('hello from ' || pg_backend_pid(), (SELECT pid FROM demo_receiver), 1) AS msg_id_1,
       imsg_send('second message', (SELECT pid FROM demo_receiver), 2) AS msg_id_2;
SQL
wait $receiver_job
echo "receiver got:"
cat "$dir/receiver.out"

psql_demo -q <<'SQL'
\pset footer off
\echo '== change sets: a short transactional workload on replicated tables'
CREATE TABLE accounts (id integer PRIMARY KEY, owner text, balance numeric(12,2));
CREATE TABLE transfers (id bigserial PRIMARY KEY, from_id integer, to_id integer, amount numeric(12,2));
-- a serial key: this node's sequence gets values of its own (in a group,
-- each node runs this with its own imessages.node_id)
SET imessages.node_id = 1;
SELECT imsg_node_sequence('transfers', 'id') AS first_transfer_id;
SELECT imsg_replicate('accounts'), imsg_replicate('transfers');
SELECT * FROM imsg_replicated_tables;
INSERT INTO accounts SELECT i, 'owner ' || i, 1000 FROM generate_series(1, 5) i;
DO $$
DECLARE a integer; b integer;
BEGIN
  FOR i IN 1..20 LOOP
    a := 1 + i % 5; b := 1 + (i * 3) % 5;
    UPDATE accounts SET balance = balance - 10 WHERE id = a;
    UPDATE accounts SET balance = balance + 10 WHERE id = b;
    INSERT INTO transfers (from_id, to_id, amount) VALUES (a, b, 10);
  END LOOP;
END $$;
BEGIN;
INSERT INTO transfers (from_id, to_id, amount) VALUES (1, 2, 999);
ROLLBACK;
SET imessages.commit_mode = 'sync';
UPDATE accounts SET owner = 'sync owner' WHERE id = 3;
RESET imessages.commit_mode;
DO $$ BEGIN
  FOR i IN 1..500 LOOP EXIT WHEN (SELECT change_sets_delivered FROM imsg_manager_status()) >= 3; PERFORM pg_sleep(0.01); END LOOP;
END $$;
\echo 'the change sets the manager delivered (the rolled-back transaction sent none):'
SELECT seq, origin_pid, xid, changes, bytes, delivered_at::time(3) FROM imsg_recent_changesets();
\echo 'the last one, decoded:'
SELECT d.* FROM imsg_recent_changesets(1) r, imsg_changeset_decode(r.payload) d;
\echo '== the manager and its helper backends'
DO $$ BEGIN
  FOR i IN 1..500 LOOP EXIT WHEN (SELECT count(*) FROM imsg_helpers() WHERE state = 'idle') > 0; PERFORM pg_sleep(0.01); END LOOP;
END $$;
SELECT imsg_ping() AS ping_manager, imsg_ping('helper') AS ping_helper;
SELECT pid, gcs, group_members, messages_received, messages_delivered, helpers_running,
       helpers_started, helpers_crashed, change_sets_delivered, change_set_bytes,
       change_sets_discarded, last_error FROM imsg_manager_status();
SELECT pid, state, jobs_done FROM imsg_helpers();
\echo '== monitoring views'
SELECT * FROM imsg_area;
SELECT pid, backend_type, queued_messages, queued_bytes, oldest_sent_at, sent, received FROM imsg_mailboxes;
SQL
echo "== done; the cluster in $dir is removed"
