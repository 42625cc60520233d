#!/usr/bin/env python3
"""Node syncs per second against an SQLite and a PostgreSQL ODA as the node count grows.

For each node count N, N client nodes (each with a root of its own) are asked for the same
packages, then all N run ``pm opm sync`` at once, as a cluster's nodes do from cron: the
"install" round installs every package on every node, the "no-op" round that follows finds
nothing to do and so measures the ODA's own cost (connect, lock, read, inventory).  Syncs
per second = N / wall-clock time from the first start to the last exit.

Standalone: ``python3 bench/bench_opm.py [--nodes 1,4,16,32] [--packages 3]
[--postgres URL]`` prints one JSON object on stdout.

``python3 bench/bench_opm.py --fleet [--fleet-nodes 10000] [--workers 16] [--herd 1000]
[--converge-nodes 10000] [--results bench/RESULTS.md]`` simulates a fleet instead: a
generated ODA on a PostgreSQL of its own (initdb), directly and through a PgBouncer of its
own, node workers as threads running pm's sync code; it reports syncs/s, p50/p99 latency,
statements, rows, commits and WAL bytes written and server CPU per sync, and the time a
fleet takes to converge on a one-package request, and writes them as a section of
RESULTS.md.  PostgreSQL is measured when a URL is
given (or $PM_BENCH_POSTGRES_URL / $PM_TEST_POSTGRES_URL is set), in a schema of its own
that is dropped afterwards; otherwise its entry says why it was skipped.
"""

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PM = os.path.join(REPO, "pm.py")


def package_bytes(name, version, files, scripts):
    """A pm package: CONTROL/manifest (JSON), CONTROL scripts, DATA files."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        members = [("CONTROL/manifest", json.dumps({"package": name, "version": version}).encode(), 0o644)]
        members += [("CONTROL/" + s, body.encode(), 0o755) for s, body in sorted(scripts.items())]
        members += [("DATA" + path, body.encode(), 0o644) for path, body in sorted(files.items())]
        for path, data, mode in members:
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def make_repository(directory, count, with_scripts=True):
    """``count`` packages of a few files and an install script each, published with
    tools/repoPackager.py as a directory source; returns their names."""
    built = directory + ".built"
    os.makedirs(built)
    names = []
    for i in range(count):
        name = "bench%d" % i
        files = {"/usr/share/%s/file%d" % (name, j): "%s %d\n" % (name, j) * 50 for j in range(5)}
        scripts = {"api-post-install": "#!/bin/sh\nexit 0\n"} if with_scripts else {}
        with open(os.path.join(built, "%s-1.0.tar" % name), "wb") as f:
            f.write(package_bytes(name, "1.0", files, scripts))
        names.append(name)
    files = [os.path.join(built, "%s-1.0.tar" % name) for name in names]
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "repoPackager.py"), "-d", directory] + files,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit("repoPackager failed: %s" % proc.stderr.strip())
    return names


def pm(root, oda, *args):
    """Run a pm command in this process (setting up is not measured: no process start);
    its stdout, which must not mix with the benchmark's own."""
    import contextlib
    sys.path.insert(0, REPO)
    import pm as pm_module
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = pm_module.main(["--root", root, "--oda", oda] + list(args))
    if code != 0:
        raise SystemExit("pm %s failed: %s" % (" ".join(args), err.getvalue().strip()))
    return out.getvalue()


def timed_syncs(roots, oda):
    """Start a sync on every root at once; seconds until the last one ends."""
    start = time.monotonic()
    procs = [subprocess.Popen([sys.executable, PM, "--root", root, "--oda", oda, "--wait", "600", "opm", "sync"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for root in roots]
    failures = []
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            failures.append(err.strip())
    seconds = time.monotonic() - start
    if failures:
        raise SystemExit("a sync failed: %s" % failures[0])
    return seconds


def measure(work, oda, nodes, packages, repository):
    """One round of installs and one of no-ops on ``nodes`` fresh nodes."""
    admin = os.path.join(work, "admin")
    os.makedirs(admin, exist_ok=True)
    pm(admin, oda, "opm", "init")
    pm(admin, oda, "opm", "progress", "build_image")
    roots = []
    for i in range(nodes):
        name = "node%04d" % i
        root = os.path.join(work, name)
        os.makedirs(os.path.join(root, "etc/pm"))
        with open(os.path.join(root, "etc/opm.conf"), "w") as f:
            f.write("client\n%s\n" % name)
        with open(os.path.join(root, "etc/pm/sources.list"), "w") as f:
            f.write(repository + "\n")
        pm(admin, oda, "opm", "node", "add", name, "--role", "client")
        for package in packages:
            pm(admin, oda, "opm", "request", name, package, "install-bin-pkgs")
        roots.append(root)
    install = timed_syncs(roots, oda)
    noop = timed_syncs(roots, oda)
    status = json.loads(pm(admin, oda, "--json", "opm", "status"))
    done = sum(1 for row in status["rows"] if row["current"] == "install-bin-pkgs" and row["status"] == "ok")
    if done != nodes * len(packages):
        raise SystemExit("only %d of %d rows reached install-bin-pkgs" % (done, nodes * len(packages)))
    return {"nodes": nodes, "install_seconds": round(install, 3),
            "install_syncs_per_second": round(nodes / install, 2),
            "noop_seconds": round(noop, 3), "noop_syncs_per_second": round(nodes / noop, 2)}


def postgres_schema(base, action, schema):
    import psycopg
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(("CREATE SCHEMA %s" if action == "create" else "DROP SCHEMA %s CASCADE") % schema)


# -- the fleet simulation (--fleet) ----------------------------------------------------------
#
# A generated 10,000-node ODA on a PostgreSQL of the benchmark's own (initdb, with
# max_connections=100 and pg_stat_statements), directly and through a PgBouncer of its own
# in pool_mode = transaction; node workers are threads of this process, each with one ODA
# connection, each node with its own root on tmpfs, running pm's own sync code (OpmSync,
# NodeActions: nothing stubbed).  Without initdb, the URL given is used instead, where
# pg_stat_statements may be missing (the report says what was available).

def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_postgres(command):
    """``command`` run as the postgres user when this is root (initdb and pgbouncer refuse root)."""
    if os.geteuid() != 0:
        return command
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"] + command


class PrivatePostgres:
    def __init__(self, top, max_connections):
        self.data = os.path.join(top, "pgdata")
        os.makedirs(self.data)
        if os.geteuid() == 0:
            import pwd
            user = pwd.getpwnam("postgres")
            os.chown(top, user.pw_uid, user.pw_gid)
            os.chown(self.data, user.pw_uid, user.pw_gid)
        subprocess.run(as_postgres(["initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
                       check=True, capture_output=True)
        self.port = free_port()
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("listen_addresses = '127.0.0.1'\nport = %d\nmax_connections = %d\n"
                    "unix_socket_directories = ''\nshared_preload_libraries = 'pg_stat_statements'\n"
                    "pg_stat_statements.track = all\nshared_buffers = 128MB\n" % (self.port, max_connections))
        subprocess.run(as_postgres(["pg_ctl", "-D", self.data, "-w", "-l", os.path.join(self.data, "log"), "start"]),
                       check=True, capture_output=True)
        self.url = "postgresql://postgres@127.0.0.1:%d/postgres" % self.port
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            self.pid = int(f.readline())

    def stop(self):
        subprocess.run(as_postgres(["pg_ctl", "-D", self.data, "-m", "fast", "stop"]), capture_output=True)


class Bouncer:
    def __init__(self, top, server_url, pool_size=20, max_client_conn=2000):
        from urllib.parse import urlparse
        server = urlparse(server_url)
        directory = tempfile.mkdtemp(dir=top, prefix="pgbouncer-")
        os.chmod(directory, 0o755)
        self.port = free_port()
        users = os.path.join(directory, "users.txt")
        with open(users, "w") as f:
            f.write('"postgres" ""\n')
        config = os.path.join(directory, "pgbouncer.ini")
        with open(config, "w") as f:
            f.write("[databases]\noda = host=%s port=%d dbname=%s user=postgres\n[pgbouncer]\n"
                    "listen_addr = 127.0.0.1\nlisten_port = %d\nunix_socket_dir =\nauth_type = trust\n"
                    "auth_file = %s\npool_mode = transaction\nmax_client_conn = %d\ndefault_pool_size = %d\n"
                    "ignore_startup_parameters = extra_float_digits,options\nserver_reset_query =\n"
                    "logfile =\npidfile =\n" % (server.hostname, server.port or 5432, server.path.lstrip("/"),
                                                self.port, users, max_client_conn, pool_size))
        command = ["pgbouncer", config] if os.geteuid() != 0 else ["pgbouncer", "-u", "postgres", config]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = "postgresql://postgres@127.0.0.1:%d/oda" % self.port
        import psycopg
        for _ in range(100):
            try:
                psycopg.connect(self.url, autocommit=True, prepare_threshold=None).close()
                return
            except psycopg.Error:
                time.sleep(0.1)
        raise SystemExit("pgbouncer did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def process_cpu(pids, parent=None):
    """utime + stime, in seconds, of these processes; for ``parent`` also the CPU of its
    children it has reaped (a backend that ended counts there)."""
    total = 0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            if pid == parent:
                total += int(fields[13]) + int(fields[14])
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


def children_of(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return found


def server_counters(url):
    """Counters of the whole server: rows written, commits, WAL bytes, and the calls
    pg_stat_statements saw (None when it is not loaded)."""
    import psycopg
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        rows = conn.execute("SELECT sum(tup_inserted + tup_updated + tup_deleted), sum(xact_commit)"
                            " FROM pg_stat_database").fetchone()
        wal = conn.execute("SELECT wal_bytes FROM pg_stat_wal").fetchone()[0]
        try:
            calls = int(conn.execute("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query NOT"
                                     " ILIKE '%pg_stat%'").fetchone()[0])
        except psycopg.Error:
            calls = None
    return {"rows_written": int(rows[0] or 0), "commits": int(rows[1] or 0), "wal_bytes": int(wal), "calls": calls}


def generate_fleet(pm, url, nodes, packages):
    """10,000 clients (say) and a server, each client with ``packages`` rows at their
    request and the digest of the (empty) inventory of its new root."""
    import psycopg
    oda = pm.Oda(url, create=True)
    oda.migrate()
    oda.close()
    digest = pm.Oda.inventory_digest({})
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.cursor().copy("COPY nodes (name, role, added, inventory_digest) FROM STDIN") as copy:
            copy.write_row(("head", "server", time.time(), None))
            for i in range(nodes):
                copy.write_row(("n%05d" % i, "client", time.time(), digest))
        with conn.cursor().copy("COPY package_status (node, package, requested, current, status, updated)"
                                " FROM STDIN") as copy:
            for i in range(nodes):
                for p in range(packages):
                    copy.write_row(("n%05d" % i, "pkg%02d" % p, "install-bin-pkgs", "install-bin-pkgs", "ok", 0.0))
        conn.execute("UPDATE cluster_progress SET step = 'post_install'")
        conn.execute("VACUUM ANALYZE")


def make_root(base, name, repository, role="client"):
    root = os.path.join(base, name)
    os.makedirs(os.path.join(root, "etc/pm"), exist_ok=True)
    with open(os.path.join(root, "etc/opm.conf"), "w") as f:
        f.write("%s\n%s\n" % (role, name))
    with open(os.path.join(root, "etc/pm/sources.list"), "w") as f:
        f.write(repository + "\n")
    return root


_ARGS = {}


def sync_one(pm, oda, root, name):
    """One node's sync with pm's own code (as ``pm --root ROOT opm sync`` runs it, the
    command line parsed once); raises on failure."""
    if "args" not in _ARGS:
        _ARGS["args"] = pm.parse_arguments(["--root", root, "-q", "--json", "--unsafe-io", "opm", "sync"])
    args = argparse.Namespace(**vars(_ARGS["args"]))
    args.root = root
    session = pm.open_session(args)
    try:
        view = oda.sync_view(name)
        sync = pm.OpmSync(oda, pm.NodeActions(session), session.out, 600.0)
        sync.sync(view, root)
        bad = [r for r in sync.report if r["status"] == "error"]
        if bad or sync.busy:
            raise RuntimeError("%s: %s" % (name, bad or sync.busy))
    finally:
        session.close()


def run_workers(pm, url, names, roots, workers, new_connection, deadline=600.0, barrier=False):
    """Sync ``names`` with ``workers`` threads; latencies, statements, failures."""
    import threading
    queue = list(reversed(names))
    lock = threading.Lock()
    latencies, failures, statements = [], [], [0]
    gate = threading.Barrier(workers) if barrier else None

    def work():
        oda = None
        try:
            if gate:
                gate.wait()
            while True:
                with lock:
                    if not queue:
                        return
                    name = queue.pop()
                start = time.perf_counter()
                try:
                    if oda is None or new_connection:
                        oda = pm.Oda(url, deadline=deadline).require_schema()
                    before = oda.statements
                    sync_one(pm, oda, roots[name], name)
                    used = oda.statements - before
                    if new_connection:
                        used += 1                       # the schema check of the new connection
                        oda.close()
                        oda = None
                except Exception as e:                  # counted, not fatal: the report says how many
                    with lock:
                        failures.append("%s: %s" % (name, e))
                    if oda is not None:
                        oda.close()
                        oda = None
                    continue
                with lock:
                    latencies.append(time.perf_counter() - start)
                    statements[0] += used
        finally:
            if oda is not None:
                oda.close()
    threads = [threading.Thread(target=work) for _ in range(workers)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"seconds": time.perf_counter() - start, "latencies": sorted(latencies), "failures": failures,
            "statements": statements[0]}


def percentile(values, fraction):
    return values[min(len(values) - 1, int(len(values) * fraction))] if values else None


def measured_phase(pm, label, server, url, names, roots, workers, new_connection, server_pids, bouncer=None,
                   barrier=False, deadline=600.0):
    stats_url = server.url
    before = server_counters(stats_url)
    try:
        import psycopg
        with psycopg.connect(stats_url, autocommit=True) as conn:
            conn.execute("SELECT pg_stat_statements_reset()")
        before["calls"] = 0 if before["calls"] is not None else None
    except Exception:
        pass
    cpu_before = process_cpu(server_pids(), server.pid)
    result = run_workers(pm, url, names, roots, workers, new_connection, deadline, barrier)
    if bouncer:
        bouncer.stop()                          # its server connections end: their CPU and statistics are in
    time.sleep(1.5)
    cpu = process_cpu(server_pids(), server.pid) - cpu_before
    after = server_counters(stats_url)
    n = len(result["latencies"])
    syncs = max(n, 1)
    entry = {"phase": label, "syncs": n, "failed": len(result["failures"]), "workers": workers,
             "connection": "new per sync" if new_connection else "one kept per worker",
             "syncs_per_second": round(n / result["seconds"], 1), "seconds": round(result["seconds"], 2),
             "p50_ms": round(1000 * percentile(result["latencies"], 0.5), 2) if n else None,
             "p99_ms": round(1000 * percentile(result["latencies"], 0.99), 2) if n else None,
             "statements_per_sync_client_count": round(result["statements"] / syncs, 2),
             "rows_written_per_sync": round((after["rows_written"] - before["rows_written"]) / syncs, 3),
             "commits_per_sync": round((after["commits"] - before["commits"]) / syncs, 2),
             "wal_bytes_per_sync": round((after["wal_bytes"] - before["wal_bytes"]) / syncs, 1),
             "server_cpu_ms_per_sync": round(1000 * cpu / syncs, 3)}
    if after["calls"] is not None and before["calls"] is not None:
        entry["statements_per_sync_pg_stat_statements"] = round((after["calls"] - before["calls"]) / syncs, 2)
    if result["failures"]:
        entry["first_failure"] = result["failures"][0][:300]
    return entry


def fleet(args):
    sys.path.insert(0, REPO)
    import pm
    top = tempfile.mkdtemp(prefix="pm-bench-fleet-")
    shm = tempfile.mkdtemp(prefix="pm-bench-roots-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    server = None
    report = {"benchmark": "opm_fleet", "nodes": args.fleet_nodes, "packages_per_node": args.packages_per_node,
              "python": platform.python_version(), "cpus": os.cpu_count(), "phases": []}
    try:
        server = PrivatePostgres(top, 100)
        report["server"] = "a PostgreSQL of its own (initdb), max_connections=100, pg_stat_statements loaded"
        import psycopg
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            report["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]

        def server_pids():
            return [server.pid] + children_of(server.pid)
        started = time.monotonic()
        generate_fleet(pm, server.url, args.fleet_nodes, args.packages_per_node)
        repository = os.path.join(top, "repo")
        # bench0, the one-package request: without a script, as a process that is many
        # threads may not exec a file another thread's fork still holds open (ETXTBSY)
        packages = make_repository(repository, 1, with_scripts=False)
        names = ["n%05d" % i for i in range(args.fleet_nodes)]
        roots = {name: make_root(shm, name, repository) for name in names}
        report["setup_seconds"] = round(time.monotonic() - started, 1)
        noop = names[:args.noop_syncs]
        report["phases"].append(measured_phase(pm, "no-op, direct", server, server.url, noop, roots,
                                               args.workers, False, server_pids))
        bouncer = Bouncer(top, server.url)
        report["phases"].append(measured_phase(pm, "no-op, through PgBouncer (transaction mode)", server,
                                               bouncer.url, noop, roots, args.workers, True, server_pids,
                                               bouncer=bouncer))
        herd = names[:args.herd]
        bouncer = Bouncer(top, server.url)
        report["phases"].append(measured_phase(pm, "herd: %d at once, through PgBouncer" % len(herd), server,
                                               bouncer.url, herd, roots, len(herd), True, server_pids,
                                               bouncer=bouncer, barrier=True))
        report["phases"].append(measured_phase(pm, "herd: %d at once, direct (max_connections=100, backoff)"
                                               % len(herd), server, server.url, herd, roots, len(herd), True,
                                               server_pids, barrier=True))
        # convergence: the server asks for one new package; it gives it to every client
        # at post-clients (one statement); every client syncs and installs it
        converge = names[:args.converge_nodes]
        head = make_root(shm, "head", repository, "server")
        oda = pm.Oda(server.url).require_schema()
        if args.converge_nodes < args.fleet_nodes:
            with psycopg.connect(server.url, autocommit=True) as conn:
                conn.execute("DELETE FROM nodes WHERE role = 'client' AND name >= %s", ("n%05d" % args.converge_nodes,))
        oda.request("head", packages[0], "post-clients")
        start = time.monotonic()
        sync_one(pm, oda, head, "head")
        assign_seconds = time.monotonic() - start
        oda.close()
        bouncer = Bouncer(top, server.url)
        phase = measured_phase(pm, "install: %d nodes converge on a one-package request, through PgBouncer"
                               % len(converge), server, bouncer.url, converge, roots, args.workers, True,
                               server_pids, bouncer=bouncer)
        phase["converged_seconds_after_request"] = round(time.monotonic() - start, 1)
        phase["server_sync_with_assignment_seconds"] = round(assign_seconds, 2)
        with psycopg.connect(server.url, autocommit=True) as conn:
            reached = conn.execute("SELECT count(*) FROM package_status WHERE package = %s AND current ="
                                   " 'install-bin-pkgs' AND status = 'ok' AND node <> 'head'", (packages[0],)).fetchone()[0]
            in_error = conn.execute("SELECT count(*) FROM package_status WHERE package = %s AND status = 'error'",
                                    (packages[0],)).fetchone()[0]
            ups = conn.execute("SELECT count(*), count(DISTINCT node) FROM events WHERE package = %s AND stage ="
                               " 'install-bin-pkgs' AND direction = 'up' AND node <> 'head'", (packages[0],)).fetchone()
        installed = sum(os.path.exists(os.path.join(roots[n], "usr/share/%s/file0" % packages[0])) for n in converge)
        phase["rows_in_error"] = in_error
        phase["lost_updates"] = len(converge) - reached - in_error
        phase["duplicated_stages"] = ups[0] - ups[1]
        phase["nodes_with_the_package_installed"] = installed
        report["phases"].append(phase)
    finally:
        if server:
            server.stop()
        shutil.rmtree(shm, ignore_errors=True)
        shutil.rmtree(top, ignore_errors=True)
    return report


def results_section(report, command):
    lines = ["## OPM fleet simulation (bench_opm.py --fleet)", "",
             "Command: `%s`; %s; PostgreSQL %s; %d nodes x %d package rows; Python %s, %d CPUs (shared with "
             "other work). Node workers are threads of one process running pm's own sync code, each node with its "
             "own root on tmpfs. Statements per sync are counted in-process and by pg_stat_statements; rows "
             "written, commits and WAL bytes are pg_stat_database / pg_stat_wal deltas; server CPU is the "
             "utime+stime of the PostgreSQL processes (PgBouncer's own not included)."
             % (command, report.get("server"), report.get("postgresql"), report["nodes"],
                report["packages_per_node"], report["python"], report["cpus"]), "",
             "| phase | syncs | failed | syncs/s | p50 ms | p99 ms | statements/sync (pm / pg_stat_statements) "
             "| rows written/sync | commits/sync | WAL bytes/sync | server CPU ms/sync |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in report["phases"]:
        lines.append("| %s (%s, %d workers) | %d | %d | %s | %s | %s | %s / %s | %s | %s | %s | %s |" % (
            p["phase"], p["connection"], p["workers"], p["syncs"], p["failed"], p["syncs_per_second"], p["p50_ms"],
            p["p99_ms"], p["statements_per_sync_client_count"], p.get("statements_per_sync_pg_stat_statements", "n/a"),
            p["rows_written_per_sync"], p["commits_per_sync"], p["wal_bytes_per_sync"], p["server_cpu_ms_per_sync"]))
    last = report["phases"][-1]
    if "converged_seconds_after_request" in last:
        lines += ["", "Convergence: %d nodes reached install-bin-pkgs of the new package %.1f s after the request "
                  "(the server's sync, assigning it to every client in one statement, took %.2f s); rows in error: %d; "
                  "lost updates: %d; stages run twice: %d; nodes with the package installed: %d."
                  % (last["syncs"], last["converged_seconds_after_request"],
                     last["server_sync_with_assignment_seconds"], last["rows_in_error"], last["lost_updates"],
                     last["duplicated_stages"], last["nodes_with_the_package_installed"])]
    lines += ["", "Notes: a no-op sync on a kept connection is one statement (the schema is checked once per "
              "connection), on a new one two; the commits counted are those of read-only statements in autocommit "
              "(pg_stat_database counts them; they write no WAL, see WAL bytes). Server CPU includes forking a "
              "backend per connection where there is no pooler (the direct herd), and the autovacuum and "
              "checkpointer of the run. The herd phases start all their threads at a barrier; the direct one "
              "gets \"too many clients\" beyond max_connections and retries with jittered exponential backoff. "
              "The converging package has no script: in one process of many threads a fork can hold another "
              "thread's new script file open, which then cannot be executed (ETXTBSY) - pm's syncs are processes "
              "of their own. The machine is shared, so latencies and syncs/s vary between runs by 1.5-3x."]
    return "\n".join(lines) + "\n"


def write_results_section(path, section):
    """Replace this benchmark's own section of RESULTS.md (or add it), leaving the others."""
    title = section.splitlines()[0]
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    if title in text:
        head, rest = text.split(title, 1)
        following = rest.find("\n## ")
        text = head + section + (rest[following + 1:] if following >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path, "w") as f:
        f.write(text)


def main():
    if "--fleet" in sys.argv:
        parser = argparse.ArgumentParser(description="the OPM fleet simulation")
        parser.add_argument("--fleet", action="store_true")
        parser.add_argument("--fleet-nodes", type=int, default=10_000)
        parser.add_argument("--packages-per-node", type=int, default=20)
        parser.add_argument("--workers", type=int, default=16, help="node worker threads")
        parser.add_argument("--noop-syncs", type=int, default=3000, help="no-op syncs per measured phase")
        parser.add_argument("--herd", type=int, default=1000, help="clients started at once")
        parser.add_argument("--converge-nodes", type=int, default=10_000, help="nodes that install the new package")
        parser.add_argument("--results", metavar="FILE", help="write the section into this RESULTS.md")
        args = parser.parse_args()
        report = fleet(args)
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
        if args.results:
            write_results_section(args.results, results_section(report, "python3 bench/bench_opm.py " +
                                                                " ".join(sys.argv[1:])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="1,4,16,32", help="node counts, comma-separated")
    parser.add_argument("--packages", type=int, default=3, help="packages each node installs")
    parser.add_argument("--postgres", default=os.environ.get("PM_BENCH_POSTGRES_URL")
                        or os.environ.get("PM_TEST_POSTGRES_URL"), metavar="URL")
    args = parser.parse_args()
    counts = [int(n) for n in args.nodes.split(",")]
    top = tempfile.mkdtemp(prefix="pm-bench-opm-")
    report = {"benchmark": "opm_sync", "python": platform.python_version(), "cpus": os.cpu_count(),
              "packages_per_node": args.packages, "node_counts": counts,
              "method": "N client syncs (each a new pm process: Python start, and psycopg import for PostgreSQL) "
                        "started at once; syncs per second = N / wall time",
              "backends": {}}
    try:
        repository = os.path.join(top, "repo")
        packages = make_repository(repository, args.packages)
        runs = []
        for n in counts:
            work = os.path.join(top, "sqlite-%d" % n)
            runs.append(measure(work, "sqlite://" + os.path.join(work, "oda.sqlite"), n, packages, repository))
        report["backends"]["sqlite"] = {"runs": runs}
        if not args.postgres:
            report["backends"]["postgresql"] = {"skipped": "no PostgreSQL URL (--postgres, $PM_BENCH_POSTGRES_URL "
                                                           "or $PM_TEST_POSTGRES_URL)"}
        else:
            runs = []
            for n in counts:
                schema = "pm_bench_" + uuid.uuid4().hex[:12]
                postgres_schema(args.postgres, "create", schema)
                try:
                    url = args.postgres + ("&" if "?" in args.postgres else "?") + "options=-csearch_path%3D" + schema
                    runs.append(measure(os.path.join(top, "pg-%d" % n), url, n, packages, repository))
                finally:
                    postgres_schema(args.postgres, "drop", schema)
            report["backends"]["postgresql"] = {"runs": runs}
    finally:
        shutil.rmtree(top, ignore_errors=True)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
