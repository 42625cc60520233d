"""SPEC §9: one command is one transaction.  After a failure or a kill at any instant the
root holds the old state or the new one, exactly as the database says, with no staging
debris, and the next command (or ``pm recover``) finishes or undoes what was interrupted.

Faults are injected deterministically with PM_FAULT=ACTION:N[:KIND] (pm counts every
mutating step of a transaction), so every step of every operation is covered."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import PM, File, Link, payload, run_pm

CONF = "/etc/app/app.conf"


def version_1(count):
    files = {"/usr/bin/app": File("#!/bin/sh\necho 1\n", 0o755), "/usr/bin/app-alias": Link("app"),
             CONF: "setting=1\n"}
    for i in range(count):
        files["/usr/lib/app/mod%04d" % i] = "module %d version 1\n" % i
        files["/opt/app/old/file%04d" % i] = "dropped in version 2: %d\n" % i
    return files


def version_2(count):
    files = {"/usr/bin/app": File("#!/bin/sh\necho 2\n", 0o755), "/usr/bin/app-alias": Link("app"),
             CONF: "setting=2\n"}
    for i in range(count):
        changed = i % 2 == 0
        files["/usr/lib/app/mod%04d" % i] = "module %d version %d\n" % (i, 2 if changed else 1)
        files["/usr/share/app/new%04d" % i] = "new in version 2: %d\n" % i
    return files


class Operations:
    """The operations of SPEC §8 on a package of ``count``×2 files, each with the root it
    starts from (built once, copied per run) and the states before and after."""

    NAMES = ("install", "upgrade", "uninstall", "purge", "purge-later")
    PATH_TYPE_CHANGES = ("directory-to-symlink", "symlink-to-directory")

    def __init__(self, tmp_path, build, count):
        self.tmp = tmp_path
        # with CONTROL/sums, as repoPackager builds them: the upgrade keeps the unchanged half
        self.v1 = build("app", "1.0", version_1(count), config=[CONF], sums=True)
        self.v2 = build("app", "2.0", version_2(count), config=[CONF], sums=True)
        # an upgrade turning its directory test/ into test -> test2
        self.dir_1 = build("pkg", "1.0", dict({"/test/sub/deep": "d", "/test2/x": "x"},
                                              **{"/test/file%02d" % i: "f%d" % i for i in range(count)}))
        self.dir_2 = build("pkg", "1.1", {"/test": Link("test2"), "/test2/x": "x"})
        # the usr-merge: pkg1 drops lib -> usr/lib while pkg2 brings lib/ as a directory
        self.merge_1 = build("pkg1", "1.0", {"/lib": Link("usr/lib"), "/usr/lib/foo": "foo"})
        self.merge_2 = build("pkg1", "1.1", {"/usr/lib/foo": "foo"})
        self.merge_other = build("pkg2", "1.0", {"/lib/bar%02d" % i: "bar%d" % i for i in range(count)})
        self.templates = {}

    def setup(self, name):
        if name not in self.templates:
            root = self.tmp / ("template-" + name)
            root.mkdir()
            if name in self.PATH_TYPE_CHANGES:
                first = self.dir_1 if name == "directory-to-symlink" else self.merge_1
                assert run_pm(root, "install", first).code == 0
            elif name != "install":
                assert run_pm(root, "install", self.v1).code == 0
                (root / CONF.lstrip("/")).write_text("setting=local\n")   # a locally modified config
            if name == "purge-later":
                assert run_pm(root, "uninstall", "app").code == 0
            self.templates[name] = root
        return self.templates[name]

    def command(self, name):
        return {"install": ["install", self.v1], "upgrade": ["install", self.v2],
                "uninstall": ["uninstall", "app"], "purge": ["uninstall", "--purge", "app"],
                "purge-later": ["uninstall", "--purge", "app"],
                "directory-to-symlink": ["install", self.dir_2],
                "symlink-to-directory": ["install", self.merge_2, self.merge_other]}[name]

    def fresh_root(self, name, label):
        root = self.tmp / ("%s-%s" % (name, label))
        if root.exists():
            shutil.rmtree(root)
        shutil.copytree(self.setup(name), root, symlinks=True)
        return root

    def before_and_after(self, name):
        before = state(self.setup(name))
        root = self.fresh_root(name, "reference")
        assert run_pm(root, *self.command(name)).code == 0
        return before, state(root)

    def step_counts(self, name):
        root = self.fresh_root(name, "count")
        counts = self.tmp / ("counts-" + name)
        assert run_pm(root, *self.command(name), env={"PM_FAULT_COUNT": str(counts)}).code == 0
        return json.loads(counts.read_text())


def state(root):
    """What must be exactly old or new: the tree (pm's own directory aside) and what the
    database says is installed, with every owned path."""
    import pm as pm_module
    pm_root = pm_module.Root(str(root))
    try:
        db = pm_module.Database(pm_root).load()
        packages = sorted((n, r["version"], r["state"]) for n, r in db.packages.items())
        files = {n: sorted(e.packed(p) for p, e in db.files(n).items()) for n in db.packages}
    finally:
        pm_root.close()
    return payload(root), packages, files


def assert_no_debris(root):
    import pm as pm_module
    leftovers = []
    for dirpath, dirnames, filenames in os.walk(root):
        leftovers += [os.path.join(dirpath, n) for n in dirnames + filenames if n.startswith(pm_module.STAGING_PREFIX)]
    db_dir = root / "var/lib/pm"
    if db_dir.exists():
        leftovers += [str(p) for p in db_dir.iterdir() if p.name in ("journal", "journal.tmp", "status.tmp")]
        db = pm_module.Database(pm_module.Root(str(root))).load()
        listed = {r["files"] for r in db.packages.values()}
        on_disk = set(os.listdir(db_dir / "files")) if (db_dir / "files").exists() else set()
        leftovers += sorted(on_disk - listed)
        assert listed <= on_disk, "file lists missing: %s" % (listed - on_disk)
    assert leftovers == [], leftovers


def check_old_or_new(root, before, after, expect=None):
    """After an interrupted command: the next command recovers; the root is exactly the
    old or the new state; no debris; verify passes.  Returns which state it was."""
    recovered = run_pm(root, "recover")
    assert recovered.code == 0, recovered
    now = state(root)
    assert now in (before, after), "neither the old nor the new state"
    assert_no_debris(root)
    verify = run_pm(root, "verify")
    assert verify.code == 0, verify
    which = "old" if now == before else "new"
    if expect:
        assert which == expect
    return which


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    from conftest import PackageBuilder
    tmp = tmp_path_factory.mktemp("small")
    return Operations(tmp, PackageBuilder(tmp / "packages").build, 4)


def every_step(counts, kinds=None):
    for kind, count in sorted(counts.items()):
        if kind != "total" and (kinds is None or kind in kinds):
            for n in range(1, count + 1):
                yield kind, n


def run_with_fault(ops, name, fault, label):
    root = ops.fresh_root(name, label)
    result = run_pm(root, *ops.command(name), env={"PM_FAULT": fault})
    return root, result


# -- failures: ENOSPC and EIO at every step ----------------------------------------------

def check_failure(ops, name, error):
    before, after = ops.before_and_after(name)
    counts = ops.step_counts(name)
    assert counts["total"] > 10
    for kind, n in every_step(counts):
        fault = "%s:%d:%s" % (error, n, kind)
        root, result = run_with_fault(ops, name, fault, "fault")
        # after the commit, a cleanup step that fails is a leftover (a warning) for pm recover
        leftover = "recorded as a leftover" in result.err
        # a change that writes no package files may use the space pm keeps in reserve
        reserved = result.code == 0 and error == "ENOSPC" and name in ("uninstall", "purge", "purge-later")
        assert result.code != 0 or leftover or reserved, (fault, result)
        assert len(result.err.strip().splitlines()) >= 1 or reserved
        expect = "new" if "was committed" in result.err or leftover or reserved else "old"
        assert check_old_or_new(root, before, after, expect) == expect, fault


@pytest.mark.parametrize("name", ["upgrade"])
def test_a_full_disk_at_any_step_leaves_the_previous_state_intact(small, name):
    check_failure(small, name, "ENOSPC")


@pytest.mark.slow
@pytest.mark.parametrize("name", Operations.NAMES)
@pytest.mark.parametrize("error", ["ENOSPC", "EIO"])
def test_a_write_error_at_any_step_of_any_operation_leaves_the_previous_state(small, name, error):
    check_failure(small, name, error)


# -- kills: SIGKILL at every step --------------------------------------------------------

def check_kills(ops, name, steps):
    before, after = ops.before_and_after(name)
    seen = set()
    for kind, n in steps:
        fault = "kill:%d%s" % (n, ":" + kind if kind else "")
        root, result = run_with_fault(ops, name, fault, "kill")
        assert result.code == -signal.SIGKILL, (fault, result)
        seen.add(check_old_or_new(root, before, after))
    return seen


@pytest.mark.parametrize("name", ["upgrade"])
def test_a_kill_at_any_step_is_recovered_to_the_old_or_the_new_state(small, name):
    counts = small.step_counts(name)
    steps = [(None, n) for n in range(1, counts["total"] + 1)]
    assert check_kills(small, name, steps) == {"old", "new"}


@pytest.mark.parametrize("name", Operations.PATH_TYPE_CHANGES)
def test_a_kill_at_any_step_of_a_path_type_change_is_recovered(small, name):
    """A directory replaced by a symlink, a symlink replaced by a directory (issue 13)."""
    counts = small.step_counts(name)
    steps = [(None, n) for n in range(1, counts["total"] + 1)]
    assert check_kills(small, name, steps) == {"old", "new"}


@pytest.mark.slow
@pytest.mark.parametrize("name", Operations.PATH_TYPE_CHANGES)
def test_a_full_disk_at_any_step_of_a_path_type_change_leaves_the_previous_state(small, name):
    check_failure(small, name, "ENOSPC")


@pytest.mark.slow
@pytest.mark.parametrize("name", Operations.NAMES + Operations.PATH_TYPE_CHANGES)
def test_a_kill_at_any_step_of_any_operation_is_recovered(small, name):
    counts = small.step_counts(name)
    check_kills(small, name, [(None, n) for n in range(1, counts["total"] + 1)])


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    from conftest import PackageBuilder
    tmp = tmp_path_factory.mktemp("large")
    return Operations(tmp, PackageBuilder(tmp / "packages").build, 1000)


@pytest.mark.slow
@pytest.mark.parametrize("name", Operations.NAMES)
def test_kills_spread_over_a_package_of_thousands_of_files_are_recovered(large, name):
    counts = large.step_counts(name)
    total = counts["total"]
    spread = sorted(set(list(range(1, total + 1, max(1, total // 24))) + list(range(max(1, total - 8), total + 1))))
    check_kills(large, name, [(None, n) for n in spread])


@pytest.mark.slow
def test_real_sigkills_at_random_moments_are_recovered(large):
    rng = random.Random(1234)
    for name in ("install", "upgrade", "uninstall"):
        before, after = large.before_and_after(name)
        for attempt in range(6):
            root = large.fresh_root(name, "sigkill")
            proc = subprocess.Popen([sys.executable, str(PM), "--root", str(root)] + [str(a) for a in large.command(name)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.05, 0.6))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            check_old_or_new(root, before, after)


# -- recovery as the first thing of every command ----------------------------------------

def test_any_later_command_recovers_before_doing_anything(small):
    before, after = small.before_and_after("upgrade")
    counts = small.step_counts("upgrade")
    root, result = run_with_fault(small, "upgrade", "kill:%d:rename" % (counts["rename"] // 2), "later")
    assert result.code == -signal.SIGKILL
    assert (root / "var/lib/pm/journal").exists()
    listing = run_pm(root, "list-installed")
    assert "undid an interrupted transaction" in listing.err
    assert not (root / "var/lib/pm/journal").exists()
    assert state(root) == before


def test_a_dry_run_does_not_recover_and_changes_nothing(small):
    from conftest import snapshot
    root, result = run_with_fault(small, "upgrade", "kill:5:rename", "dry")
    frozen = snapshot(root)
    assert run_pm(root, "install", "--dry-run", small.v2).code == 0
    assert snapshot(root) == frozen


def test_recover_with_nothing_to_do_says_so(root):
    result = run_pm(root, "recover")
    assert result.code == 0 and "nothing to recover" in result.err


def test_unsafe_io_installs_the_same(pm, build, root):
    pm("--unsafe-io", "install", build("foo", "1.0", {"/a": "x", "/b/c": "y"}))
    pm("verify")


# -- a real full disk ---------------------------------------------------------------------

@pytest.fixture
def small_filesystem(tmp_path):
    """A 2 MiB tmpfs as the root (needs the privilege to mount; skipped without it)."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mountpoint)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (%s)" % done.stderr.strip())
    yield mountpoint
    subprocess.run(["umount", "-l", str(mountpoint)])


def test_a_really_full_disk_leaves_the_previous_state_intact(build, small_filesystem):
    from conftest import snapshot
    root = small_filesystem
    assert run_pm(root, "install", build("app", "1.0", {"/a": "small", "/etc/c": "c"}, config=["/etc/c"])).code == 0
    before = state(root), snapshot(root)
    chunks = {"/data/blob%02d" % i: File(os.urandom(256 * 1024)) for i in range(12)}   # 3 MiB
    result = run_pm(root, "install", build("app", "2.0", dict(chunks, **{"/a": "big"}), config=["/etc/c"]))
    assert result.code == 1 and "No space left on device" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert (state(root), snapshot(root)) == before
    assert_no_debris(root)
    assert run_pm(root, "verify").code == 0


def test_a_reader_clears_a_half_written_journal_when_nobody_holds_the_lock(small):
    root, result = run_with_fault(small, "upgrade", "kill:1:journal", "halfjournal")
    assert result.code == -signal.SIGKILL
    (root / "var/lib/pm/journal.tmp").write_bytes(b"half a journal")
    assert run_pm(root, "list-installed").code == 0
    assert_no_debris(root)
