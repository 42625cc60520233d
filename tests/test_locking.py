"""SPEC §9: a flock serialises commands on a root; a second writer waits (--wait) or exits
4 naming the holder; a killed holder never leaves a stale lock; readers do not block."""

import os
import signal
import subprocess
import sys
import time

from conftest import PM, run_pm

SLOW_SCRIPT = "#!/bin/sh\nsleep %s\n"


def start_holder(root, package):
    proc = subprocess.Popen([sys.executable, str(PM), "--root", str(root), "install", str(package)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lock = root / "var/lib/pm/lock"
    deadline = time.time() + 30
    while time.time() < deadline:
        if lock.exists() and lock.read_text().startswith(str(proc.pid)):
            return proc
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("the holder never took the lock")


def test_a_second_writer_exits_4_naming_the_holder(build, root):
    holder = start_holder(root, build("slow", "1.0", {"/s": "s"}, scripts={"api-pre-install": SLOW_SCRIPT % 3}))
    result = run_pm(root, "install", build("other", "1.0", {"/o": "o"}))
    assert result.code == 4
    assert "locked by pid %d (install" % holder.pid in result.err
    assert holder.wait() == 0


def test_wait_seconds_waits_for_the_lock(build, root):
    holder = start_holder(root, build("slow", "1.0", {"/s": "s"}, scripts={"api-pre-install": SLOW_SCRIPT % 1}))
    result = run_pm(root, "--wait", "30", "install", build("other", "1.0", {"/o": "o"}))
    assert result.code == 0, result
    assert holder.wait() == 0
    assert run_pm(root, "list-installed").out == "other (1.0)\nslow (1.0)\n"


def test_a_killed_holder_leaves_no_stale_lock(build, root):
    holder = start_holder(root, build("slow", "1.0", {"/s": "s"}, scripts={"api-pre-install": SLOW_SCRIPT % 30}))
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    result = run_pm(root, "install", build("other", "1.0", {"/o": "o"}))
    assert result.code == 0, result


def test_readers_do_not_wait_for_a_writer(build, root):
    assert run_pm(root, "install", build("base", "1.0", {"/b": "b"})).code == 0
    holder = start_holder(root, build("slow", "1.0", {"/s": "s"}, scripts={"api-pre-install": SLOW_SCRIPT % 60}))
    try:
        result = run_pm(root, "list-installed")
        assert result.code == 0 and result.out == "base (1.0)\n"
        assert holder.poll() is None, "the reader finished while the writer still held the lock"
    finally:
        holder.kill()
        holder.wait()


def test_many_processes_on_one_root_complete_or_exit_4_and_never_corrupt_it(build, root):
    packages = [build("p%02d" % i, "1.0", {"/p/%02d" % i: "x" * i, "/shared/p%02d" % i: "y"}) for i in range(16)]
    procs = [subprocess.Popen([sys.executable, str(PM), "--root", str(root), "install", str(p)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for p in packages]
    codes = [p.wait() for p in procs]
    assert set(codes) <= {0, 4}, codes
    listing = run_pm(root, "list-installed")
    installed = {line.split()[0] for line in listing.out.splitlines()}
    assert installed == {"p%02d" % i for i, c in enumerate(codes) if c == 0}
    assert run_pm(root, "verify").code == 0


def test_many_waiting_processes_all_complete_with_no_lost_update(build, root):
    packages = [build("p%02d" % i, "1.0", {"/p/%02d" % i: "x"}) for i in range(12)]
    procs = [subprocess.Popen([sys.executable, str(PM), "--root", str(root), "--wait", "120", "install", str(p)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for p in packages]
    procs += [subprocess.Popen([sys.executable, str(PM), "--root", str(root), "--wait", "120", "list-installed"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
    assert [p.wait() for p in procs] == [0] * 16
    assert len(run_pm(root, "list-installed").out.splitlines()) == 12
    uninstallers = [subprocess.Popen([sys.executable, str(PM), "--root", str(root), "--wait", "120", "uninstall",
                                      "p%02d" % i], stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(0, 12, 2)]
    assert [p.wait() for p in uninstallers] == [0] * 6
    assert len(run_pm(root, "list-installed").out.splitlines()) == 6
    assert run_pm(root, "verify").code == 0


def test_asking_who_holds_the_lock_never_takes_it(root, monkeypatch):
    import fcntl
    import pm as pm_module
    holder = pm_module.RootLock(pm_module.Root(str(root)))
    holder.acquire(0, "install something")
    flocks = []
    monkeypatch.setattr(fcntl, "flock", lambda *args: flocks.append(args))
    assert pm_module.RootLock(pm_module.Root(str(root))).holder() == "%d install something" % os.getpid()
    assert flocks == [], "a probe with flock could make a writer that does not wait fail"
    monkeypatch.undo()
    holder.release()
    assert pm_module.RootLock(pm_module.Root(str(root))).holder() is None


def test_a_state_directory_made_by_another_pm_before_the_lock_is_used_not_an_error(root, monkeypatch):
    import pm as pm_module
    real_mkdir = os.mkdir

    def racing_mkdir(name, mode=0o777, *, dir_fd=None):
        real_mkdir(name, 0o755, dir_fd=dir_fd)      # the other process wins the race
        return real_mkdir(name, mode, dir_fd=dir_fd)
    monkeypatch.setattr(os, "mkdir", racing_mkdir)
    lock = pm_module.RootLock(pm_module.Root(str(root)))
    lock.acquire(0, "install something")
    lock.release()
    monkeypatch.undo()
    assert (root / "var/lib/pm/lock").is_file()


def test_readers_racing_committing_writers_see_one_committed_state_and_never_fail(build, root):
    names = ["p%d" % i for i in range(3)]
    versions = {name: [build(name, "%d.0" % v, {"/p/%s/common" % name: "v%d" % v, "/p/%s/only-%d" % (name, v): "x" * v})
                       for v in (1, 2, 3)] for name in names}
    for name in names:
        assert run_pm(root, "install", versions[name][0]).code == 0
    other = build("other", "1.0", {"/o/file": "o"})
    pm = [sys.executable, str(PM), "--root", str(root)]
    writers = [subprocess.Popen(pm + ["--wait", "300", "install", "--allow-same-version", str(versions[name][k % 3])],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for k in range(1, 7) for name in names]
    commands = [["verify"], ["list-installed"], ["install", "--dry-run", str(other)]] + [["files", n] for n in names]
    readers = [(command, subprocess.Popen(pm + command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
               for _ in range(5) for command in commands]
    for command, proc in readers:
        out, err = proc.communicate()
        assert proc.returncode == 0, (command, out, err)
        assert "damaged" not in err and "missing" not in out, (command, out, err)
        if command[0] == "files":
            name = command[1]
            assert any(out.splitlines() == sorted(["/p", "/p/%s" % name, "/p/%s/common" % name, "/p/%s/only-%d" % (name, v)])
                       for v in (1, 2, 3)), out
    assert [w.wait() for w in writers] == [0] * len(writers)
    assert run_pm(root, "verify").code == 0
