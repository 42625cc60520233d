#!/usr/bin/env python3
"""Resolving a 300-package closure in a repository of 12,000 packages.

Generates a repository index (4,000 names, three versions each) in the format
tools/repoPackager.py writes, loads it the way pm loads a source's index, then times
pm's resolver on `install app` whose closure is 300 packages: dependencies with ranges
that exclude the newest version, and newest versions that cannot be installed (their
dependency exists nowhere), so the resolver must go back to an older one.  Prints one
JSON object on stdout: {"name", "median_s", "runs", ...}.  Target: median under 0.3 s.

usage: bench_resolve.py [--runs N] [--seed N] [--names N] [--closure N]
"""

import argparse
import json
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import pm  # noqa: E402

VERSIONS = ("1.0.0", "1.1.0", "2.0.0")


def generate(names: int, closure: int, seed: int) -> list:
    """Index entries: p0000 (the app) reaches exactly p0000..p{closure-1}."""
    rng = random.Random(seed)
    entries = []
    for i in range(names):
        name = "p%04d" % i
        in_closure = i < closure
        for version in VERSIONS:
            dependencies = {}
            if in_closure:
                children = [j for j in range(i + 1, closure) if (j - 1) // 3 == i]   # a tree: all reachable
                children += rng.sample(range(i + 1, closure), min(2, closure - i - 1))  # plus diamonds
                for j in children:
                    dependencies["p%04d" % j] = rng.choice(("^1", ">=1.0,<2", ">=1", "*", "~1.1"))
                if version == "2.0.0" and rng.random() < 0.05:
                    dependencies["missing-%04d" % i] = ">=1"           # forces an older version
            else:
                for j in rng.sample(range(names), 3):
                    dependencies["p%04d" % j] = rng.choice(("^1", ">=1", "*"))
            manifest = {"manifestVersion": "1.0", "package": name, "version": version,
                        "description": "generated package %s" % name, "dependencies": dependencies}
            entries.append({"filename": "%s-%s.tar" % (name, version), "size": 10240,
                            "sha256": "%064x" % rng.getrandbits(256), "manifest": manifest})
    return entries


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--names", type=int, default=4000)
    parser.add_argument("--closure", type=int, default=300)
    args = parser.parse_args(argv)

    entries = generate(args.names, args.closure, args.seed)
    zstd = pm.lazy_import("zstandard", "the benchmark")
    data = zstd.ZstdCompressor(level=3).compress(
        pm._msgpack().packb({"format": pm.INDEX_FORMAT, "packages": entries}, use_bin_type=True))
    source = pm.Source("/nonexistent/bench-repository")
    quiet = pm.Output(verbosity=-1)
    started = time.perf_counter()
    loaded = pm.parse_index(data, pm.INDEX_MSGPACK, source, quiet)
    index_load_s = time.perf_counter() - started

    runs, size = [], 0
    for _ in range(args.runs):
        pool = pm.Pool()
        for entry in loaded:
            pool.add(pm.Candidate(entry["manifest"], source=source, entry=entry))
        started = time.perf_counter()
        chosen, _ = pm.resolve_requests(pool, [pm.parse_spec("p0000")])
        runs.append(time.perf_counter() - started)
        size = len(chosen)
    if size != args.closure:
        sys.stderr.write("bench_resolve: the closure has %d packages, not %d\n" % (size, args.closure))
        return 1
    result = {"name": "resolve_closure", "median_s": statistics.median(runs), "runs": runs,
              "packages": len(entries), "closure": size, "index_load_s": index_load_s,
              "target_s": 0.3, "python": sys.version.split()[0]}
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
