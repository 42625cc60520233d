"""SPEC §15 over the network: a hostile or broken server (tests/hostile_http.py on
127.0.0.1) never hangs pm, never fills the disk, never holds the root's lock and never
makes it fail with more than one line: every network failure names the URL and exits 1,
a body larger than its index says exits 3, and nothing is kept that will not be resumed."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import PM, payload, read, run_pm
from hostile_http import HostileServer

CACHE = "var/cache/pm"


@pytest.fixture
def hostile():
    """``hostile(directory)`` starts a HostileServer; all are stopped after the test."""
    servers = []

    def start(directory):
        servers.append(HostileServer(directory))
        return servers[-1]
    yield start
    for server in servers:
        server.close()


def errors(result):
    return [line for line in result.err.splitlines() if line.startswith("pm: error:")]


def partial_files(root):
    return sorted(p.name for p in (Path(root) / CACHE).rglob("*") if p.is_file() and p.name.endswith(".part"))


def cached_files(root):
    return sorted(p.name for p in (Path(root) / CACHE / "packages").rglob("*") if p.is_file())


def first_index(repo):
    """The index file pm asks for first (msgpack when zstandard is there)."""
    return "/index.msgpack.zst" if (repo.path / "index.msgpack.zst").exists() else "/index.json"


MALFORMED = ["not-http", "many-headers", "huge-status", "redirect-loop"]
SLOW = ["trickle", "trickle-headers", "silent"]


@pytest.mark.parametrize("answer", MALFORMED + SLOW)
def test_a_malformed_or_slow_answer_for_an_index_is_one_line_naming_the_url_exit_1(
        answer, build, root, repository, hostile):
    repo = repository().add(build("tool", "1.0", {"/t": "t"}))
    server = hostile(repo.path)
    server.answers[first_index(repo)] = answer
    repo.use(root, url=server.url)
    result = run_pm(root, "update", "--timeout", "1", timeout=60)
    assert result.code == 1, result
    assert len(errors(result)) == 1, result
    assert server.url + first_index(repo) in errors(result)[0]
    assert not (root / CACHE / "indexes").exists() or not list((root / CACHE / "indexes").iterdir())


@pytest.mark.parametrize("answer", MALFORMED + SLOW)
def test_a_malformed_or_slow_answer_for_a_package_is_one_line_naming_the_url_exit_1(
        answer, build, root, repository, hostile):
    repo = repository().add(build("tool", "1.0", {"/t": "t"}))
    server = hostile(repo.path)
    repo.use(root, url=server.url)
    assert run_pm(root, "update").code == 0
    name = repo.entry("tool", "1.0")["filename"]
    server.answers["/" + name] = answer
    before = payload(root)
    result = run_pm(root, "install", "tool", "--timeout", "1", timeout=60)
    assert result.code == 1, result
    assert len(errors(result)) == 1 and server.url + "/" + name in errors(result)[0], result
    assert payload(root) == before
    assert run_pm(root, "list-installed").out == ""
    server.answers.clear()
    assert run_pm(root, "install", "tool").code == 0, "the next run completes (or resumes) the download"
    assert read(root, "/t") == "t" and partial_files(root) == []


def test_the_timeout_can_be_set_in_pm_conf(build, root, repository, hostile):
    repo = repository().add(build("tool", "1.0", {"/t": "t"}))
    server = hostile(repo.path)
    server.answers[first_index(repo)] = "trickle"
    repo.use(root, url=server.url)
    (root / "etc/pm/pm.conf").write_text("timeout = 1\n")
    result = run_pm(root, "update", timeout=60)
    assert result.code == 1 and "too slow" in result.err, result
    (root / "etc/pm/pm.conf").write_text("timeout = soon\n")
    result = run_pm(root, "update", timeout=60)
    assert result.code == 3 and "pm.conf" in result.err and "timeout" in result.err, result


@pytest.mark.parametrize("answer", ["endless", "oversized"])
def test_a_body_past_the_size_the_index_gives_is_stopped_there_refused_and_not_kept(
        answer, build, root, repository, hostile):
    repo = repository().add(build("tool", "1.0", {"/t": "t"}))
    server = hostile(repo.path)
    repo.use(root, url=server.url)
    assert run_pm(root, "update").code == 0
    name = repo.entry("tool", "1.0")["filename"]
    server.answers["/" + name] = answer
    result = run_pm(root, "install", "tool", timeout=60)
    assert result.code == 3, result
    assert len(errors(result)) == 1 and server.url + "/" + name in errors(result)[0], result
    assert cached_files(root) == [], "nothing that will not be resumed is kept"


def test_an_endless_index_is_refused_at_its_bound(build, root, repository, hostile):
    repo = repository().add(build("tool", "1.0", {"/t": "t"}))
    server = hostile(repo.path)
    server.answers[first_index(repo)] = "endless"
    repo.use(root, url=server.url)
    result = run_pm(root, "update", timeout=120)
    assert result.code == 3, result
    assert len(errors(result)) == 1 and "larger than" in result.err, result


def test_a_size_the_disk_cannot_hold_is_refused_before_downloading(build, root, repository, hostile, tmp_path):
    repo = repository().add(build("tool", "1.0", {"/t": "t"}))
    listed = json.loads((repo.path / "index.json").read_text())
    listed["packages"][0]["size"] = 200 << 30          # 200 GB: within the package bound
    served = tmp_path / "served"
    served.mkdir()
    (served / "index.json").write_text(json.dumps(listed))
    server = hostile(served)
    server.answers["/" + listed["packages"][0]["filename"]] = "endless"
    repo.use(root, url=server.url)
    assert run_pm(root, "update").code == 0
    result = run_pm(root, "install", "tool", timeout=60)
    assert result.code == 1, result
    assert len(errors(result)) == 1 and "free" in errors(result)[0], result
    assert cached_files(root) == []
    assert server.requests.count("/" + listed["packages"][0]["filename"]) == 0


def test_an_unresumable_partial_download_is_removed(build, root, repository, hostile, tmp_path):
    """A trusted source without sizes: an interrupted download cannot be resumed."""
    repo = repository().add(build("tool", "1.0", {"/t": "t"}))
    listed = json.loads((repo.path / "index.json").read_text())
    for entry in listed["packages"]:
        entry["size"] = entry["sha256"] = None
    served = tmp_path / "served"
    served.mkdir()
    (served / "index.json").write_text(json.dumps(listed))
    name = listed["packages"][0]["filename"]
    (served / name).write_bytes((repo.path / name).read_bytes())
    server = hostile(served)
    server.answers["/" + name] = "trickle"
    repo.use(root, url=server.url, options="[trusted=yes]")
    assert run_pm(root, "update").code == 0
    result = run_pm(root, "install", "tool", "--timeout", "1", timeout=60)
    assert result.code == 1 and "too slow" in result.err, result
    assert cached_files(root) == []


def test_the_lock_is_not_held_while_packages_download_and_the_plan_is_checked_after_locking(
        build, root, repository, hostile):
    repo = repository().add(build("tool", "1.0", {"/t": "1"}))
    server = hostile(repo.path)
    repo.use(root, url=server.url)
    assert run_pm(root, "update").code == 0
    name = repo.entry("tool", "1.0")["filename"]
    server.answers["/" + name] = "held"
    release = server.hold()
    slow = subprocess.Popen([sys.executable, str(PM), "--root", str(root), "install", "tool"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):
            if "/" + name in server.requests:
                break
            time.sleep(0.05)
        assert "/" + name in server.requests
        # Meanwhile another pm installs tool 2.0 from a file: the lock is free.
        newer = build("tool", "2.0", {"/t": "2"})
        assert run_pm(root, "install", str(newer)).code == 0
        release()
        out, err = slow.communicate(timeout=120)
    finally:
        slow.kill()
        slow.wait()
    assert slow.returncode == 0, err
    assert "Traceback" not in err
    assert read(root, "/t") == "2", "the plan made before locking is not applied over a newer state"
    rows = json.loads(run_pm(root, "--json", "list-installed").out)["packages"]
    assert [(r["name"], r["version"]) for r in rows] == [("tool", "2.0")]


def test_a_garbled_content_length_is_ignored_and_the_checksum_decides(build, root, repository, hostile):
    repo = repository().add(build("tool", "1.0", {"/t": "t"}))
    server = hostile(repo.path)
    repo.use(root, url=server.url)
    assert run_pm(root, "update").code == 0
    server.answers["/" + repo.entry("tool", "1.0")["filename"]] = "garbage-length"
    assert run_pm(root, "install", "tool").code == 0
    assert read(root, "/t") == "t"
