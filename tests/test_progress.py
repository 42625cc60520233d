"""Progress on a terminal for every long step — an install by bytes (percentage, human
units), a removal by files, the commit and sync phases named — and none when stderr is
not a terminal or with -q.  Checked in a real pseudo-terminal."""

import os
import pty
import select
import subprocess
import sys
import time

from conftest import PM


def on_terminal(root, *args, timeout=120):
    """Run pm with a pseudo-terminal as stdin, stdout and stderr; (exit code, bytes shown)."""
    leader, follower = pty.openpty()
    env = dict(os.environ)
    env.pop("PM_ROOT", None)
    proc = subprocess.Popen([sys.executable, str(PM), "--root", str(root)] + [str(a) for a in args],
                            stdin=follower, stdout=follower, stderr=follower, env=env, close_fds=True)
    os.close(follower)
    shown = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=timeout)
    os.close(leader)
    return proc.returncode, shown


def test_an_install_shows_bytes_and_named_phases_on_a_terminal_and_erases_the_line(build, root):
    package = build("big", "1.0", {"/opt/big": "x" * (8 << 20), "/opt/small": "s"})
    code, shown = on_terminal(root, "install", package)
    assert code == 0, shown
    assert b"\rinstalling " in shown and b"%" in shown and b"/8.0 MiB" in shown
    assert b"\rcommitting..." in shown
    assert b"\rsyncing..." in shown
    assert shown.rstrip().endswith(b"installed big 1.0"), "the status line is erased before the result"


def test_a_removal_counts_files_on_a_terminal(pm, build, root):
    pm("install", build("many", "1.0", {"/opt/many/f%04d" % i: "x" for i in range(500)}))
    code, shown = on_terminal(root, "uninstall", "many")
    assert code == 0, shown
    assert b"/500 files" in shown and b"removing old files" in shown


def test_no_progress_when_piped_or_quiet(pm, build, root):
    package = build("big", "1.0", {"/opt/big": "x" * (1 << 20)})
    result = pm("install", package)
    assert "\r" not in result.err and "installing" not in result.err
    code, shown = on_terminal(root, "-q", "uninstall", "big")
    assert code == 0 and shown == b"", "-q prints only errors, on a terminal too"
