"""Before a by-name install, an upgrade, an autoremove or a recursive uninstall pm says
what it will do — each package with old -> new version, download size and installed-size
change, then the totals — and asks when stdin is a terminal (-y/--yes skips the question;
without a terminal it never asks).  Every change command's JSON document has the same
keys whether or not something was done."""

import os
import pty
import select
import subprocess
import sys
import time

from conftest import PM, exists, snapshot

CHANGE_KEYS = {"dry_run", "changes", "reasons", "fetched", "script_failures", "summary", "operations", "warnings"}


def test_a_by_name_install_says_what_it_will_do_before_doing_it(pm, build, root, repository):
    repository().add(build("app", "1.0", {"/app": "a" * 2048}, deps={"lib": "*"}),
                     build("lib", "1.0", {"/lib": "l" * 100})).use(root)
    result = pm("install", "app")
    lines = result.err.splitlines()
    assert lines[:3] == ["install lib 1.0 (+100 B)", "install app 1.0 (+2.0 KiB)",
                         "2 to install; 0 B to download; installed size +2.1 KiB"]
    assert result.out == "installed lib 1.0\ninstalled app 1.0\n"


def test_an_upgrade_summary_shows_old_and_new_versions_and_the_size_change(pm, build, root, repository):
    repo = repository().add(build("lib", "1.0", {"/lib": "l" * 100})).use(root)
    pm("install", "lib")
    repo.add(build("lib", "2.0", {"/lib": "l" * 300}))
    report = pm("--json", "upgrade").json
    assert report["summary"] == {"packages": [{"package": "lib", "action": "upgrade", "version": "2.0",
                                               "old_version": "1.0", "download_size": 0,
                                               "installed_size_change": 200}],
                                 "download_size": 0, "installed_size_change": 200}
    assert pm("list").out == "lib (2.0)\n"


def test_autoremove_and_a_recursive_uninstall_show_the_summary_first(pm, build, root, repository):
    repository().add(build("app", "1.0", {"/app": "a"}, deps={"lib": "*"}), build("lib", "1.0", {"/l": "ll"})).use(root)
    pm("install", "app")
    result = pm("uninstall", "--recursive", "lib")
    assert result.err.splitlines()[:3] == ["remove app 1.0 (-1 B)", "remove lib 1.0 (-2 B)",
                                           "2 to remove; 0 B to download; installed size -3 B"]
    pm("install", "app")
    pm("uninstall", "app")
    result = pm("autoremove")
    assert result.err.splitlines()[:2] == ["remove lib 1.0 (-2 B)", "1 to remove; 0 B to download; installed size -2 B"]
    assert result.out == "removed lib 1.0\n"


def test_change_documents_have_the_same_keys_whether_or_not_something_was_done(pm, build, root, repository):
    repository().add(build("tool", "1.0", {"/t": "t"})).use(root)
    package = build("foo", "1.0", {"/f": "f"})
    documents = [pm("--json", "install", "tool").json, pm("--json", "install", "tool").json,
                 pm("--json", "install", "--dry-run", package).json, pm("--json", "install", package).json,
                 pm("--json", "upgrade").json, pm("--json", "autoremove").json,
                 pm("--json", "uninstall", "foo").json, pm("--json", "uninstall", "foo").json,
                 pm("--json", "upgrade", "--dry-run").json]
    for document in documents:
        assert set(document) == CHANGE_KEYS, document
        assert document["script_failures"] == [] and isinstance(document["summary"]["download_size"], int)
    assert documents[1]["changes"] == [] and documents[1]["summary"]["packages"] == []
    installed = pm("--json", "list").json["packages"][0]
    assert isinstance(installed["time"], int)


# -- the question, on a real terminal ------------------------------------------------------

def _run_on_terminal(root, args, answer=None, timeout=60):
    """Run pm with a pseudo-terminal as stdin, stdout and stderr; type ``answer`` when it
    asks.  Returns (exit code, everything shown)."""
    leader, follower = pty.openpty()
    env = dict(os.environ, TERM="xterm")
    env.pop("PM_ROOT", None)
    proc = subprocess.Popen([sys.executable, str(PM), "--root", str(root)] + [str(a) for a in args],
                            stdin=follower, stdout=follower, stderr=follower, env=env, close_fds=True)
    os.close(follower)
    shown, answered = b"", False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
        if answer is not None and not answered and b"Proceed? [Y/n]" in shown:
            os.write(leader, answer.encode() + b"\n")
            answered = True
        if proc.poll() is not None and not ready:
            break
    proc.wait(timeout=timeout)
    os.close(leader)
    return proc.returncode, shown.decode("utf-8", "replace")


def test_on_a_terminal_pm_asks_and_no_means_nothing_changes(build, root, repository):
    repository().add(build("tool", "1.0", {"/t": "t"})).use(root)
    before = snapshot(root)
    code, shown = _run_on_terminal(root, ["install", "tool"], answer="n")
    assert code == 1 and "Proceed? [Y/n]" in shown and "aborted; nothing was changed" in shown
    assert "install tool 1.0 (+1 B)" in shown, "the summary comes before the question"
    assert not exists(root, "/t")
    assert snapshot(root) == before or set(snapshot(root)) - set(before) <= {"var", "var/lib", "var/lib/pm",
                                                                             "var/lib/pm/lock"}
    code, shown = _run_on_terminal(root, ["install", "tool"], answer="y")
    assert code == 0 and "installed tool 1.0" in shown and exists(root, "/t")


def test_yes_skips_the_question_and_without_a_terminal_pm_never_asks(pm, build, root, repository):
    repository().add(build("tool", "1.0", {"/t": "t"}), build("other", "1.0", {"/o": "o"})).use(root)
    code, shown = _run_on_terminal(root, ["install", "-y", "tool"])
    assert code == 0 and "Proceed?" not in shown and exists(root, "/t")
    result = pm("install", "other")                 # stdin is not a terminal here
    assert "Proceed?" not in result.err and exists(root, "/o")
