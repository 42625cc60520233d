#!/usr/bin/env python3
"""Node syncs per second against an SQLite and a PostgreSQL ODA as the node count grows.

For each node count N, N client nodes (each with a root of its own) are asked for the same
packages, then all N run ``pm opm sync`` at once, as a cluster's nodes do from cron: the
"install" round installs every package on every node, the "no-op" round that follows finds
nothing to do and so measures the ODA's own cost (connect, lock, read, inventory).  Syncs
per second = N / wall-clock time from the first start to the last exit.

Standalone: ``python3 bench/bench_opm.py [--nodes 1,4,16,32] [--packages 3]
[--postgres URL]`` prints one JSON object on stdout.  PostgreSQL is measured when a URL is
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


def make_repository(directory, count):
    """``count`` packages of a few files and an install script each, published with
    tools/repoPackager.py as a directory source; returns their names."""
    built = directory + ".built"
    os.makedirs(built)
    names = []
    for i in range(count):
        name = "bench%d" % i
        files = {"/usr/share/%s/file%d" % (name, j): "%s %d\n" % (name, j) * 50 for j in range(5)}
        scripts = {"api-post-install": "#!/bin/sh\nexit 0\n"}
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
    done = sum(1 for row in status if row["current"] == "install-bin-pkgs" and row["status"] == "ok")
    if done != nodes * len(packages):
        raise SystemExit("only %d of %d rows reached install-bin-pkgs" % (done, nodes * len(packages)))
    return {"nodes": nodes, "install_seconds": round(install, 3),
            "install_syncs_per_second": round(nodes / install, 2),
            "noop_seconds": round(noop, 3), "noop_syncs_per_second": round(nodes / noop, 2)}


def postgres_schema(base, action, schema):
    import psycopg
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(("CREATE SCHEMA %s" if action == "create" else "DROP SCHEMA %s CASCADE") % schema)


def main():
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
