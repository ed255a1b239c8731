"""The manager's CPU and context switches per delivered change set, per
node, from /proc: N corosync nodes (network namespaces, as bench scenario f),
pgbench on every node for 8 s, two repetitions.  A narrower and steadier
measure than scenario f's, for A/B comparisons of the manager.
Usage (as root, after bench/run.sh has installed the build):
    python3 bench/manager_cpu.py async|sync N"""
import sys, time, subprocess, os
top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
mode = sys.argv[1]
sys.path.insert(0, os.path.join(top, 'bench'))
import bench
def stat(pid):
    d = {}
    for l in open(f'/proc/{pid}/status'):
        k, v = l.split(':', 1)
        d[k] = v.strip()
    f = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
    return int(d['voluntary_ctxt_switches']), int(d['nonvoluntary_ctxt_switches']), (int(f[11]) + int(f[12])) / os.sysconf('SC_CLK_TCK')
N = int(sys.argv[2]); g = bench.LabGroup('/usr/lib/postgresql/15/bin', top, N)
g.start()
try:
    for i,c in enumerate(g.nodes):
        script = f'/tmp/imsg_mcpu_node{i}.sql'
        open(script,'w').write(f"INSERT INTO bench_rep VALUES (nextval('bench_rep_seq') * 8 + {i}, repeat('x', 100));\n")
        os.chmod(script, 0o644)
    for rep in range(2):
        pids = [c.psql("SELECT pid FROM imsg_manager_status()") for c in g.nodes]
        d0 = [int(c.psql("SELECT change_sets_delivered FROM imsg_manager_status()")) for c in g.nodes]
        s0 = [stat(p) for p in pids]
        procs = []
        for i,c in enumerate(g.nodes):
            env = dict(c.env, PGOPTIONS=f"-c imessages.commit_mode={mode}")
            procs.append(subprocess.Popen(bench.as_user([c.bin("pgbench"), "-n", "-c", "2", "-j", "2", "-T", "8", "-f", f'/tmp/imsg_mcpu_node{i}.sql']), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        total = 0
        for p in procs:
            out, err = p.communicate()
            total += int([l for l in out.splitlines() if 'processed' in l][0].split(':')[1].split('/')[0])
        for c, d in zip(g.nodes, d0):
            c.wait_for(f"SELECT change_sets_delivered >= {d + total} FROM imsg_manager_status()", timeout=300)
        s1 = [stat(p) for p in pids]
        for i in range(N):
            n = total
            print(f"node{i} {mode} total={total} vcs/cs={(s1[i][0]-s0[i][0])/n:.2f} nvcs/cs={(s1[i][1]-s0[i][1])/n:.2f} cpu_us/cs={(s1[i][2]-s0[i][2])*1e6/n:.1f}", flush=True)
finally:
    g.stop()
