#!/usr/bin/env python3
"""Run every pm benchmark side by side and write bench/RESULTS.md.

usage: python bench/run.py [--runs N] [--quick] [--out bench/RESULTS.md] [--only NAME,...]
                           [--no-installed] [--dir DIR]

  --runs N     runs per measurement; the median is reported (default 5)
  --quick      smoke check: 2 runs and smaller sizes
  --out FILE   where to write the report (default bench/RESULTS.md)
  --only LIST  run only these benchmarks (comma-separated): install, upgrade, uninstall,
               list, startup, memory, resolve, oda
  --no-installed  leave out pm as installed (see below)
  --dir DIR    where to work (default /dev/shm, a tmpfs, where there is one)

Every pm command runs as a new process with this interpreter, timed with the wall clock
around the whole process.  pm runs from its compiled bytecode, `import pm; pm.main()`, the
way the /usr/bin/pm launcher of an installed pm runs it (the installer ships pm.py with its
.pyc); the start-up rows also show `python pm.py`, which compiles pm.py on every start.
pm --version and list-installed also run as pm is installed: /usr/bin/pm of the pm package
that installer/make_medium.py builds (installed by the medium's install.py into a root of
its own), and the console script of a `pip install` into a venv the benchmark makes; their
floor is that venv's `python -c pass`.  install, upgrade and uninstall compare pm with
dpkg, pacman (installed with apt-get where missing; skipped, with a note, unless root) and
tar on the same tree.  Each timed run
gets a fresh root prepared outside the timed part; the page cache is flushed (sync) before
every timed command.  Peak memory is the pm process's own max RSS (os.wait4 in a small process that forks it).  All work is
done in a temporary directory under /var/tmp, removed at the end.

The report's last section, from the line starting "## Profile findings" to the end, is
written by hand and kept as it is when the report is rewritten.

Exit status: 0 when every benchmark ran (targets met or not: the table says which); 1 when
a benchmark failed (a command it ran exited non-zero), after a one-line error.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PM = os.path.join(REPO, "pm.py")
PY = sys.executable
sys.path.insert(0, HERE)
import fixtures as F  # noqa: E402

BENCHMARKS = ("startup", "resolve", "install", "upgrade", "uninstall", "list", "memory", "oda")
FINDINGS = "## Profile findings"


class BenchError(Exception):
    """A benchmark could not run: a command exited non-zero."""


class Result:
    """One row of the table: pm's figure, what it is compared with, and the targets:
    ``target``, the most pm's own figure may be, and ``targets``, [(ratio, most)], the
    most each ratio may be (pm/dpkg <= 0.6...).  ``unit`` is "s", "MiB" or "syncs/s"."""

    def __init__(self, name, pm, unit, compared=(), target=None, notes="", targets=()):
        self.name, self.pm, self.unit = name, pm, unit
        self.compared = list(compared)      # [(label, value)] or [(label, value, ratio name)]
        self.target, self.notes = target, notes
        self.targets = list(targets)
        self.error = None

    def ratios(self):
        """[(name, pm / other)]: the name is "pm/" and the label's first word, unless
        the compared entry names its ratio itself."""
        if self.unit == "syncs/s" or self.pm is None:
            return []
        return [(entry[2] if len(entry) > 2 else "pm/" + entry[0].split()[0], self.pm / entry[1])
                for entry in self.compared if entry[1]]

    def verdicts(self):
        """[(what, target, measured, verdict)]: one row per target."""
        rows = []
        if self.target is not None:
            rows.append(("pm", "<= " + fmt(self.target, self.unit), fmt(self.pm, self.unit),
                         verdict(self.pm, self.target)))
        ratios = dict(self.ratios())
        for name, most in self.targets:
            value = ratios.get(name)
            rows.append((name, "<= %.2f" % most, "-" if value is None else "%.2f" % value,
                         "not measured" if value is None else verdict(value, most)))
        return rows

    def met(self):
        if self.error:
            return "FAILED"
        verdicts = [v[3] for v in self.verdicts() if v[3] != "not measured"]
        if not verdicts:
            return "-"
        return "yes" if all(v == "met" for v in verdicts) else "no"


def verdict(value, most):
    """"met" when ``value`` <= ``most``, else by how much it is missed."""
    if value is None:
        return "not measured"
    return "met" if value <= most else "missed by %.0f%%" % ((value / most - 1) * 100)


def fmt(value, unit):
    if value is None:
        return "-"
    if unit == "s":
        return "%.1f ms" % (value * 1000) if value < 1 else "%.2f s" % value
    if unit == "MiB":
        return "%.1f MiB" % value
    return "%.1f %s" % (value, unit)


# -- running and timing commands ----------------------------------------------------------

def warm(path):
    """Read ``path`` so that it is in the page cache (this machine reclaims cold pages
    within seconds: an input read from disk would time the disk, not the tool)."""
    with open(path, "rb") as f:
        while f.read(1 << 20):
            pass


def measure(argv, sync=True, env=None):
    """Run ``argv`` once (with ``env``, else this environment): (wall seconds, stdout bytes).  Raises
    BenchError with the last line of its stderr when it exits non-zero.  Every existing
    file named in ``argv`` (the archive a tool reads) is read first, into the cache."""
    if sync:
        os.sync()
    for arg in argv:
        if os.path.isfile(arg):
            warm(arg)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        proc.wait()
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            err.seek(0)
            lines = err.read().decode(errors="replace").strip().splitlines() or ["(no message)"]
            shown = " ".join(os.path.basename(a) if os.path.isabs(a) else a for a in argv[:6])
            raise BenchError("`%s` exited %d: %s" % (shown, proc.returncode, lines[-1]))
        out.seek(0)
        return seconds, out.read()


# pm as its launcher runs it: imported, so from the bytecode compiled once below.
RUN_PM = "import sys; sys.path.insert(0, %r); import pm; sys.exit(pm.main())" % REPO


def compile_pm():
    """Compile pm.py to its __pycache__ .pyc (as the installer does for a node), even
    where PYTHONDONTWRITEBYTECODE is set."""
    import importlib.util
    import py_compile
    py_compile.compile(PM, cfile=importlib.util.cache_from_source(PM), doraise=True)


# A child starts as a copy of this (large) process until it execs, and the kernel counts
# that copy in the child's max RSS: for memory, a small process forks the command and
# reports the max RSS of that grandchild alone.
RSS_OF = ("import os, sys\n"
          "pid = os.fork()\n"
          "if pid == 0:\n"
          "    os.execvp(sys.argv[2], sys.argv[2:])\n"
          "_, status, usage = os.wait4(pid, 0)\n"
          "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
          "sys.exit(os.waitstatus_to_exitcode(status))\n")


def peak_rss(argv):
    """Run ``argv`` once (untimed): its own max RSS in KiB."""
    with tempfile.NamedTemporaryFile("r") as report:
        measure([PY, "-S", "-c", RSS_OF, report.name] + argv, sync=False)
        return int(report.read())


def pm_argv(root, *args):
    return [PY, "-c", RUN_PM, "--root", root] + list(args)


def median(values):
    return statistics.median(values)


class Context:
    """The run's settings, its work directory, and fixtures built once and shared.
    Roots are never deleted between runs, only with the work directory at the end:
    deleting many files makes the next ones slow to create (on a filesystem mounted
    with ``discard``, much slower), which would blur the runs that follow."""

    def __init__(self, runs, quick, work, installed=True):
        self.runs, self.quick, self.work, self.installed = runs, quick, work, installed
        self._big = None
        self._counter = 0
        self._pacman = self._launcher = self._console = None

    def pacman_missing(self):
        """None when the pacman rows can run, else why they are skipped."""
        if self._pacman is None:
            self._pacman = [F.pacman_missing()]
        return self._pacman[0]

    def path(self, name):
        return os.path.join(self.work, name)

    def fresh_root(self, dpkg=False, pacman=False):
        """A new empty directory (with a dpkg admin dir when ``dpkg``, pacman's database
        directory when ``pacman``)."""
        self._counter += 1
        root = self.path("root%04d" % self._counter)
        os.makedirs(root)
        if dpkg:
            F.init_dpkg_root(root)
        if pacman:
            F.init_pacman_root(root)
        return root

    def launcher(self):
        """pm as the pm package installs it: the installer medium that
        installer/make_medium.py builds from this pm.py, installed with its install.py
        into a root of its own; returns that root's usr/bin/pm (run through its first
        line, as a user runs it).  Built once."""
        if self._launcher is None:
            medium, tool = self.path("medium"), self.path("pm-root")
            F.run([PY, os.path.join(REPO, "installer", "make_medium.py"), "--out", medium, "-q"])
            F.run([PY, os.path.join(medium, "install.py"), "--root", tool])
            self._launcher = os.path.join(tool, "usr", "bin", "pm")
        return self._launcher

    def console(self):
        """pm as ``pip install`` gives it: a venv made from this interpreter, pm installed
        into it from this checkout (not editable).  Returns (the venv's python, its
        ``pm`` command: bin/pm, which starts Python with -I -S).  Built once; raises
        RuntimeError when pip cannot install pm (no package index for setuptools...)."""
        if self._console is None:
            venv = self.path("venv")
            F.run([PY, "-m", "venv", venv])
            python = os.path.join(venv, "bin", "python")
            F.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", REPO])
            self._console = (python, os.path.join(venv, "bin", "pm"))
        return self._console

    def big(self):
        """The 5,000-file package, version 1 and 2 (half the files changed), as a pm
        package, a plain tar of DATA, an uncompressed .deb and (where pacman runs) an
        uncompressed pacman package."""
        if self._big is None:
            files, megabytes = (1000, 5) if self.quick else (5000, 25)
            layout = F.file_layout(files, 100, megabytes * F.MIB, seed=1)
            changed = set(range(0, files, 2))
            fx = {"files": files, "megabytes": megabytes, "layout": layout, "changed": changed}
            for v, version in ((1, "1.0.0"), (2, "2.0.0")):
                src = self.path("big-src%d" % v)
                F.write_manifest(src, "big", version)
                F.write_tree(os.path.join(src, "DATA"), layout, seed=1, changed=changed if v == 2 else None)
                fx["src%d" % v] = src
                fx["pm%d" % v] = F.build_pm(src, self.path("big-pkg%d" % v))
                fx["tar%d" % v] = F.build_tar(os.path.join(src, "DATA"), self.path("big%d.tar" % v))
                fx["deb%d" % v] = F.build_deb(os.path.join(src, "DATA"), "big", version, self.work,
                                              self.path("big_%s_all.deb" % version))
                if not self.pacman_missing():
                    fx["pac%d" % v] = F.build_pacman(os.path.join(src, "DATA"), "big", version,
                                                     self.path("big-%s-1-any.pkg.tar" % version))
            self._big = fx
        return self._big


def count_files(top):
    return sum(len(names) for _, _, names in os.walk(top))


def check(condition, message):
    if not condition:
        raise BenchError(message)


# -- the benchmarks -----------------------------------------------------------------------

def installed_forms(ctx):
    """The installed pm: ({form: argv prefix}, {form: environment}, the floor's argv,
    the venv's python, [notes on what could not be made]).
    The launcher's first line runs ``python3`` from PATH: the venv's, so that one
    interpreter is both the floor and pm's."""
    forms, envs, notes, floor = {}, {}, [], None
    if not ctx.installed:
        return forms, envs, [PY, "-c", "pass"], PY, ["not measured (--no-installed)"]
    try:
        python, script = ctx.console()
        forms["console"], floor = [script], [python, "-c", "pass"]
    except RuntimeError as e:
        notes.append("no venv with pm (pip install failed: %s): no console script rows" % e)
        python = PY
    try:
        forms["launcher"] = [ctx.launcher()]
        envs["launcher"] = dict(os.environ, PATH=os.path.dirname(python) + os.pathsep + os.environ.get("PATH", ""))
    except RuntimeError as e:
        notes.append("no pm package (installer/make_medium.py or install.py failed: %s): no launcher rows" % e)
    return forms, envs, floor or [PY, "-c", "pass"], python, notes


INSTALLED_LABELS = {"launcher": "/usr/bin/pm of the pm package",
                    "console": "pip console script"}


def bench_startup(ctx):
    """pm --version and list-installed on an empty root, against a bare Python start;
    pm --version also as it is installed (the pm package's launcher, pip's console
    script) against the same interpreter's -c pass."""
    empty = ctx.fresh_root()
    forms, envs, venv_floor, venv_python, form_notes = installed_forms(ctx)
    cases = {"pm --version": pm_argv(empty, "--version"),
             "pm list-installed": pm_argv(empty, "list-installed"),
             "script": [PY, PM, "--version"],
             "python -c pass": [PY, "-c", "pass"],
             "venv -c pass": venv_floor,
             "venv -I -S -c pass": [venv_floor[0], "-I", "-S", "-c", "pass"]}
    for form, prefix in forms.items():
        cases[form] = prefix + ["--version"]
    runs = ctx.runs * 3
    times = {label: [] for label in cases}
    for label, argv in cases.items():
        out = measure(argv, env=envs.get(label))[1]     # warm-up, not counted
        check(label not in forms or out.decode().strip() == "pm " + pm_version(),
              "%s --version said %r" % (label, out[:60]))
    for _ in range(runs):
        for label, argv in cases.items():
            times[label].append(measure(argv, sync=False, env=envs.get(label))[0])
    check(not os.listdir(empty), "pm list-installed wrote into an empty root")
    floor = median(times["python -c pass"])
    installed = []
    for form in ("launcher", "console"):
        if form not in forms:
            installed.append(Result("start-up: pm --version (%s)" % INSTALLED_LABELS[form], None, "s",
                                    targets=[("pm/python", 1.4)], notes="; ".join(form_notes)))
            continue
        installed.append(Result(
            "start-up: pm --version (%s)" % INSTALLED_LABELS[form], median(times[form]), "s",
            [("python -c pass", median(times["venv -c pass"])),
             ("python -I -S -c pass", median(times["venv -I -S -c pass"]), "pm/isolated-python")],
            targets=[("pm/python", 1.4)]))
    installed[0].notes = (
        "installed forms: %d runs each, interleaved with the rows above; the floor is `python -c pass` of the "
        "interpreter pm runs on, a venv made from %s with pm pip-installed into it (not editable). The launcher "
        "is /usr/bin/pm of the pm package that installer/make_medium.py builds from this pm.py, installed with "
        "the medium's install.py into a root of its own and run through its first line (`#!/bin/sh` execs "
        "`python3 -I -S`; python3 is the venv's, first on PATH). The console script is bin/pm as pip "
        "installed it: `#!/bin/sh` execs the venv's `python3 -I -S`, and the script adds the site-packages "
        "to sys.path itself (no .pth files read)%s." % (runs, os.path.basename(PY),
                                                       "; " + "; ".join(form_notes) if form_notes else ""))
    note = ("start-up rows: %d runs each after one warm-up, interleaved; floor: `%s -c pass` (same interpreter, "
            "with site). pm runs from its .pyc, as the /usr/bin/pm launcher runs it; the `python pm.py` row runs "
            "the same `--version` as a script, which Python compiles on every start (no .pyc for __main__): "
            "copy pm.py to a node and run it that way, and start-up costs that much more." % (
                runs, os.path.basename(PY)))
    return [Result("start-up: pm --version", median(times["pm --version"]), "s",
                   [("python -c pass", floor)], target=0.060, notes=note),
            Result("start-up: pm list-installed (empty root)", median(times["pm list-installed"]), "s",
                   [("python -c pass", floor)]),
            Result("start-up: python pm.py --version (no .pyc)", median(times["script"]), "s",
                   [("python -c pass", floor)])] + installed


def pm_version():
    with open(PM, encoding="utf-8") as f:
        for line in f:
            if line.startswith("__version__ = "):
                return line.split('"')[1]
    return "?"


def bench_resolve(ctx):
    """bench/bench_resolve.py: the resolver on a 300-package closure among 12,000."""
    argv = [PY, os.path.join(HERE, "bench_resolve.py"), "--runs", str(max(ctx.runs, 5))]
    if ctx.quick:
        argv = [PY, os.path.join(HERE, "bench_resolve.py"), "--runs", "2", "--names", "1000", "--closure", "100"]
    report = json.loads(measure(argv, sync=False)[1])
    note = "bench_resolve.py: %d packages, closure %d, %d runs in one process (index load %.0f ms, not counted)." % (
        report["packages"], report["closure"], len(report["runs"]), report["index_load_s"] * 1000)
    return [Result("resolve: %d-package closure" % report["closure"], report["median_s"], "s",
                   target=report.get("target_s", 0.3), notes=note)]


def pacman_note(ctx):
    missing = ctx.pacman_missing()
    return (" pacman: skipped, %s." % missing) if missing else (
        " %s installs an uncompressed .pkg.tar of the same tree (`.PKGINFO` first, no scriptlet), "
        "as `%s`." % (F.pacman_version(), " ".join(F.pacman_argv("R", "-U", "x.pkg.tar"))))


def compared_with_pacman(m, *labels):
    return [(label, m[label]) for label in labels if label in m]


def bench_install(ctx):
    """Install into an empty root: pm vs tar -xf vs dpkg -i vs pacman -U, and pm and
    dpkg with unsafe I/O."""
    fx = ctx.big()
    cases = {
        "pm": lambda r: pm_argv(r, "install", fx["pm1"]),
        "tar -xf": lambda r: ["tar", "-xf", fx["tar1"], "-C", r],
        "dpkg -i": lambda r: F.dpkg_argv(r, "-i", fx["deb1"]),
        "pacman -U": lambda r: F.pacman_argv(r, "-U", fx["pac1"]),
        "pm --unsafe-io": lambda r: pm_argv(r, "--unsafe-io", "install", fx["pm1"]),
        "dpkg --force-unsafe-io": lambda r: F.dpkg_argv(r, "--force-unsafe-io", "-i", fx["deb1"]),
    }
    if ctx.pacman_missing():
        del cases["pacman -U"]
    times, rss = {label: [] for label in cases}, []
    for run in range(ctx.runs):
        for label, argv in cases.items():
            root = ctx.fresh_root(dpkg=label.startswith("dpkg"), pacman=label.startswith("pacman"))
            seconds = measure(argv(root))[0]
            times[label].append(seconds)
            if label == "pm" and run == 0:
                rss.append(peak_rss(argv(ctx.fresh_root())))
            if run == 0:
                got = count_files(os.path.join(root, "usr"))
                check(got == fx["files"], "%s installed %d files, not %d" % (label, got, fx["files"]))
    what = "%d files, %d MiB in 100 directories" % (fx["files"], fx["megabytes"])
    note = ("%d runs, interleaved, each into a fresh empty root, also for the --unsafe-io row. pm installs the plain .tar that "
            "repoPackager writes; tar -xf an uncompressed tar of the same DATA tree; dpkg an uncompressed "
            "(`dpkg-deb -Znone`) .deb of the same tree, no maintainer scripts, so nobody pays for "
            "decompression. pm's max RSS: %.1f MiB.%s" % (ctx.runs, max(rss) / 1024, pacman_note(ctx)))
    m = {label: median(values) for label, values in times.items()}
    return [Result("install (%s)" % what, m["pm"], "s", compared_with_pacman(m, "dpkg -i", "pacman -U", "tar -xf"),
                   notes=note, targets=[("pm/dpkg", 0.6), ("pm/pacman", 1.0), ("pm/tar", 2.5)]),
            Result("install --unsafe-io", m["pm --unsafe-io"], "s",
                   [("dpkg --force-unsafe-io", m["dpkg --force-unsafe-io"])])]


def time_prepared(ctx, cases, check_first):
    """``cases``: {label: (preparation, timed command)}, both given a fresh root.  Runs
    them interleaved, ``check_first(label, root)`` after the first run of each; returns
    {label: median seconds of the timed command}."""
    times = {label: [] for label in cases}
    for run in range(ctx.runs):
        for label, (prepare, timed) in cases.items():
            root = ctx.fresh_root(dpkg=label.startswith("dpkg"), pacman=label.startswith("pacman"))
            measure(prepare(root))
            times[label].append(measure(timed(root))[0])
            if run == 0:
                check_first(label, root)
    return {label: median(values) for label, values in times.items()}


def bench_upgrade(ctx):
    """Version 2 (half the files changed) over version 1: pm vs dpkg vs pacman vs tar -xf."""
    fx = ctx.big()
    cases = {  # label: (preparation, timed command), both given the root
        "pm": (lambda r: pm_argv(r, "--unsafe-io", "install", fx["pm1"]),
               lambda r: pm_argv(r, "install", fx["pm2"])),
        "dpkg -i": (lambda r: F.dpkg_argv(r, "--force-unsafe-io", "-i", fx["deb1"]),
                    lambda r: F.dpkg_argv(r, "-i", fx["deb2"])),
        "pacman -U": (lambda r: F.pacman_argv(r, "-U", fx["pac1"]),
                      lambda r: F.pacman_argv(r, "-U", fx["pac2"])),
        "tar -xf": (lambda r: ["tar", "-xf", fx["tar1"], "-C", r],
                    lambda r: ["tar", "-xf", fx["tar2"], "-C", r]),
    }
    if ctx.pacman_missing():
        del cases["pacman -U"]
    sample = fx["layout"][0][0]          # file 0 is one of the changed ones
    with open(os.path.join(fx["src2"], "DATA", sample), "rb") as f:
        expected = f.read()
    def upgraded(label, root):
        with open(os.path.join(root, sample), "rb") as f:
            check(f.read() == expected, "%s did not upgrade %s" % (label, sample))
    m = time_prepared(ctx, cases, upgraded)
    note = ("%d files, %d of them with new content; %d runs. Version 1 is installed untimed (with unsafe I/O), "
            "then version 2 timed with the default (safe) I/O; tar -xf of v2 over the v1 tree is the floor.%s" % (
                fx["files"], len(fx["changed"]), ctx.runs, pacman_note(ctx)))
    return [Result("upgrade (half the files changed)", m["pm"], "s",
                   compared_with_pacman(m, "dpkg -i", "pacman -U", "tar -xf"), notes=note,
                   targets=[("pm/dpkg", 0.5), ("pm/pacman", 0.7)])]


def bench_uninstall(ctx):
    """Remove the installed package: pm uninstall vs dpkg -r vs pacman -R vs rm -rf of the tree."""
    fx = ctx.big()
    cases = {
        "pm": (lambda r: pm_argv(r, "--unsafe-io", "install", fx["pm1"]),
               lambda r: pm_argv(r, "uninstall", "big")),
        "dpkg -r": (lambda r: F.dpkg_argv(r, "--force-unsafe-io", "-i", fx["deb1"]),
                    lambda r: F.dpkg_argv(r, "-r", "big")),
        "pacman -R": (lambda r: F.pacman_argv(r, "-U", fx["pac1"]),
                      lambda r: F.pacman_argv(r, "-R", "big")),
        "rm -rf": (lambda r: ["tar", "-xf", fx["tar1"], "-C", r],
                   lambda r: ["rm", "-rf", os.path.join(r, "usr")]),
    }
    if ctx.pacman_missing():
        del cases["pacman -R"]
    def removed(label, root):
        check(not os.path.exists(os.path.join(root, "usr/share/bench")), "%s left files behind" % label)
    m = time_prepared(ctx, cases, removed)
    note = "%d files; %d runs; the package is installed untimed, then removed timed (default, safe I/O).%s" % (
        fx["files"], ctx.runs, pacman_note(ctx))
    return [Result("uninstall", m["pm"], "s", compared_with_pacman(m, "dpkg -r", "pacman -R", "rm -rf"),
                   notes=note, targets=[("pm/dpkg", 0.8), ("pm/pacman", 1.0)])]


def many_installed(ctx, count, files_each, tag):
    """A root where pm installed ``count`` packages of ``files_each`` files (untimed, in
    batches of 250); returns (root, [(name, [paths])])."""
    sources = F.many_small_sources(ctx.path(tag + "-src"), count, files_each, seed=3)
    packages = ctx.path(tag + "-pkg")
    F.run([PY, F.PACKAGER, "-d", packages, ctx.path(tag + "-src")])
    tars = sorted(os.path.join(packages, n) for n in os.listdir(packages) if n.endswith(".tar"))
    root = ctx.fresh_root()
    for start in range(0, len(tars), 250):
        measure(pm_argv(root, "--unsafe-io", "install", *tars[start:start + 250]))
    return root, sources


def bench_list(ctx):
    """list-installed on a root with many packages vs dpkg-query -W on the same set and
    vs the interpreter's start; the same at ten times the packages (the same number of
    files in all) against its time at the first size; pm run from the checkout and as
    it is installed."""
    (small, files_small), (large, files_large) = ((200, 100), (2000, 10)) if ctx.quick else \
        ((1000, 100), (10000, 10))
    root_small, sources = many_installed(ctx, small, files_small, "many")
    root_large, _ = many_installed(ctx, large, files_large, "more")
    dpkg_root = ctx.fresh_root(dpkg=True)
    admin = os.path.join(dpkg_root, "var/lib/dpkg")
    F.synthesize_dpkg_db(admin, [(name, "1.0.%d" % (i % 7), paths) for i, (name, paths) in enumerate(sources)])
    forms, envs, venv_floor, _, form_notes = installed_forms(ctx)
    cases = {"pm": (pm_argv(root_small, "list-installed"), small),
             "pm large": (pm_argv(root_large, "list-installed"), large),
             "dpkg-query -W": (["dpkg-query", "--admindir", admin, "-W"], small),
             "python -c pass": ([PY, "-c", "pass"], 0),
             "venv -c pass": (venv_floor, 0)}
    for form, prefix in forms.items():
        cases[form] = (prefix + ["--root", root_small, "list-installed"], small)
        cases[form + " large"] = (prefix + ["--root", root_large, "list-installed"], large)
    env_of = lambda label: envs.get(label.split()[0])
    for label, (argv, count) in cases.items():
        lines = measure(argv, env=env_of(label))[1].decode().splitlines()
        check(len(lines) == count, "%s listed %d packages, not %d" % (label, len(lines), count))
    times = {label: [] for label in cases}
    for _ in range(ctx.runs):
        for label, (argv, _) in cases.items():
            times[label].append(measure(argv, env=env_of(label))[0])
    m = {label: median(values) for label, values in times.items()}
    note = ("%d packages of %d files (%d files) installed with pm (untimed, in batches of 250); the dpkg database "
            "with the same names, versions and file lists is synthesized directly (status file + info/NAME.list), "
            "not installed from .debs. Prepared once; %d runs after one check run. pm runs from the checkout "
            "(`python -c 'import pm; pm.main()'`, as the other rows) against that interpreter's `-c pass`, and as "
            "it is installed (the start-up rows say how) against the venv's `-c pass`." % (
                small, files_small, small * files_small, ctx.runs))
    ratio = "%d/%d" % (large, small)
    results = [Result("list-installed (%d packages, %d files)" % (small, small * files_small), m["pm"], "s",
                      [("dpkg-query -W", m["dpkg-query -W"]), ("python -c pass", m["python -c pass"])],
                      targets=[("pm/python", 1.6)], notes=note),
               Result("list-installed (%d packages, %d files)" % (large, large * files_large), m["pm large"], "s",
                      [("%d packages" % small, m["pm"], ratio)], targets=[(ratio, 2.0)],
                      notes="%d packages of %d files: the same number of files as the row above, ten times the "
                            "packages; the ratio is to the row above." % (large, files_large))]
    for form in ("launcher", "console"):
        name = "list-installed (%s, %%d packages)" % INSTALLED_LABELS[form]
        if form not in forms:
            results.append(Result(name % small, None, "s", targets=[("pm/python", 1.6)], notes="; ".join(form_notes)))
            continue
        results.append(Result(name % small, m[form], "s", [("python -c pass", m["venv -c pass"])],
                              targets=[("pm/python", 1.6)]))
        results.append(Result(name % large, m[form + " large"], "s", [("%d packages" % small, m[form], ratio)],
                              targets=[(ratio, 2.0)]))
    return results


def bench_memory(ctx):
    """Peak RSS of pm install for a 1 GiB package, against a tiny package."""
    megabytes = 64 if ctx.quick else 1024
    src = ctx.path("huge-src")
    F.write_manifest(src, "huge", "1.0.0")
    F.write_big_tree(os.path.join(src, "DATA"), 4, megabytes * F.MIB, seed=5)
    huge = F.build_pm(src, ctx.path("huge-pkg"))
    shutil.rmtree(src)
    tiny_src = ctx.path("tiny-src")
    F.write_manifest(tiny_src, "tiny", "1.0.0")
    F.write_tree(os.path.join(tiny_src, "DATA"), [("usr/share/tiny/readme.txt", 1000)], seed=6)
    tiny = F.build_pm(tiny_src, ctx.path("tiny-pkg"))
    big_rss, big_times, tiny_rss = [], [], []
    for _ in range(2):
        root = ctx.fresh_root()
        big_times.append(measure(pm_argv(root, "install", huge))[0])
        big_rss.append(peak_rss(pm_argv(ctx.fresh_root(), "install", huge)) / 1024)
    for _ in range(ctx.runs):
        root = ctx.fresh_root()
        tiny_rss.append(peak_rss(pm_argv(root, "install", tiny)) / 1024)
    note = ("a %d MiB package (4 files of %d MiB), installed twice into a fresh root (default I/O; install took "
            "%s median); the figure is the highest max RSS of the pm process (ru_maxrss from os.wait4, measured in a separate run forked from a small process). "
            "Comparison: the same for a one-file package (%d runs)." % (
                megabytes, megabytes // 4, fmt(median(big_times), "s"), ctx.runs))
    return [Result("peak RSS, install %s package" % ("1 GiB" if megabytes == 1024 else "%d MiB" % megabytes),
                   max(big_rss), "MiB", [("tiny package", max(tiny_rss))], target=32, notes=note)]


def bench_oda(ctx):
    """bench/bench_opm.py: node syncs per second against the ODA (SQLite; PostgreSQL when
    $PM_TEST_POSTGRES_URL is set)."""
    argv = [PY, os.path.join(HERE, "bench_opm.py")]
    if ctx.quick:
        argv += ["--nodes", "1,4", "--packages", "2"]
    env_tmp = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = ctx.work
    try:
        report = json.loads(measure(argv, sync=False)[1])
    finally:
        if env_tmp is None:
            del os.environ["TMPDIR"]
        else:
            os.environ["TMPDIR"] = env_tmp
    results = []
    for backend, data in sorted(report["backends"].items(), reverse=True):      # sqlite first
        if "skipped" in data:
            results.append(Result("ODA %s" % backend, None, "syncs/s", notes="skipped: " + data["skipped"]))
            continue
        rows = "; ".join("N=%d: install %.2f, no-op %.2f" % (r["nodes"], r["install_syncs_per_second"],
                                                             r["noop_syncs_per_second"]) for r in data["runs"])
        last = data["runs"][-1]
        note = ("bench_opm.py, %d packages per node; syncs/s by node count: %s. %s." % (
            report["packages_per_node"], rows, report["method"]))
        results.append(Result("ODA %s: no-op syncs/s, N=%d" % (backend, last["nodes"]),
                              last["noop_syncs_per_second"], "syncs/s", notes=note))
        results.append(Result("ODA %s: install syncs/s, N=%d" % (backend, last["nodes"]),
                              last["install_syncs_per_second"], "syncs/s"))
    return results


# -- the report ---------------------------------------------------------------------------

def first_line(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True).stdout.strip().splitlines()[0]
    except (OSError, IndexError):
        return "(unknown)"


def machine(work):
    info = {}
    info["uname"] = " ".join(platform.uname())
    cpu, ram = "(unknown)", "(unknown)"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                ram = "%.1f GiB" % (int(line.split()[1]) / 1024 / 1024)
    info["cpu"] = "%s, %d cores" % (cpu, os.cpu_count())
    info["ram"] = ram
    info["python"] = "%s (%s)" % (platform.python_version(), PY)
    info["dpkg"] = first_line(["dpkg", "--version"])
    info["tar"] = first_line(["tar", "--version"])
    info["pacman"] = F.pacman_version() if shutil.which("pacman") else "(not installed)"
    fields = first_line(["findmnt", "-n", "-o", "FSTYPE,SOURCE,TARGET,OPTIONS", "-T", work]).split()
    info["filesystem"] = "%s (%s on %s, %s)" % tuple(fields[:4]) if len(fields) >= 4 else "(unknown)"
    info["fsync probe"] = "writing 8 MiB and fsync took %.1f ms in the work dir" % (fsync_probe(work) * 1000)
    head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "pm.py"], capture_output=True, text=True)
    info["pm.py"] = "commit %s%s" % (head.stdout.strip() or "?", " + uncommitted changes" if dirty.stdout.strip() else "")
    return info


def fsync_probe(work):
    """Seconds to fsync 8 MiB just written: how much the safe I/O of pm and dpkg can cost here."""
    path = os.path.join(work, "fsync-probe")
    with open(path, "wb") as f:
        f.write(os.urandom(8 * F.MIB))
        f.flush()
        started = time.perf_counter()
        os.fsync(f.fileno())
        seconds = time.perf_counter() - started
    os.unlink(path)
    return seconds


def table_rows(results):
    rows = []
    for r in results:
        if r.error:
            rows.append([r.name, "FAILED", r.error, "", "", "FAILED"])
            continue
        compared = "; ".join("%s %s" % (entry[0], fmt(entry[1], r.unit)) for entry in r.compared) or "-"
        ratios = "; ".join("%s %.2f" % (label, value) for label, value in r.ratios()) or "-"
        target = "; ".join(("" if what == "pm" else what + " ") + most for what, most, _, _ in r.verdicts()) or "-"
        rows.append([r.name, fmt(r.pm, r.unit) if r.pm is not None else "skipped", compared, ratios, target, r.met()])
    return rows


HEADER = ["benchmark", "pm (median)", "compared with (median)", "ratio", "target", "met"]


def text_table(results, header=HEADER, rows=None):
    rows = [header] + (table_rows(results) if rows is None else rows)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(results, header=HEADER, rows=None):
    rows = [header, ["---"] * len(header)] + (table_rows(results) if rows is None else rows)
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows)


TARGET_HEADER = ["benchmark", "target", "measured", "verdict"]


def target_rows(results):
    """One row per target of every result: met, missed by how much, or not measured."""
    rows = []
    for r in results:
        for what, most, measured, said in ([] if r.error else r.verdicts()):
            rows.append([r.name, (what + " " if what != "pm" else "") + most, measured,
                         said if r.pm is not None else "not measured (skipped)"])
    return rows


def write_report(path, results, args, info, started, elapsed, load):
    findings = FINDINGS + "\n\n(to be written)\n"
    if os.path.exists(path):
        with open(path) as f:
            lines = f.read().splitlines(keepends=True)
        for i, line in enumerate(lines):
            if line.startswith(FINDINGS):
                findings = "".join(lines[i:])
                break
    command = " ".join(["python bench/run.py"] + args.given)
    out = ["# pm benchmarks", "",
           "Date: %s (UTC); the run took %.1f minutes." % (started.strftime("%Y-%m-%d %H:%M"), elapsed / 60), "",
           "## Machine", ""]
    out += ["- %s: %s" % (key, value) for key, value in info.items()]
    out += ["- load average at start / end: %s / %s" % load, "",
            "## How to run", "",
            "```sh",
            "python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/python bench/run.py",
            ".venv/bin/python bench/run.py --quick                        # smoke check: 2 runs, small sizes",
            ".venv/bin/python bench/run.py --only install,startup --runs 3",
            ".venv/bin/python bench/run.py --dir /var/tmp                 # on the disk instead of a tmpfs",
            "```", "",
            "Any Python with pm's dependencies (msgpack, semver, zstandard) will do; this report came from "
            "`%s`. Every pm command is a new process running pm from its compiled bytecode (`python -c 'import pm; pm.main()'`, as the /usr/bin/pm launcher does), timed with the wall clock around "
            "the whole process, each run in a fresh root prepared outside the timed part, with `sync` before "
            "every timed command. Medians; ratio = pm / the other. Memory is the max RSS of the pm process alone (os.wait4 in a small process that forks it)."
            % command, "",
            "## Results", "", markdown_table(results), "",
            "## Targets", "", "Every target of issue 14, from the table above (ratios are pm / the other; "
            "a target is met at or below its figure).", "",
            markdown_table(results, TARGET_HEADER, target_rows(results)), "", "## Notes", ""]
    for r in results:
        if r.notes or r.error:
            out.append("- **%s**: %s" % (r.name, r.error and "FAILED: " + r.error or r.notes))
    out += ["- dpkg runs as `dpkg --root R --force-not-root --force-script-chrootless --log=/dev/null`, on a root "
            "holding only `var/lib/dpkg/{status,available}` (empty) and `var/lib/dpkg/{info,updates,triggers}/`; "
            "the host's dpkg database is not touched.",
            "- Other work on the machine during the run shows in the load average above; the numbers move with it.",
            "", ""]
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(out) + findings)
    os.replace(path + ".tmp", path)


# -- main ---------------------------------------------------------------------------------

def default_work_base():
    """A tmpfs where there is one: on it every tool's time is its own work.  On a disk,
    the time to create a file depends on where the filesystem places it and on what was
    deleted before (ext4 mounted with discard on this kind of VM: the same tar -xf took
    0.10 s in one directory and 2.4 s in another, measured), which swamps the differences
    between the tools; --dir /var/tmp measures there all the same."""
    if os.path.isdir("/dev/shm") and first_line(["findmnt", "-n", "-o", "FSTYPE", "-T", "/dev/shm"]) == "tmpfs":
        return "/dev/shm"
    return os.path.join(HERE, "work") if not os.path.isdir("/var/tmp") else "/var/tmp"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=None, help="runs per measurement (default 5; 2 with --quick)")
    parser.add_argument("--quick", action="store_true", help="2 runs and smaller sizes: a smoke check")
    parser.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"), help="the report (default bench/RESULTS.md)")
    parser.add_argument("--only", default="", help="comma-separated: " + ",".join(BENCHMARKS))
    parser.add_argument("--no-installed", action="store_true",
                        help="leave out the rows of pm as installed (the pm package's launcher, pip's console "
                             "script): building the package and a venv takes a minute")
    parser.add_argument("--dir", default=None,
                        help="where to work (default /dev/shm, a tmpfs, where there is one; else /var/tmp)")
    args = parser.parse_args(argv)
    args.given = list(sys.argv[1:] if argv is None else argv)
    if args.runs is None:
        args.runs = 2 if args.quick else 5
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    chosen = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in chosen if n not in BENCHMARKS]
    if unknown:
        parser.error("unknown benchmark %s (choose from %s)" % (", ".join(unknown), ", ".join(BENCHMARKS)))

    started, clock = datetime.datetime.now(datetime.timezone.utc), time.perf_counter()
    load_start = "%.2f" % os.getloadavg()[0]
    base = args.dir or default_work_base()
    work = tempfile.mkdtemp(prefix="pm-bench-", dir=base)
    ctx = Context(args.runs, args.quick, work, installed=not args.no_installed)
    results, failures = [], []
    try:
        compile_pm()
        info = machine(work)
        for name in BENCHMARKS:
            if name not in chosen:
                continue
            sys.stderr.write("run.py: %s ...\n" % name)
            sys.stderr.flush()
            t0 = time.perf_counter()
            try:
                results += globals()["bench_" + name](ctx)
            except (BenchError, RuntimeError, ValueError, KeyError) as e:
                failed = Result(name, None, "s")
                failed.error = str(e)
                results.append(failed)
                failures.append("%s: %s" % (name, e))
            sys.stderr.write("run.py: %s took %.0f s\n" % (name, time.perf_counter() - t0))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - clock
    load = (load_start, "%.2f" % os.getloadavg()[0])
    print(text_table(results))
    print()
    print(text_table(results, TARGET_HEADER, target_rows(results)))
    print("\n%d runs; total %.1f minutes; report: %s" % (args.runs, elapsed / 60, args.out))
    write_report(args.out, results, args, info, started, elapsed, load)
    for failure in failures:
        sys.stderr.write("run.py: error: %s\n" % failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
