#!/usr/bin/env python3
"""imessages benchmark: imessages side by side with LISTEN/NOTIFY and shm_mq.

Run through bench/run.sh, which builds and installs what this needs.  Starts
a throwaway cluster with imessages preloaded, runs every scenario several
times, and reports medians (min-max) of imessages and its baseline from the
same run, their ratio, and the target.  Writes bench/out/results.csv (every
repetition), bench/out/summary.txt and bench/out/throughput.png.
"""
import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

PORT = 54331
IS_ROOT = os.geteuid() == 0


def as_user(cmd):
    return ["runuser", "-u", "postgres", "--"] + cmd if IS_ROOT else cmd


class Cluster:
    def __init__(self, pg_bin, port=PORT, extra_conf="", ctl_prefix=()):
        self.pg_bin = pg_bin
        self.port = port
        self.extra_conf = extra_conf
        self.ctl_prefix = list(ctl_prefix)  # runs pg_ctl start (a network namespace)
        self.dir = tempfile.mkdtemp(prefix="imessages-bench.")
        if IS_ROOT:
            shutil.chown(self.dir, "postgres", "postgres")
        self.data = os.path.join(self.dir, "data")
        self.conninfo = f"host={self.dir} port={port} dbname=postgres user=postgres"
        self.env = dict(os.environ, PGHOST=self.dir, PGPORT=str(port),
                        PGUSER="postgres", PGDATABASE="postgres")

    def bin(self, name):
        return os.path.join(self.pg_bin, name)

    def start(self):
        subprocess.run(as_user([self.bin("initdb"), "-D", self.data, "-A", "trust",
                                "-U", "postgres"]), check=True, capture_output=True)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(f"""
shared_preload_libraries = 'imessages'
port = {self.port}
listen_addresses = ''
unix_socket_directories = '{self.dir}'
max_connections = 60
max_worker_processes = 20
shared_buffers = 256MB
synchronous_commit = off
imessages.buffer_size = 8MB
imessages.min_helpers = 1
{self.extra_conf}
""")
        self.pg_start()

    def pg_start(self):
        subprocess.run(as_user(self.ctl_prefix + [self.bin("pg_ctl"), "-D", self.data, "-l",
                                os.path.join(self.dir, "server.log"), "-w", "start"]),
                       check=True, capture_output=True)

    def pg_stop(self):
        subprocess.run(as_user([self.bin("pg_ctl"), "-D", self.data, "-m", "fast", "stop"]),
                       check=True, capture_output=True)

    def log(self):
        with open(os.path.join(self.dir, "server.log")) as f:
            return f.read()

    def stop(self):
        subprocess.run(as_user([self.bin("pg_ctl"), "-D", self.data, "-m", "fast", "stop"]),
                       capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def psql(self, sql, env=None):
        r = subprocess.run(as_user([self.bin("psql"), "-XAtq", "-v", "ON_ERROR_STOP=1",
                                    "-c", sql]),
                           env=env or self.env, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"psql failed: {sql[:200]}\n{r.stderr}")
        return r.stdout.strip()

    def psql_bg(self, sql):
        return subprocess.Popen(as_user([self.bin("psql"), "-XAtq", "-v", "ON_ERROR_STOP=1",
                                         "-c", sql]),
                                env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def pgbench(self, args, env=None):
        r = subprocess.run(as_user([self.bin("pgbench")] + args), env=env or self.env,
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"pgbench failed: {args}\n{r.stderr}")
        for line in r.stdout.splitlines():
            if line.startswith("tps = "):
                return float(line.split()[2])
        raise RuntimeError(f"no tps in pgbench output: {r.stdout}")

    def manager_cpu(self):
        """(CPU seconds the manager has used, change sets it has delivered)"""
        pid, delivered = self.psql(
            "SELECT pid, change_sets_delivered FROM imsg_manager_status()").split("|")
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # utime and stime are fields 14 and 15 of stat(5), in clock ticks
        ticks = int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK"), int(delivered)

    def wait_for(self, sql, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.psql(sql) == "t":
                return
            time.sleep(0.02)
        raise RuntimeError(f"timed out waiting for: {sql}")


def ImsgIdle(nodes, timeout=300):
    """Wait until every node is at the same group position and has applied it."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        states = [c.psql("SELECT group_position || ' ' || (change_sets_to_apply + group_position - applied_position) "
                         "FROM imsg_manager_status()").split() for c in nodes]
        if len({s[0] for s in states}) == 1 and all(s[1] == "0" for s in states):
            return
        time.sleep(0.1)
    raise RuntimeError("the group did not become idle")


class LabGroup:
    """N clusters, each in a network namespace with its own corosync
    (src/tools/corosync-lab.sh), joined in one CPG group."""

    def __init__(self, pg_bin, top, n):
        self.lab = os.path.join(top, "src", "tools", "corosync-lab.sh")
        self.dir = tempfile.mkdtemp(prefix="imessages-lab.")
        if IS_ROOT:
            shutil.chown(self.dir, "postgres", "postgres")
        self.n = n
        self.pg_bin = pg_bin
        self.nodes = [self.new_node(i) for i in range(1, n + 1)]

    def new_node(self, i):
        """node i's cluster, not started (a new one: initdb at start)"""
        c = Cluster(self.pg_bin, port=PORT + 10 + i, ctl_prefix=["bash", self.lab, "exec", self.dir, str(i)],
                    # flow control bounds what a node has to apply, not what
                    # its manager has to multicast: an async storm can
                    # outrun delivery, and beyond max_local_writes
                    # undelivered commits the committers fail
                    extra_conf=f"imessages.gcs = corosync\nimessages.gcs_group = 'bench'\n"
                               f"imessages.node_name = 'node{i}'\nimessages.node_id = {i}\n"
                               f"imessages.commit_timeout = 60000\n"
                               f"imessages.max_local_writes = 262144")
        c.extra_conf += f"\nimessages.node_conninfo = '{c.conninfo}'"
        return c

    def start(self):
        subprocess.run(as_user(["bash", self.lab, "start", self.dir, str(self.n)]), check=True)
        for c in self.nodes:
            c.start()
        for c in self.nodes:
            # each node set up by hand: imsg_replicate() acts here only
            c.psql("SET session_replication_role = replica; CREATE EXTENSION imessages; "
                   "CREATE TABLE bench_rep (id bigint PRIMARY KEY, v text); "
                   "CREATE SEQUENCE bench_rep_seq; SELECT imsg_replicate('bench_rep')")
        for c in self.nodes:
            c.wait_for(f"SELECT group_members = {self.n} AND group_quorate AND state = 'synced' "
                       "AND group_id = (SELECT group_id FROM imsg_state) FROM imsg_manager_status()")

    def stop(self):
        for c in self.nodes:
            c.stop()
        subprocess.run(as_user(["bash", self.lab, "stop", self.dir]), capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


SETUP_SQL = r"""
CREATE EXTENSION imessages;
CREATE EXTENSION imessages_bench;
CREATE TABLE bench_rx (pid integer, t_end float8, got integer);
CREATE TABLE bench_sink (idx integer PRIMARY KEY, pid integer);
CREATE TABLE bench_stop (stop boolean);

-- n messages of size bytes to the manager in one statement; msgs/s until
-- the manager has taken out the last one
CREATE FUNCTION bench_sql_to_manager(n integer, size integer) RETURNS float8
LANGUAGE plpgsql AS $$
DECLARE
  p bytea := convert_to(repeat('x', size), 'UTF8');
  base bigint := (SELECT messages_received FROM imsg_manager_status());
  t0 timestamptz := clock_timestamp();
BEGIN
  PERFORM count(imsg_send(p)) FROM generate_series(1, n);
  LOOP
    EXIT WHEN (SELECT messages_received FROM imsg_manager_status()) >= base + n;
    PERFORM pg_sleep(0.0002);
  END LOOP;
  RETURN n / extract(epoch FROM clock_timestamp() - t0);
END $$;

-- n messages to process pid; returns the send start (epoch seconds)
CREATE FUNCTION bench_sql_to_pid(n integer, size integer, pid integer) RETURNS float8
LANGUAGE plpgsql AS $$
DECLARE
  p bytea := convert_to(repeat('x', size), 'UTF8');
  t0 float8 := extract(epoch FROM clock_timestamp());
BEGIN
  PERFORM count(imsg_send(p, pid)) FROM generate_series(1, n);
  RETURN t0;
END $$;

-- the receiving backend: takes out n messages, committing every batch
CREATE PROCEDURE bench_recv(n integer) LANGUAGE plpgsql AS $$
DECLARE total integer := 0; k integer;
BEGIN
  DELETE FROM bench_rx;
  INSERT INTO bench_rx (pid) SELECT pg_backend_pid() FROM (SELECT count(*) FROM imsg_receive()) x;
  COMMIT;
  WHILE total < n LOOP
    SELECT count(*) INTO k FROM imsg_receive(20000, 20000);
    EXIT WHEN k = 0;
    total := total + k;
    COMMIT;
  END LOOP;
  UPDATE bench_rx SET t_end = extract(epoch FROM clock_timestamp()), got = total;
  COMMIT;
END $$;

-- backend-to-backend round trips through SQL: the echo side
CREATE PROCEDURE bench_echo() LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
  DELETE FROM bench_rx;
  INSERT INTO bench_rx (pid) SELECT pg_backend_pid() FROM (SELECT count(*) FROM imsg_receive()) x;
  COMMIT;
  LOOP
    SELECT * INTO r FROM imsg_receive(10000, 1);
    EXIT WHEN r IS NULL OR r.msgtype = 9;
    PERFORM imsg_send(r.payload, r.sender_pid, 1);
  END LOOP;
END $$;

-- ... and the pinging side: p50 of k round trips, in microseconds
CREATE FUNCTION bench_sql_pingpong(k integer, pid integer) RETURNS float8[]
LANGUAGE plpgsql AS $$
DECLARE
  t timestamptz;
  d float8[] := '{}';
  r record;
BEGIN
  FOR i IN 1..k + 20 LOOP
    t := clock_timestamp();
    PERFORM imsg_send('\x78'::bytea, pid, 1);
    SELECT * INTO r FROM imsg_receive(10000, 1);
    IF r IS NULL THEN RAISE EXCEPTION 'no echo'; END IF;
    IF i > 20 THEN
      d := d || (extract(epoch FROM clock_timestamp() - t) * 1e6)::float8;
    END IF;
  END LOOP;
  PERFORM imsg_send('\x00'::bytea, pid, 9);
  RETURN ARRAY[(SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY x) FROM unnest(d) x),
               (SELECT min(x) FROM unnest(d) x), (SELECT max(x) FROM unnest(d) x)];
END $$;

CREATE FUNCTION bench_ping(k integer) RETURNS float8[] LANGUAGE plpgsql AS $$
DECLARE d float8[] := '{}';
BEGIN
  PERFORM imsg_ping() FROM generate_series(1, 20);
  SELECT array_agg(extract(epoch FROM imsg_ping()) * 1e6) INTO d FROM generate_series(1, k);
  RETURN ARRAY[(SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY x) FROM unnest(d) x),
               (SELECT min(x) FROM unnest(d) x), (SELECT max(x) FROM unnest(d) x)];
END $$;

-- a sink for the 8 senders -> 8 receivers scenario
CREATE PROCEDURE bench_drain(sink integer) LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM bench_sink WHERE idx = sink;
  INSERT INTO bench_sink VALUES (sink, pg_backend_pid());
  PERFORM count(*) FROM imsg_receive();
  COMMIT;
  LOOP
    PERFORM count(*) FROM imsg_receive(100, 5000);
    COMMIT;
    EXIT WHEN EXISTS (SELECT 1 FROM bench_stop);
  END LOOP;
END $$;
"""


def parse_array(s):
    return [float(x) for x in s.strip("{}").split(",")]


class Bench:
    def __init__(self, args, cluster):
        self.args = args
        self.c = cluster
        self.rows = []          # (scenario, system, size, value, unit)
        q = args.quick
        self.reps = args.reps or (3 if q else 5)
        self.n_msgs = 20000 if q else 100000
        self.k_rt = 500 if q else 3000
        self.duration = 1 if q else 5
        self.tpcb_duration = 2 if q else 10
        self.pgclient = os.path.join(args.top, "bench", "pgclient")
        self.workdir = tempfile.mkdtemp(prefix="imessages-bench-scripts.")
        os.chmod(self.workdir, 0o755)

    def record(self, scenario, system, size, value, unit):
        self.rows.append((scenario, system, size, value, unit))
        print(f"  {scenario:<22} {system:<22} {size:>6} {value:>14.1f} {unit}", flush=True)

    def n_for(self, size):
        return self.n_msgs if size <= 1024 else self.n_msgs // 4

    # a. SQL path, one sender
    def sql_to_manager(self, size):
        n = self.n_for(size)
        v = float(self.c.psql(f"SELECT bench_sql_to_manager({n}, {size})"))
        self.record("sql_send", "imessages->manager", size, v, "msg/s")

    def sql_to_backend(self, size):
        n = self.n_for(size)
        self.c.psql("DELETE FROM bench_rx")
        rx = self.c.psql_bg(f"CALL bench_recv({n})")
        self.c.wait_for("SELECT count(*) = 1 FROM bench_rx")
        pid = self.c.psql("SELECT pid FROM bench_rx")
        t0 = float(self.c.psql(f"SELECT bench_sql_to_pid({n}, {size}, {pid})"))
        out, err = rx.communicate(timeout=300)
        if rx.returncode != 0:
            raise RuntimeError(f"receiver failed: {err}")
        t_end, got = self.c.psql("SELECT t_end, got FROM bench_rx").split("|")
        if int(got) != n:
            raise RuntimeError(f"receiver got {got} of {n} messages")
        self.record("sql_send", "imessages->backend", size, n / (float(t_end) - t0), "msg/s")

    def notify_batch(self, size):
        n = self.n_for(size)
        # distinct payloads: NOTIFY folds identical ones within a transaction
        nsize = min(size, 7999)
        lst = subprocess.Popen([self.pgclient, "notify-batch", self.c.conninfo, "bench", str(n)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if lst.stdout.readline().strip() != "READY":
            raise RuntimeError("listener did not start: " + lst.stderr.read())
        out = self.c.psql(f"""BEGIN;
SELECT extract(epoch FROM clock_timestamp());
SELECT count(pg_notify('bench', lpad(g::text, {nsize}, 'x'))) FROM generate_series(1, {n}) g;
COMMIT;""")
        t0 = float(out.splitlines()[0])
        line, err = lst.communicate(timeout=300)
        if lst.returncode != 0:
            raise RuntimeError("listener failed: " + err)
        f = line.split()
        last = int(f[f.index("LAST_US") + 1]) / 1e6
        self.record("sql_send", "pg_notify->listener", size, n / (last - t0), "msg/s")

    # b. C path
    def c_path(self, size):
        n = self.n_msgs * (5 if size <= 1024 else 2)
        for transport in ("imessages", "shm_mq"):
            v = float(self.c.psql(f"SELECT imsg_bench_c('{transport}', {n}, {size})"))
            self.record("c_path", transport, size, v, "msg/s")

    # c. round trips
    def round_trips(self):
        k = self.k_rt
        p50 = parse_array(self.c.psql(f"SELECT bench_ping({k})"))[0]
        self.record("round_trip", "imsg_ping manager", 0, p50, "us p50")
        p50 = parse_array(self.c.psql(f"SELECT imsg_bench_latch_pingpong({k})"))[0]
        self.record("round_trip", "latch ping-pong", 0, p50, "us p50")
        p50 = parse_array(self.c.psql(f"SELECT imsg_bench_c_pingpong({k})"))[0]
        self.record("round_trip", "imessages C ping-pong", 0, p50, "us p50")
        self.c.psql("DELETE FROM bench_rx")
        echo = self.c.psql_bg("CALL bench_echo()")
        self.c.wait_for("SELECT count(*) = 1 FROM bench_rx")
        pid = self.c.psql("SELECT pid FROM bench_rx")
        p50 = parse_array(self.c.psql(f"SELECT bench_sql_pingpong({k}, {pid})"))[0]
        echo.communicate(timeout=60)
        self.record("round_trip", "imessages SQL b2b", 0, p50, "us p50")
        r = subprocess.run([self.pgclient, "notify-pingpong", self.c.conninfo, str(k), "1"],
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise RuntimeError("notify-pingpong failed: " + r.stderr)
        f = r.stdout.split()
        self.record("round_trip", "NOTIFY ping-pong", 0, float(f[f.index("P50_US") + 1]), "us p50")

    # d. contention
    def write_script(self, name, text):
        path = os.path.join(self.workdir, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o644)
        return path

    def contention(self):
        payload = "x" * 64
        to_manager = self.write_script(
            "to_manager.sql",
            f"SELECT count(imsg_send('{payload}'::bytea)) FROM generate_series(1, 100);\n")
        for c in (1, 2, 4, 8):
            tps = self.c.pgbench(["-n", "-c", str(c), "-j", str(min(c, 4)), "-T",
                                  str(self.duration), "-f", to_manager])
            self.record("contention", f"{c} senders->manager", 64, tps * 100, "msg/s")
        # 8 senders to 8 distinct receivers
        self.c.psql("DELETE FROM bench_sink; DELETE FROM bench_stop")
        sinks = [self.c.psql_bg(f"CALL bench_drain({i})") for i in range(8)]
        self.c.wait_for("SELECT count(*) = 8 FROM bench_sink")
        to_sink = self.write_script(
            "to_sink.sql",
            f"SELECT count(imsg_send('{payload}'::bytea, (SELECT pid FROM bench_sink WHERE idx = :client_id))) "
            "FROM generate_series(1, 100);\n")
        tps = self.c.pgbench(["-n", "-c", "8", "-j", "4", "-T", str(self.duration), "-f", to_sink])
        self.c.psql("INSERT INTO bench_stop VALUES (true)")
        for s in sinks:
            s.communicate(timeout=60)
        self.record("contention", "8 senders->8 receivers", 64, tps * 100, "msg/s")

    # e. change sets on TPC-B
    def tpcb_setup(self):
        subprocess.run(as_user([self.c.bin("pgbench"), "-i", "-q", "-s", "1"]),
                       env=self.c.env, check=True, capture_output=True)
        self.c.psql("ALTER TABLE pgbench_history ADD COLUMN hid bigserial PRIMARY KEY")

    def tpcb(self):
        tables = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"]
        for mode in ("none", "async", "sync"):
            if mode == "none":
                self.c.psql("SELECT imsg_unreplicate(relation) FROM imsg_replicated_tables")
            else:
                self.c.psql("; ".join(f"SELECT imsg_replicate('{t}')" for t in tables))
            env = dict(self.c.env)
            if mode == "sync":
                env["PGOPTIONS"] = "-c imessages.commit_mode=sync"
            cpu0, cs0 = self.c.manager_cpu()
            tps = self.c.pgbench(["-n", "-c", "2", "-j", "2", "-T", str(self.tpcb_duration),
                                  "-b", "tpcb-like"], env=env)
            self.record("changesets_tpcb", f"capture {mode}", 0, tps, "tps")
            cpu1, cs1 = self.c.manager_cpu()
            if mode != "none" and cs1 > cs0:
                self.record("manager_cpu", f"tpcb {mode}", 0, (cpu1 - cpu0) * 1e6 / (cs1 - cs0), "us/cs")

    # f. change sets replicated across 1, 2 and 3 nodes (one corosync each)
    def replication(self):
        dur = self.tpcb_duration
        reps = 2 if self.args.quick else self.reps   # quick mode stays under 2 minutes
        for n in (1, 2, 3):
            group = LabGroup(self.args.pg_bin, self.args.top, n)
            try:
                group.start()
                scripts = [self.write_script(
                    f"rep_node{i}.sql",
                    f"INSERT INTO bench_rep VALUES (nextval('bench_rep_seq') * 8 + {i}, repeat('x', 100));\n")
                    for i in range(n)]
                for rep in range(reps):
                    for mode in ("async", "sync"):
                        before = [int(c.psql("SELECT count(*) FROM bench_rep")) for c in group.nodes]
                        cpu_before = [c.manager_cpu() for c in group.nodes]
                        env = [dict(c.env, PGOPTIONS=f"-c imessages.commit_mode={mode}") for c in group.nodes]
                        t0 = time.time()
                        procs = [subprocess.Popen(as_user([c.bin("pgbench"), "-n", "-c", "2", "-j", "2",
                                                           "-T", str(dur), "-f", scripts[i]]),
                                                  env=env[i], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                  text=True)
                                 for i, c in enumerate(group.nodes)]
                        total = 0
                        for p in procs:
                            out, err = p.communicate(timeout=dur + 120)
                            if p.returncode != 0:
                                raise RuntimeError(f"pgbench failed: {err}")
                            total += int(next(l for l in out.splitlines()
                                              if l.startswith("number of transactions actually processed"))
                                         .split(":")[1].split("/")[0])
                        # every node has every row and its manager delivered every
                        # change set (own ones too: with one node the rows are
                        # there at commit, before the group ordered them)
                        for c, b, m in zip(group.nodes, before, cpu_before):
                            c.wait_for(f"SELECT count(*) >= {b + total} FROM bench_rep", timeout=300)
                            c.wait_for(f"SELECT change_sets_delivered >= {m[1] + total} "
                                       "FROM imsg_manager_status()", timeout=300)
                        elapsed = time.time() - t0
                        label = f"{mode} {n} node{'s' if n > 1 else ''}"
                        self.record("replication", label, 0, total / elapsed, "cs/s")
                        # each node's manager handles every change set, own or remote
                        cpu = [c.manager_cpu()[0] - b[0] for c, b in zip(group.nodes, cpu_before)]
                        self.record("manager_cpu", label, 0, sum(cpu) * 1e6 / (n * total), "us/cs")
            finally:
                group.stop()

    def recovery(self):
        """g. A node that was stopped catches up (change sets per second,
        from its helper's log lines), beside the rate at which a node that
        stayed applied the same storm; a node no log reaches gets a full
        transfer (MB/s of table data), beside pg_basebackup of the donor."""
        import re

        def stamp(line):
            t = time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")
            return time.mktime(t) + float("0." + line[20:23])

        reps = 1 if self.args.quick else self.reps
        group = LabGroup(self.args.pg_bin, self.args.top, 3)
        try:
            group.start()
            n1, n2, n3 = group.nodes
            script = self.write_script(
                "recovery.sql", "INSERT INTO bench_rep VALUES (nextval('bench_rep_seq'), repeat('x', 100));\n")
            for rep in range(reps):
                # catch-up
                n3.pg_stop()
                applied0 = int(n2.psql("SELECT remote_change_sets_applied FROM imsg_manager_status()"))
                t0 = time.time()
                env = dict(n1.env, PGOPTIONS="-c imessages.commit_mode=async")
                subprocess.run(as_user([n1.bin("pgbench"), "-n", "-c", "2", "-j", "2", "-T",
                                        str(self.tpcb_duration), "-f", script]),
                               env=env, check=True, capture_output=True)
                target = n1.psql("SELECT group_position FROM imsg_manager_status()")
                n2.wait_for(f"SELECT applied_position >= {target} FROM imsg_manager_status()", timeout=300)
                applied = int(n2.psql("SELECT remote_change_sets_applied FROM imsg_manager_status()")) - applied0
                self.record("recovery", "normal apply", 0, applied / (time.time() - t0), "cs/s")
                n3.pg_start()
                n3.wait_for("SELECT state = 'synced' FROM imsg_manager_status()", timeout=300)
                log = n3.log().splitlines()
                begin = [l for l in log if "imessages helper catches up from position" in l][-1]
                end = [l for l in log if "imessages helper caught up to position" in l][-1]
                a, b = map(int, re.search(r"from position (\d+) to (\d+)", begin).groups())
                self.record("recovery", "catch-up", 0, (b - a + 1) / max(stamp(end) - stamp(begin), 1e-3), "cs/s")
            # full transfer: ~100 MB in a replicated table, written while node3
            # is stopped and the others' logs are too small to reach back
            for c in group.nodes:
                c.psql("SET session_replication_role = replica; "
                       "CREATE TABLE bench_big (id bigint PRIMARY KEY, v text); SELECT imsg_replicate('bench_big')")
            n3.pg_stop()
            for c in (n1, n2):
                c.psql("ALTER SYSTEM SET imessages.changeset_log_size = '1MB'")
                c.psql("SELECT pg_reload_conf()")
            rows = 1000 if self.args.quick else 10000   # rows of ~1 kB: 10 MB or 100 MB
            for k in range(10):
                n1.psql(f"INSERT INTO bench_big SELECT g, repeat(md5(g::text), 30) "
                        f"FROM generate_series({k * rows + 1}, {(k + 1) * rows}) g")
            target = n1.psql("SELECT group_position FROM imsg_manager_status()")
            n2.wait_for(f"SELECT applied_position >= {target} FROM imsg_manager_status()", timeout=600)
            size = int(n1.psql("SELECT sum(pg_table_size(relation)) FROM imsg_replicated_tables"))
            for rep in range(reps):
                if rep == 0:
                    n3.pg_start()   # it has a state, but no log reaches back to it
                else:
                    n3.stop()       # and a new node (initdb, CREATE EXTENSION) each time
                    n3 = group.nodes[2] = group.new_node(3)
                    n3.start()
                    n3.psql("CREATE EXTENSION imessages")
                n3.wait_for("SELECT state = 'synced' FROM imsg_manager_status()", timeout=600)
                line = [l for l in n3.log().splitlines() if "imessages helper copied" in l][-1]
                ms = int(re.search(r"in (\d+) ms", line).group(1))
                self.record("recovery", "full transfer", 0, size / 1e6 / (ms / 1000), "MB/s")
                backup = tempfile.mkdtemp(prefix="imessages-basebackup.")
                if IS_ROOT:
                    shutil.chown(backup, "postgres", "postgres")
                t0 = time.time()
                subprocess.run(as_user([n1.bin("pg_basebackup"), "-D", os.path.join(backup, "b"),
                                        "-X", "fetch", "-c", "fast"]),
                               env=n1.env, check=True, capture_output=True)
                elapsed = time.time() - t0
                total = sum(os.path.getsize(os.path.join(d, f))
                            for d, _, fs in os.walk(os.path.join(backup, "b")) for f in fs)
                shutil.rmtree(backup, ignore_errors=True)
                self.record("recovery", "pg_basebackup", 0, total / 1e6 / elapsed, "MB/s")
        finally:
            group.stop()

    # h. TPC-B on one PostgreSQL, a primary with two synchronous standbys,
    # and three imessages nodes
    def tpcb_clients(self, runs, dur, tag):
        """pgbench tpcb-like at once on each (cluster, clients, env) of
        'runs'; (total tps, p50 ms, p99 ms), the latencies of every
        transaction from pgbench's per-transaction logs."""
        logdir = tempfile.mkdtemp(prefix="imessages-bench-log.")
        if IS_ROOT:
            shutil.chown(logdir, "postgres", "postgres")
        procs = []
        for i, (c, clients, env) in enumerate(runs):
            procs.append(subprocess.Popen(
                as_user([c.bin("pgbench"), "-n", "-b", "tpcb-like", "-c", str(clients), "-j", "2",
                         "-T", str(dur), "--max-tries=100", "-l", "--log-prefix", os.path.join(logdir, f"n{i}")]),
                env=env or c.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        tps = 0.0
        for p in procs:
            out, err = p.communicate(timeout=dur + 300)
            if p.returncode != 0:
                raise RuntimeError(f"pgbench failed ({tag}): {err}")
            tps += float(next(l for l in out.splitlines() if l.startswith("tps = ")).split()[2])
        lat = []
        for name in os.listdir(logdir):
            with open(os.path.join(logdir, name)) as f:
                for line in f:
                    fields = line.split()
                    if len(fields) >= 3 and fields[2].isdigit():
                        lat.append(int(fields[2]) / 1000.0)
        shutil.rmtree(logdir, ignore_errors=True)
        lat.sort()
        p50 = lat[len(lat) // 2] if lat else 0.0
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0.0
        return tps, p50, p99

    def record_tpcb(self, system, result):
        tps, p50, p99 = result
        self.record("vs_streaming", system, 0, tps, "tps")
        self.record("vs_streaming_p50", system, 0, p50, "ms")
        self.record("vs_streaming_p99", system, 0, p99, "ms")

    def versus_streaming(self):
        dur = self.tpcb_duration
        reps = 1 if self.args.quick else self.reps
        scale = "2" if self.args.quick else "10"
        durable = "synchronous_commit = on\nmax_wal_senders = 10\nwal_level = replica\n"

        def init_tpcb(c):
            subprocess.run(as_user([c.bin("pgbench"), "-i", "-q", "-s", scale]),
                           env=c.env, check=True, capture_output=True)
            c.psql("ALTER TABLE pgbench_history ADD COLUMN hid bigserial PRIMARY KEY")

        # (i) one PostgreSQL, no imessages
        plain = Cluster(self.args.pg_bin, port=PORT + 30,
                        extra_conf="shared_preload_libraries = ''\n" + durable)
        try:
            plain.start()
            init_tpcb(plain)
            for rep in range(reps):
                self.record_tpcb("one PostgreSQL", self.tpcb_clients([(plain, 8, None)], dur, "plain"))
        finally:
            plain.stop()

        # (ii) a primary and two streaming standbys, s1 and s2
        primary = Cluster(self.args.pg_bin, port=PORT + 31,
                          extra_conf="shared_preload_libraries = ''\n" + durable +
                                     "hot_standby = on\nwal_keep_size = 1GB\n")
        standbys = []
        try:
            primary.start()
            with open(os.path.join(primary.data, "pg_hba.conf"), "a") as f:
                f.write("local replication all trust\n")
            primary.psql("SELECT pg_reload_conf()")
            init_tpcb(primary)
            for i in (1, 2):
                s = Cluster(self.args.pg_bin, port=PORT + 31 + i)
                subprocess.run(as_user([s.bin("pg_basebackup"), "-D", s.data, "-X", "stream", "-c", "fast",
                                        "-h", primary.dir, "-p", str(primary.port), "-U", "postgres"]),
                               check=True, capture_output=True)
                with open(os.path.join(s.data, "postgresql.conf"), "a") as f:
                    f.write(f"\nport = {s.port}\nunix_socket_directories = '{s.dir}'\n"
                            f"primary_conninfo = 'host={primary.dir} port={primary.port} user=postgres "
                            f"application_name=s{i}'\n")
                open(os.path.join(s.data, "standby.signal"), "w").close()
                if IS_ROOT:
                    shutil.chown(os.path.join(s.data, "standby.signal"), "postgres", "postgres")
                s.pg_start()
                standbys.append(s)
            primary.wait_for("SELECT count(*) = 2 FROM pg_stat_replication WHERE state = 'streaming'")
            for rep in range(reps):
                for names in ("ANY 1 (s1, s2)", "ANY 2 (s1, s2)"):
                    for commit in ("on", "remote_apply"):
                        primary.psql(f"ALTER SYSTEM SET synchronous_standby_names = '{names}'")
                        primary.psql(f"ALTER SYSTEM SET synchronous_commit = '{commit}'")
                        primary.psql("SELECT pg_reload_conf()")
                        # (with ANY, both standbys are quorum candidates)
                        primary.wait_for("SELECT count(*) = 2 FROM pg_stat_replication "
                                         "WHERE sync_state = 'quorum'")
                        self.record_tpcb(f"primary, {names[:5]}, {commit}",
                                         self.tpcb_clients([(primary, 8, None)], dur, names))
        finally:
            for s in standbys:
                s.stop()
            primary.stop()

        # (iii) three imessages nodes
        group = LabGroup(self.args.pg_bin, self.args.top, 3)
        for c in group.nodes:
            c.extra_conf += "\n" + durable
        tables = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"]
        try:
            group.start()
            for c in group.nodes:
                init_tpcb(c)
                # each node's history keys apart from the others' (issue 20)
                c.psql("SELECT imsg_node_sequence('pgbench_history_hid_seq')")
                c.psql("SET session_replication_role = replica; " +
                       "; ".join(f"SELECT imsg_replicate('{t}')" for t in tables))
            for rep in range(reps):
                for mode in ("async", "sync"):
                    env = [dict(c.env, PGOPTIONS=f"-c imessages.commit_mode={mode}") for c in group.nodes]
                    n1 = group.nodes[0]
                    self.record_tpcb(f"imessages 3 nodes {mode}, writes on one",
                                     self.tpcb_clients([(n1, 8, env[0])], dur, mode))
                    ImsgIdle(group.nodes)
                    self.record_tpcb(f"imessages 3 nodes {mode}, writes on all",
                                     self.tpcb_clients([(c, k, e) for c, k, e in
                                                        zip(group.nodes, (3, 3, 2), env)], dur, mode))
                    ImsgIdle(group.nodes)
            self.lagging_apply(group, reps)
        finally:
            group.stop()

    def lagging_apply(self, group, reps):
        """A lagging node's apply rate with 1 and 4 helpers: node2 holds a
        row lock that the first of node1's change sets needs, node1 commits
        updates of disjoint accounts, and node2's queue drains once the lock
        is gone (change sets per second)."""
        n1, n2 = group.nodes[0], group.nodes[1]
        count = 4000 if self.args.quick else 20000
        script = self.write_script("lagging.sql", "\\set aid random(2, 100000 * :scale)\n"
                                   "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;\n")
        for c in group.nodes:
            c.psql("ALTER SYSTEM SET imessages.flow_control_limit = 0")
            c.psql("SELECT pg_reload_conf()")
        for rep in range(reps):
            for helpers in (1, 4):
                n2.psql(f"ALTER SYSTEM SET imessages.max_helpers = {helpers}")
                n2.psql(f"ALTER SYSTEM SET imessages.min_helpers = {helpers}")
                n2.psql("SELECT pg_reload_conf()")
                n2.wait_for(f"SELECT count(*) = {helpers} FROM imsg_helpers() WHERE state IN ('idle', 'busy')")
                locker = subprocess.Popen(as_user([n2.bin("psql"), "-XAtq"]), env=n2.env, stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                locker.stdin.write("BEGIN;\nSELECT 1 FROM pgbench_accounts WHERE aid = 1 FOR UPDATE;\n")
                locker.stdin.flush()
                if locker.stdout.readline().strip() != "1":     # (the row is locked)
                    raise RuntimeError("the locker did not lock its row")
                n1.psql("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 1")
                subprocess.run(as_user([n1.bin("pgbench"), "-n", "-c", "4", "-j", "2", "-t", str(count // 4),
                                        "-f", script]), env=n1.env, check=True, capture_output=True)
                target = n1.psql("SELECT group_position FROM imsg_manager_status()")
                n2.wait_for(f"SELECT group_position >= {target} FROM imsg_manager_status()", timeout=300)
                queued = int(n2.psql("SELECT change_sets_to_apply FROM imsg_manager_status()"))
                # timed on node2's clock, from the lock's release to the
                # last change set applied, looked at every millisecond
                watcher = n2.psql_bg(
                    "DO $$ BEGIN WHILE (SELECT applied_position FROM imsg_manager_status()) < "
                    f"{target} LOOP PERFORM pg_sleep(0.001); END LOOP; END $$; "
                    "SELECT extract(epoch FROM clock_timestamp())")
                locker.stdin.write("COMMIT;\nSELECT extract(epoch FROM clock_timestamp());\n")
                locker.stdin.close()
                released = float(locker.stdout.readline())
                locker.wait(timeout=60)
                out, err = watcher.communicate(timeout=300)
                if watcher.returncode != 0:
                    raise RuntimeError(f"the apply watcher failed: {err}")
                drained = float(out.strip().splitlines()[-1])
                self.record("lagging_apply", f"{helpers} helper{'s' if helpers > 1 else ''}", 0,
                            queued / max(drained - released, 1e-3), "cs/s")
        for c in group.nodes:
            c.psql("ALTER SYSTEM RESET imessages.flow_control_limit")
            c.psql("ALTER SYSTEM RESET imessages.max_helpers")
            c.psql("ALTER SYSTEM RESET imessages.min_helpers")
            c.psql("SELECT pg_reload_conf()")

    def run(self):
        self.c.psql(SETUP_SQL)
        self.c.wait_for("SELECT imsg_manager_pid() IS NOT NULL")
        self.tpcb_setup()
        sizes = [64, 1024, 8192]
        want = set(self.args.only or "abcdefgh")
        for rep in range(self.reps):
            print(f"== repetition {rep + 1} of {self.reps}", flush=True)
            for size in sizes:
                if "a" in want:
                    self.sql_to_manager(size)
                    self.sql_to_backend(size)
                    self.notify_batch(size)
                if "b" in want:
                    self.c_path(size)
            if "c" in want:
                self.round_trips()
            if "d" in want:
                self.contention()
            if "e" in want:
                self.tpcb()
        if "f" in want:
            print("== f. replication across nodes", flush=True)
            self.replication()
        if "g" in want:
            print("== g. node recovery", flush=True)
            self.recovery()
        if "h" in want:
            print("== h. TPC-B: one PostgreSQL, streaming standbys, imessages nodes", flush=True)
            self.versus_streaming()


H_SYSTEMS = ("one PostgreSQL", "primary, ANY 1, on", "primary, ANY 1, remote_apply", "primary, ANY 2, on",
             "primary, ANY 2, remote_apply", "imessages 3 nodes async, writes on one",
             "imessages 3 nodes async, writes on all", "imessages 3 nodes sync, writes on one",
             "imessages 3 nodes sync, writes on all")


def plot_tpcb(by, outdir):
    """bench/out/tpcb.png: scenario h's TPS and p99 latency per setup."""
    have = [s for s in H_SYSTEMS if by.get(("vs_streaming", s, 0))]
    if not have or not shutil.which("gnuplot"):
        return
    dat = os.path.join(outdir, "tpcb.dat")
    with open(dat, "w") as f:
        for s in have:
            f.write(f'"{s}" {statistics.median(by[("vs_streaming", s, 0)])} '
                    f'{statistics.median(by[("vs_streaming_p99", s, 0)])}\n')
    png = os.path.join(outdir, "tpcb.png")
    script = f"""
set terminal png size 1000,640 noenhanced
set output '{png}'
set multiplot layout 2,1 title 'pgbench TPC-B, scale 10, 8 clients (medians)'
set style data histograms
set style fill solid 0.8 border -1
set boxwidth 0.8
set xtics rotate by -20 font ',9'
set grid ytics
set yrange [0:*]
set ylabel 'transactions per second'
plot '{dat}' using 2:xtic(1) notitle lc rgb '#4477aa'
set ylabel 'p99 latency (ms)'
plot '{dat}' using 3:xtic(1) notitle lc rgb '#cc6677'
unset multiplot
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)


def summarize(rows):
    by = {}
    for scen, system, size, value, unit in rows:
        by.setdefault((scen, system, size), []).append(value)

    def med(scen, system, size):
        v = by.get((scen, system, size))
        return (statistics.median(v), min(v), max(v)) if v else None

    def fmt(m, unit):
        if m is None:
            return "-"
        if unit == "msg/s" and m[0] >= 1e4:
            return f"{m[0] / 1e3:,.0f}k ({m[1] / 1e3:,.0f}-{m[2] / 1e3:,.0f}k)"
        return f"{m[0]:,.1f} ({m[1]:,.1f}-{m[2]:,.1f})"

    lines = []
    out = []

    def row(what, a, b, unit, target, higher_better=True, inverse=False):
        ratio = None
        if a and b:
            ratio = a[0] / b[0]
        met = "-"
        if ratio is not None and target is not None:
            met = "yes" if (ratio >= target if higher_better else ratio <= target) else "NO"
        tgt = "-" if target is None else (f">= {target:.2g}x" if higher_better else f"<= {target:.2g}x")
        lines.append(f"{what:<44} {fmt(a, unit):>28} {fmt(b, unit):>28} "
                     f"{('%.2fx' % ratio) if ratio else '-':>8} {tgt:>9} {met:>4}")
        out.append((what, a[0] if a else "", b[0] if b else "", ratio or "", target or "", met))

    hdr = f"{'scenario (imessages vs baseline)':<44} {'imessages median (min-max)':>28} {'baseline median (min-max)':>28} {'ratio':>8} {'target':>9} {'met':>4}"
    lines.append(hdr)
    lines.append("-" * len(hdr))
    targets = {64: 4, 1024: 15, 8192: 20}
    for size in (64, 1024, 8192):
        row(f"a. SQL send->manager vs pg_notify, {size} B", med("sql_send", "imessages->manager", size),
            med("sql_send", "pg_notify->listener", size), "msg/s", targets[size])
    for size in (64, 1024, 8192):
        row(f"a. SQL send->backend vs pg_notify, {size} B", med("sql_send", "imessages->backend", size),
            med("sql_send", "pg_notify->listener", size), "msg/s", None)
    for size in (64, 1024, 8192):
        row(f"b. C path vs shm_mq, {size} B", med("c_path", "imessages", size),
            med("c_path", "shm_mq", size), "msg/s", 1.0 if size <= 1024 else None)
    row("c. imsg_ping p50 vs latch ping-pong (us)", med("round_trip", "imsg_ping manager", 0),
        med("round_trip", "latch ping-pong", 0), "us", 1.5, higher_better=False)
    row("c. C ping-pong p50 vs latch ping-pong (us)", med("round_trip", "imessages C ping-pong", 0),
        med("round_trip", "latch ping-pong", 0), "us", None, higher_better=False)
    row("c. SQL b2b p50 vs NOTIFY ping-pong (us)", med("round_trip", "imessages SQL b2b", 0),
        med("round_trip", "NOTIFY ping-pong", 0), "us", 1 / 3, higher_better=False)
    one = med("contention", "1 senders->manager", 64)
    for c in (2, 4, 8):
        row(f"d. {c} senders->manager vs 1 sender", med("contention", f"{c} senders->manager", 64),
            one, "msg/s", 0.8 if c == 8 else None)
    row("d. 8 senders->8 receivers vs 1 sender", med("contention", "8 senders->8 receivers", 64),
        one, "msg/s", None)
    none = med("changesets_tpcb", "capture none", 0)
    row("e. TPC-B TPS, capture async vs none", med("changesets_tpcb", "capture async", 0), none, "tps", 0.85)
    row("e. TPC-B TPS, capture sync vs none", med("changesets_tpcb", "capture sync", 0), none, "tps", 0.75)
    for mode in ("async", "sync"):
        one = med("replication", f"{mode} 1 node", 0)
        row(f"f. {mode} change sets/s, 1 node (corosync)", one, None, "cs/s", None)
        for n in (2, 3):
            row(f"f. {mode} change sets/s, {n} nodes vs 1", med("replication", f"{mode} {n} nodes", 0),
                one, "cs/s", None)
    row("g. catch-up cs/s vs normal apply cs/s", med("recovery", "catch-up", 0),
        med("recovery", "normal apply", 0), "cs/s", 1.0)
    row("g. full transfer MB/s vs pg_basebackup", med("recovery", "full transfer", 0),
        med("recovery", "pg_basebackup", 0), "MB/s", 0.5)
    plain = med("vs_streaming", "one PostgreSQL", 0)
    for who in ("primary, ANY 1, on", "primary, ANY 1, remote_apply", "primary, ANY 2, on",
                "primary, ANY 2, remote_apply"):
        row(f"h. TPC-B tps, {who} vs one PostgreSQL", med("vs_streaming", who, 0), plain, "tps", None)
    for mode in ("async", "sync"):
        for where in ("one", "all"):
            row(f"h. TPC-B tps, 3 imessages {mode}, writes on {where} vs one PostgreSQL",
                med("vs_streaming", f"imessages 3 nodes {mode}, writes on {where}", 0), plain, "tps",
                0.5 if where == "all" else None)
    row("h. lagging node's apply cs/s, 4 helpers vs 1", med("lagging_apply", "4 helpers", 0),
        med("lagging_apply", "1 helper", 0), "cs/s", 1.5)
    row("h. TPC-B tps, 3 imessages sync, one writer vs ANY 2 remote_apply",
        med("vs_streaming", "imessages 3 nodes sync, writes on one", 0),
        med("vs_streaming", "primary, ANY 2, remote_apply", 0), "tps", 0.8)
    for pct in ("p50", "p99"):
        for who in H_SYSTEMS[1:]:
            row(f"h. {pct} latency ms, {who} vs one PostgreSQL", med(f"vs_streaming_{pct}", who, 0),
                med(f"vs_streaming_{pct}", "one PostgreSQL", 0), "ms", None, higher_better=False)
    # the manager's CPU (user + system) per change set it delivered; no baseline
    for mode in ("async", "sync"):
        row(f"e. manager CPU us/change set, tpcb {mode}", med("manager_cpu", f"tpcb {mode}", 0), None, "us", None)
        for n in (1, 2, 3):
            row(f"f. manager CPU us/change set, {mode} {n} node{'s' if n > 1 else ''}",
                med("manager_cpu", f"{mode} {n} node{'s' if n > 1 else ''}", 0), None, "us", None)
    return lines, by


def plot(by, outdir):
    dat = os.path.join(outdir, "throughput.dat")
    series = [("sql_send", "imessages->manager", "imessages SQL to manager"),
              ("sql_send", "imessages->backend", "imessages SQL to backend"),
              ("sql_send", "pg_notify->listener", "pg_notify batch"),
              ("c_path", "imessages", "imessages C path"),
              ("c_path", "shm_mq", "shm_mq C path")]
    with open(dat, "w") as f:
        for i, (scen, system, title) in enumerate(series):
            f.write(f'"{title}"\n')
            for size in (64, 1024, 8192):
                v = by.get((scen, system, size))
                if v:
                    f.write(f"{size} {statistics.median(v)}\n")
            f.write("\n\n")
    if not any(by.get((scen, system, size)) for scen, system, _ in series for size in (64, 1024, 8192)):
        print("no throughput figures (scenarios a and b not run): no plot")
        return
    if not shutil.which("gnuplot"):
        print("gnuplot not found: no plot")
        return
    png = os.path.join(outdir, "throughput.png")
    script = f"""
set terminal png size 900,560 noenhanced
set output '{png}'
set title 'Throughput against message size (medians)'
set logscale x 2
set logscale y 10
set xlabel 'payload bytes'
set ylabel 'messages per second'
set key outside right
set grid
plot for [i=0:{len(series) - 1}] '{dat}' index i using 1:2 with linespoints title columnheader(1)
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small counts, 3 repetitions (< 2 min)")
    ap.add_argument("--reps", type=int, default=0)
    ap.add_argument("--only", default="", help="scenario letters to run, e.g. 'be' (default: all)")
    ap.add_argument("--pg-bin", required=True)
    ap.add_argument("--top", required=True)
    args = ap.parse_args()

    outdir = os.path.join(args.top, "bench", "out")
    os.makedirs(outdir, exist_ok=True)
    cluster = Cluster(args.pg_bin)
    started = time.time()
    try:
        cluster.start()
        b = Bench(args, cluster)
        b.run()
    finally:
        cluster.stop()
    with open(os.path.join(outdir, "results.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["scenario", "system", "size_bytes", "value", "unit"])
        w.writerows(b.rows)
    lines, by = summarize(b.rows)
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    header = [f"imessages benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
              f"{os.cpu_count()} CPUs ({cpu}), {'quick' if args.quick else 'full'} mode, "
              f"{b.reps} repetitions, {time.time() - started:.0f} s", ""]
    text = "\n".join(header + lines)
    print()
    print(text)
    with open(os.path.join(outdir, "summary.txt"), "w") as f:
        f.write(text + "\n")
    plot(by, outdir)
    plot_tpcb(by, outdir)
    print(f"\nwrote {outdir}/results.csv, summary.txt, throughput.png")


if __name__ == "__main__":
    main()
