"""SPEC §13 doctor: can this user manage this root, and is the root healthy — one line
per finding, exit 1 when something needs action."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import PM, exists, run_pm


def findings(result):
    """{check: [status, ...]} of a doctor --json run."""
    found = {}
    for finding in result.json["findings"]:
        found.setdefault(finding["check"], []).append(finding["status"])
    return found


def messages(result, check):
    return " | ".join(f["message"] for f in result.json["findings"] if f["check"] == check)


def run_checked(command, **kwargs):
    proc = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=120, **kwargs)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    return proc


# -- a healthy root ----------------------------------------------------------------------

def test_a_healthy_root_has_only_ok_findings_and_exits_0(pm, build, root):
    pm("install", build("foo", "1.0", {"/usr/bin/foo": "x", "/etc/foo.conf": "c"}, config=["/etc/foo.conf"]))
    result = pm("--json", "doctor", expect=0)
    assert result.json["ok"] is True and result.json["root"] == str(root)
    found = findings(result)
    for check in ("access", "database", "journal", "staging", "lock"):
        assert found[check] == ["ok"], (check, result.json)
    assert set(found) >= {"msgpack", "semver", "zstandard", "psycopg"}
    assert "1 package installed" in messages(result, "database")
    assert "problem" not in [s for statuses in found.values() for s in statuses]


def test_doctor_prints_one_line_per_finding(pm, build):
    pm("install", build("foo", "1.0", {"/usr/bin/foo": "x"}))
    text = pm("doctor").out.splitlines()
    as_json = pm("--json", "doctor").json["findings"]
    assert len(text) == len(as_json)
    for line, finding in zip(text, as_json):
        assert line.split()[0] == finding["status"] and line.endswith(finding["message"])


def test_a_fresh_empty_root_is_healthy(pm):
    assert pm("--json", "doctor", expect=0).json["ok"] is True


def test_a_missing_root_needs_action(tmp_path):
    result = run_pm(tmp_path / "nothing", "doctor")
    assert result.code == 1 and "does not exist" in result.out


def test_doctor_names_the_msgpack_c_extension_and_present_modules(pm):
    pytest.importorskip("msgpack")
    from msgpack import Packer
    result = pm("--json", "doctor")
    expected = "ok" if Packer.__module__.endswith("_cmsgpack") else "note"
    assert findings(result)["msgpack"] == [expected]
    assert findings(result)["semver"] == ["ok"]


def test_a_missing_psycopg_is_a_note_unless_pm_conf_names_a_postgresql_oda(pm, root, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "psycopg.py").write_text("raise ImportError('blocked for this test')\n")
    env = {"PYTHONPATH": str(blocker)}
    result = pm("--json", "doctor", env=env, expect=0)
    assert findings(result)["psycopg"] == ["note"]
    (root / "etc/pm").mkdir(parents=True)
    (root / "etc/pm/pm.conf").write_text("oda = postgresql://127.0.0.1/test\n")
    result = pm("--json", "doctor", env=env, expect=1)
    assert findings(result)["psycopg"] == ["problem"]
    assert "pip install psycopg" in messages(result, "psycopg")


# -- roots this user cannot manage --------------------------------------------------------

def test_a_read_only_mounted_root_cannot_be_managed(pm, build, root):
    pm("install", build("foo", "1.0", {"/usr/bin/foo": "x"}))
    if not shutil.which("unshare"):
        pytest.skip("unshare(1) is not installed: no way to make a read-only mount here")
    probe = run_checked(["unshare", "-r", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0"', root])
    if probe.returncode != 0:
        pytest.skip("this machine allows no mount namespace for a read-only bind mount: %s" % probe.stderr.strip())
    proc = run_checked(["unshare", "-r", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', root,
                        sys.executable, PM, "--root", root, "--json", "doctor"])
    assert proc.returncode == 1, proc
    report = json.loads(proc.stdout)
    access = [f for f in report["findings"] if f["check"] == "access"][0]
    assert access["status"] == "problem"
    assert "read-only filesystem" in access["message"] and str(root) in access["message"]
    assert pm("--json", "doctor", expect=0).json["ok"]        # outside the namespace all is well


@pytest.fixture
def other_user_root():
    """A root that can be reached but not written: in a world-readable directory."""
    top = tempfile.mkdtemp(prefix="pm-doctor-")
    os.chmod(top, 0o755)
    path = os.path.join(top, "root")
    os.mkdir(path, 0o755)
    yield path
    for dirpath, dirnames, _ in os.walk(top):
        os.chmod(dirpath, 0o755)
    shutil.rmtree(top)


def as_a_user_who_may_not_write(root, command):
    """Run ``command`` so that it may read ``root`` but not write it; return (process, uid).
    Not root: the tree loses its write permission.  Root: the command runs as nobody
    when this Python is usable by nobody, else as root without capabilities (setpriv)
    on a tree nobody owns."""
    if os.geteuid() != 0:
        for dirpath, _, _ in os.walk(root):
            os.chmod(dirpath, 0o555)
        return run_checked(command), os.geteuid()
    try:
        usable = subprocess.run([sys.executable, "-c", "import msgpack, semver"], user=65534, group=65534,
                                cwd="/", capture_output=True).returncode == 0
    except PermissionError:
        usable = False
    if usable:
        return run_checked(command, user=65534, group=65534, cwd="/"), 65534
    if not shutil.which("setpriv"):
        pytest.skip("this Python is not usable by another user and setpriv(1) is missing")
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [dirpath] + [os.path.join(dirpath, f) for f in filenames]:
            os.lchown(name, 65534, 65534)
    return run_checked(["setpriv", "--bounding-set=-all", "--inh-caps=-all"] + command), 0


def test_a_root_this_user_may_not_write_cannot_be_managed(build, other_user_root):
    root = other_user_root
    assert run_pm(root, "install", build("foo", "1.0", {"/usr/bin/foo": "x"})).code == 0
    proc, uid = as_a_user_who_may_not_write(root, [sys.executable, PM, "--root", root, "--json", "doctor"])
    assert proc.returncode == 1, proc.stderr
    access = [f for f in json.loads(proc.stdout)["findings"] if f["check"] == "access"][0]
    assert access["status"] == "problem"
    assert access["message"].startswith("uid %d cannot write" % uid)
    assert root in access["message"] and "/var/lib/pm" in access["message"]
    assert "read-only" not in access["message"]


# -- leftovers, damage, the lock -----------------------------------------------------------

def test_an_interrupted_transaction_and_its_staging_files_need_recover(pm, build, root):
    package = build("foo", "1.0", {"/usr/bin/foo": "x", "/usr/share/foo/data": "d"})
    (root / "usr/bin").mkdir(parents=True)       # a file staged beside its target (not a new directory)
    pm("install", package, env={"PM_FAULT": "kill:2:rename"}, expect=-9)
    assert exists(root, "/var/lib/pm/journal")
    result = pm("--json", "doctor", expect=1)
    found = findings(result)
    assert found["journal"] == ["problem"] and "pm recover" in messages(result, "journal")
    assert found["staging"] == ["problem"]
    assert "staging files of the interrupted transaction" in messages(result, "staging")
    assert str(root / "usr/bin") + "/.~pm." in messages(result, "staging")
    assert exists(root, "/var/lib/pm/journal"), "doctor only looks; it does not recover"
    pm("recover")
    assert pm("--json", "doctor", expect=0).json["ok"]


def test_staging_files_of_no_transaction_are_reported_as_debris(pm, build, root):
    pm("install", build("foo", "1.0", {"/usr/bin/foo": "x"}))
    (root / "usr/bin/.~pm.0123456789ab.7").write_text("half-written")
    (root / "var/lib/pm/files/ghost.0123456789ab").write_bytes(b"\x90")
    result = pm("--json", "doctor", expect=1)
    message = messages(result, "staging")
    assert "2 leftover files of no transaction" in message
    assert str(root / "usr/bin/.~pm.0123456789ab.7") in message
    assert str(root / "var/lib/pm/files/ghost.0123456789ab") in message


def test_a_damaged_database_needs_action(pm, build, root):
    pm("install", build("foo", "1.0", {"/usr/bin/foo": "x"}))
    (root / "var/lib/pm/status").write_bytes(b"not msgpack at all")
    result = pm("--json", "doctor", expect=1)
    assert findings(result)["database"] == ["problem"]
    assert "damaged" in messages(result, "database")


def test_a_missing_file_list_needs_action(pm, build, root):
    pm("install", build("foo", "1.0", {"/usr/bin/foo": "x"}))
    for name in os.listdir(root / "var/lib/pm/files"):
        os.unlink(root / "var/lib/pm/files" / name)
    result = pm("--json", "doctor", expect=1)
    assert "file list of foo is missing" in messages(result, "database")


def test_a_failed_post_install_script_needs_action(pm, build):
    pm("install", build("foo", "1.0", {"/a": "x"}, scripts={"api-post-install": "#!/bin/sh\nexit 3\n"}),
       expect=1)
    result = pm("--json", "doctor", expect=1)
    assert "api-post-install of foo failed; pm recover runs it again" in messages(result, "scripts")


def test_doctor_names_the_process_that_holds_the_lock(pm, build, root, tmp_path):
    go = tmp_path / "go"
    started = tmp_path / "started"
    script = "#!/bin/sh\ntouch '%s'\nwhile [ ! -e '%s' ]; do sleep 0.05; done\n" % (started, go)
    package = build("slow", "1.0", {"/a": "x"}, scripts={"api-pre-install": script})
    holder = subprocess.Popen([sys.executable, str(PM), "--root", str(root), "install", str(package)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert holder.poll() is None and time.monotonic() < deadline, holder.stderr.read()
            time.sleep(0.02)
        result = pm("--json", "doctor", expect=0)
        lock = messages(result, "lock")
        assert findings(result)["lock"] == ["note"]
        assert lock.startswith("the lock is held by pid %d (install " % holder.pid) and "slow" in lock
    finally:
        go.touch()
        assert holder.wait(60) == 0
    assert findings(pm("--json", "doctor"))["lock"] == ["ok"]


# -- a software area shared by a group ------------------------------------------------------

@pytest.fixture
def umask():
    """``umask(value)`` for the pm processes this test starts."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def test_shared_wants_umask_002_and_group_writable_directories(pm, build, root, umask):
    pm("install", build("foo", "1.0", {"/opt/foo/bin/foo": "x"}))
    umask(0o022)
    result = pm("--json", "doctor", "--shared", expect=1)
    assert findings(result)["umask"] == ["problem"] and "umask 002" in messages(result, "umask")
    assert findings(result)["group-write"] == ["problem"]
    assert str(root / "opt/foo") + "," in messages(result, "group-write")
    assert findings(pm("--json", "doctor", expect=0))["access"] == ["ok"], "without --shared all is well"


def test_a_group_writable_setgid_area_with_umask_002_passes_shared(pm, build, root, umask):
    pm("install", build("foo", "1.0", {"/opt/foo/bin/foo": "x"}))
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o2775)
    os.chmod(root / "var/lib/pm/lock", 0o664)
    umask(0o002)
    result = pm("--json", "doctor", "--shared", expect=0)
    found = findings(result)
    assert found["umask"] == ["ok"] and found["group-write"] == ["ok"] and found["group"] == ["ok"]
    assert "setgid" not in found


def test_with_umask_002_pm_keeps_the_area_group_writable_by_itself(pm, build, root, umask):
    umask(0o002)
    os.chmod(root, 0o2775)
    pm("install", build("foo", "1.0", {"/opt/foo/bin/foo": "x", "/opt/foo/etc/conf": "c"}))
    assert os.stat(root / "opt/foo/bin").st_mode & 0o020
    assert os.stat(root / "var/lib/pm/lock").st_mode & 0o020
    assert findings(pm("--json", "doctor", "--shared", expect=0))["group-write"] == ["ok"]
    umask(0o022)
    pm("install", build("bar", "1.0", {"/opt/bar/bin/bar": "x"}))
    assert not os.stat(root / "opt/bar/bin").st_mode & 0o020, "a private umask keeps packaged modes exact"


def test_a_damaged_journal_needs_action(pm, build, root):
    pm("install", build("foo", "1.0", {"/usr/bin/foo": "x"}))
    (root / "var/lib/pm/journal").write_bytes(b"\xc1 not a journal")
    result = pm("--json", "doctor", expect=1)
    assert findings(result)["journal"] == ["problem"] and "journal" in messages(result, "journal")
    assert "damaged" in messages(result, "journal")
