"""SPEC §15: whatever the tree under the root holds, nothing outside it is written.

pm's own journal, database (status and file lists), kept scripts, lock, leftover record,
configuration files, the ODA file and the sources it reads are as hostile as an archive:
whoever could write the image could have planted them.  Every case below plants one such
thing in a root that has a package installed, runs the command that reads it, and
asserts: exit 3 and one line on stderr naming what is wrong (no traceback, no raw OS
error), nothing outside the root written, renamed or removed (an exact snapshot of a
sibling directory), nothing in the root changed, and the root still usable once the
planted thing is gone (a later install and verify work).
"""

import json
import os
import shutil
import stat
import subprocess
import time

import msgpack
import pytest

from conftest import Dir, File, PackageBuilder, exact_snapshot, exists, run_pm

CASES = {}
ODD_KINDS = ("symlink", "fifo", "directory")


def case(command, expect, code=3, slow=False):
    """Register a planted state: ``plant(where) -> undo()``; ``command`` is the pm command
    that reads it; ``expect`` a piece of the one-line error.  ``slow`` cases (the same
    planted state read by one more command) run with PM_TEST_ALL=1."""
    def register(plant):
        CASES[plant.__name__] = (plant, command, expect, code, slow)
        return plant
    return register


class Where:
    def __init__(self, root, outside, tmp):
        self.root, self.outside, self.tmp = root, outside, tmp

    def at(self, path):
        return self.root / path.lstrip("/")

    def status(self):
        return msgpack.unpackb(self.at("/var/lib/pm/status").read_bytes(), raw=False, strict_map_key=False)

    def write_status(self, status):
        self.at("/var/lib/pm/status").write_bytes(msgpack.packb(status, use_bin_type=True))

    def file_list(self, name="base"):
        return self.at("/var/lib/pm/files/" + self.status()["packages"][name]["files"])


def keep(where, *paths):
    """An undo that restores ``paths`` (host paths under the root) as they are now."""
    saved = {}
    for path in paths:
        path = where.at(path)
        saved[path] = path.read_bytes() if path.exists() else None

    def undo():
        for path, data in saved.items():
            remove(path)
            if data is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
    return undo


def remove(path):
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


def plant_odd(where, path, kind, content=b""):
    """Put a symlink (to a copy outside the root of what was there), a FIFO or a
    directory at ``path``; returns the undo."""
    undo = keep(where, path)
    target = where.at(path)
    original = target.read_bytes() if target.is_file() else content
    remove(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if kind == "symlink":
        bait = where.outside / ("bait-" + path.strip("/").replace("/", "-"))
        bait.write_bytes(original)
        os.symlink(bait, target)
    elif kind == "fifo":
        os.mkfifo(target)
    else:
        target.mkdir()
        (target / "inside").write_text("x")
    return undo


def journal(where, ops, lists=(), obsolete=(), txid="0123456789ab", committed=False):
    if committed:
        status = where.status()
        status["txid"] = txid
        where.write_status(status)
    where.at("/var/lib/pm/journal").write_bytes(msgpack.packb(
        {"txid": txid, "ops": ops, "lists": list(lists), "obsolete": list(obsolete)}, use_bin_type=True))


# -- planted journals (recovery would delete and rename outside the root) ---------------

def _journal_case(ops, lists=(), obsolete=(), committed=False):
    def plant(where):
        undo = keep(where, "/var/lib/pm/journal", "/var/lib/pm/status")
        journal(where, ops(where), lists, obsolete, committed=committed)
        return undo
    return plant


for _command in (("list-installed",), ("install", "{valid}"), ("recover",)):
    _suffix = _command[0].replace("-", "_")
    for _name, _plant in {
        "journal_put_with_dotdot": _journal_case(lambda w: [["put", "/../outside/victim", "/../outside/.~pm.0123.1", None]]),
        "journal_put_backup_with_dotdot": _journal_case(lambda w: [["put", "/etc/x", "/etc/.~pm.0123.1",
                                                                    "/etc/../../outside/.~pm.0123.2.old"]]),
        "journal_remove_with_dotdot": _journal_case(lambda w: [["remove", "/usr/../../outside/victim",
                                                                "/usr/../../outside/.~pm.0123.1.old"]]),
        "journal_mkdir_with_dotdot": _journal_case(lambda w: [["mkdir", "/../outside/victim-dir", 0o755]]),
        "journal_rmdir_with_dotdot": _journal_case(lambda w: [["rmdir", "/../outside/empty-dir"]], committed=True),
        "journal_list_with_a_slash": _journal_case(lambda w: [], lists=["../../../../../outside/victim"]),
        "journal_obsolete_list_with_a_slash": _journal_case(lambda w: [], obsolete=["../../../../../outside/victim"],
                                                            committed=True),
        "journal_staged_name_that_is_not_reserved": _journal_case(
            lambda w: [["put", "/etc/base.conf", "/usr/bin/base", None]]),
        "journal_backup_in_another_directory": _journal_case(
            lambda w: [["remove", "/usr/bin/base", "/etc/.~pm.0123.1.old"]], committed=True),
        "journal_with_an_empty_component": _journal_case(lambda w: [["put", "/usr//bin/x", "/usr//bin/.~pm.0123.1", None]]),
        "journal_with_a_relative_path": _journal_case(lambda w: [["rmdir", "outside"]], committed=True),
        "journal_with_an_unknown_operation": _journal_case(lambda w: [["chown", "/usr/bin/base", 0]]),
        "journal_delete_with_dotdot": _journal_case(lambda w: [["delete", "/usr/../../outside/victim"]],
                                                    committed=True),
        "journal_keep_with_dotdot": _journal_case(lambda w: [["keep", "/../outside/victim"]]),
        "journal_newdir_staged_elsewhere": _journal_case(
            lambda w: [["newdir", "/opt/new", "/../outside/.~pm.0123.1", 0o755]]),
        "journal_put_in_outside_its_staged_directory": _journal_case(
            lambda w: [["newdir", "/opt/new", "/opt/.~pm.0123.1", 0o755],
                       ["put-in", "/opt/new/x", "/usr/bin/base"]]),
        "journal_put_in_without_a_staged_directory": _journal_case(
            lambda w: [["put-in", "/usr/bin/base", "/usr/bin/base"]]),
    }.items():
        def _register(plant=_plant, name=_name, command=_command, suffix=_suffix):
            def planted(where):
                return plant(where)
            planted.__name__ = "%s__%s" % (name, suffix)
            case(command, "journal", slow=command[0] != "list-installed")(planted)
        _register()


# -- planted databases ---------------------------------------------------------------------

def _database_case(change):
    def plant(where):
        undo = keep(where, "/var/lib/pm/status", "/var/lib/pm/files/" + where.status()["packages"]["base"]["files"])
        change(where)
        return undo
    return plant


def _list_naming(path):
    def change(where):
        rows = msgpack.unpackb(where.file_list().read_bytes(), raw=False)
        rows.append([path, "f", 0o644, 1, b"\0" * 32, None])
        where.file_list().write_bytes(msgpack.packb(rows, use_bin_type=True))
    return change


def _status_change(edit):
    def change(where):
        # a file list a planted status could point to: valid, but outside the root
        (where.outside / "bait-list").write_bytes(msgpack.packb([["/usr/bin/base", "f", 0o755, 1, b"\0" * 32, None]]))
        status = where.status()
        edit(status)
        where.write_status(status)
    return change


def _files_ref(status, where=None):
    status["packages"]["base"]["files"] = "../../../../../outside/bait-list"


def _config_outside(status):
    status["packages"]["base"]["config"] = ["/../outside/victim"]


def _pending_script(status):
    status["pending"] = [{"txid": "x", "package": "base", "script": "../../outside/victim", "content": b"",
                          "version": "1.0", "old_version": None, "action": "install", "error": "failed"}]


def _bad_package_name(status):
    status["packages"]["../../outside"] = status["packages"].pop("base")


for _command in (("uninstall", "base"), ("uninstall", "--purge", "base"), ("verify",), ("files", "base")):
    for _name, _change in {
        "file_list_naming_a_path_outside": _list_naming("/../outside/victim"),
        "file_list_naming_a_relative_path": _list_naming("outside/victim"),
        "file_list_naming_a_dot_component": _list_naming("/usr/./bin/base"),
        "status_naming_a_file_list_outside": _status_change(_files_ref),
        "status_naming_a_config_file_outside": _status_change(_config_outside),
        "status_naming_a_package_with_a_slash": _status_change(_bad_package_name),
    }.items():
        def _register(change=_change, name=_name, command=_command):
            plant = _database_case(change)
            plant.__name__ = "%s__%s" % (name, "_".join(w.strip("-") for w in command))
            case(command, "database", slow="--purge" in command)(plant)
        _register()

@case(("list-installed",), "database")
def status_with_a_pending_script_named_outside__list_installed(where):
    return _database_case(_status_change(_pending_script))(where)


# -- pm's own files: a symbolic link, a FIFO or a directory where it keeps a file ------

STATE_FILES = [
    # (path, command that reads it, piece of the error)
    ("/var/lib/pm/status", ("list-installed",), "/var/lib/pm/status"),
    ("/var/lib/pm/status", ("verify",), "/var/lib/pm/status"),
    ("/var/lib/pm/status", ("install", "{valid}"), "/var/lib/pm/status"),
    ("/var/lib/pm/journal", ("list-installed",), "/var/lib/pm/journal"),
    ("/var/lib/pm/journal", ("install", "{valid}"), "/var/lib/pm/journal"),
    ("/var/lib/pm/lock", ("install", "{valid}"), "/var/lib/pm/lock"),
    ("/var/lib/pm/lock", ("recover",), "/var/lib/pm/lock"),
    ("/var/lib/pm/leftovers", ("recover",), "/var/lib/pm/leftovers"),
    ("{list}", ("files", "base"), "/var/lib/pm/files/base."),
    ("{list}", ("verify",), "/var/lib/pm/files/base."),
    ("{list}", ("uninstall", "base"), "/var/lib/pm/files/base."),
    ("/var/lib/pm/scripts/base/api-post-uninstall", ("uninstall", "base"), "/var/lib/pm/scripts/base/api-post-uninstall"),
    ("/var/lib/pm/scripts/base/api-pre-uninstall", ("uninstall", "base"), "/var/lib/pm/scripts/base/api-pre-uninstall"),
    ("/etc/pm/sources.list", ("update",), "/etc/pm/sources.list"),
    ("/etc/pm/sources.list.d/extra.list", ("update",), "/etc/pm/sources.list.d/extra.list"),
    ("/etc/pm/pm.conf", ("install", "{valid}"), "/etc/pm/pm.conf"),
    ("/etc/opm.conf", ("opm", "sync"), "/etc/opm.conf"),
    ("/var/lib/pm/oda.sqlite", ("opm", "init"), "/var/lib/pm/oda.sqlite"),
    ("/var/lib/pm/oda.sqlite", ("opm", "node", "add", "n1", "--role", "client"), "/var/lib/pm/oda.sqlite"),
    ("/var/lib/pm/oda.sqlite-wal", ("opm", "init"), "/var/lib/pm/oda.sqlite-wal"),
    ("/var/lib/pm/oda.sqlite-journal", ("opm", "node", "list"), "/var/lib/pm/oda.sqlite-journal"),
    ("/etc/os-release", ("prereq", "{prereq}"), "/etc/os-release"),
]

CONTENT = {
    "/etc/pm/sources.list": b"{repo}\n",
    "/etc/pm/sources.list.d/extra.list": b"{repo}\n",
    "/etc/pm/pm.conf": b"check_vulnerabilities = warn\n",
    "/etc/opm.conf": b"client\nn1\n",
    "/var/lib/pm/leftovers": msgpack.packb([["rmdir", "/srv/gone"]]),
    "/var/lib/pm/scripts/base/api-pre-uninstall": b"#!/bin/sh\nexit 0\n",
}

NEEDS_ODA = ("/etc/opm.conf", "/var/lib/pm/oda.sqlite-journal")
NEEDS_NO_ODA = ("/var/lib/pm/oda.sqlite", "/var/lib/pm/oda.sqlite-wal")


def _state_case(path, command, expect, kind, slow):
    def plant(where):
        real = path
        if path == "{list}":
            real = "/var/lib/pm/files/" + where.status()["packages"]["base"]["files"]
        if path in NEEDS_ODA:
            assert run_pm(where.root, "opm", "init").code == 0
        content = CONTENT.get(path, b"").replace(b"{repo}", str(where.tmp / "repo").encode())
        if kind == "symlink" and path.startswith("/var/lib/pm/oda"):
            content = b""
        return plant_odd(where, real, kind, content)
    name = "%s_as_a_%s__%s" % (path.strip("/{}").replace("/", "_").replace(".", "_").replace("-", "_"),
                                kind, "_".join(w.strip("-{}") for w in command[:2]))
    plant.__name__ = name
    case(command, expect, slow=slow)(plant)


_seen_paths = set()
for _path, _command, _expect in STATE_FILES:
    for _kind in ODD_KINDS:
        if _path == "/etc/os-release" and _kind == "symlink":
            continue            # a real /etc/os-release often is one: pm reads usr/lib/os-release then
        _state_case(_path, _command, _expect, _kind, slow=_path in _seen_paths)
    _seen_paths.add(_path)


# -- a directory source: its index or a package as a FIFO or a directory --------------

def _source_case(which, kind):
    def plant(where):
        where.at("/etc/pm").mkdir(parents=True, exist_ok=True)
        where.at("/etc/pm/sources.list").write_text("%s\n" % (where.tmp / "repo"))
        target = where.tmp / "repo" / (which if which == "index.json" else "other-1.0.tar")
        saved = target.read_bytes()
        target.unlink()
        if kind == "fifo":
            os.mkfifo(target)
        else:
            target.mkdir()

        def undo():
            remove(target)
            target.write_bytes(saved)
            where.at("/etc/pm/sources.list").unlink()
        return undo
    plant.__name__ = "directory_source_%s_as_a_%s" % ("index" if which == "index.json" else "package", kind)
    # -q: a by-name install first says what it will do (the summary); the error is the one line.
    command = ("update",) if which == "index.json" else ("-q", "install", "other")
    case(command, "repo/" + ("index.json" if which == "index.json" else "other-1.0.tar"))(plant)


for _which in ("index.json", "package"):
    for _kind in ("fifo", "directory"):
        _source_case(_which, _kind)


# -- a remote source's index in pm's cache -----------------------------------------------

REMOTE = "http://127.0.0.1:9/never-contacted"


def _cached_index_case(kind):
    def plant(where):
        import pm as pm_module
        where.at("/etc/pm").mkdir(parents=True, exist_ok=True)
        where.at("/etc/pm/sources.list").write_text(REMOTE + "\n")
        undo = plant_odd(where, "/var/cache/pm/indexes/" + pm_module.Source(REMOTE).slug, kind, b"not an index")

        def undo_all():
            undo()
            where.at("/etc/pm/sources.list").unlink()
        return undo_all
    plant.__name__ = "cached_index_as_a_%s__search" % kind
    case(("search", "anything"), "/var/cache/pm/indexes/")(plant)


for _kind in ODD_KINDS:
    _cached_index_case(_kind)


# -- the corpus --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A root with ``base`` installed (a config file and kept uninstall scripts), a
    repository directory with ``other``, a prerequisite directory and a valid package."""
    top = tmp_path_factory.mktemp("template")
    build = PackageBuilder(top / "packages").build
    root = top / "root"
    root.mkdir()
    base = build("base", "1.0", {"/usr/bin/base": File("b", 0o755), "/etc/base.conf": "c", "/srv/data/x": "x"},
                 config=["/etc/base.conf"], scripts={"api-post-uninstall": "#!/bin/sh\nexit 0\n"})
    assert run_pm(root, "install", base).code == 0
    from conftest import _repo_packager
    assert _repo_packager().main(["-d", str(top / "repo"), str(build("other", "1.0", {"/opt/other": "o"}))]) == 0
    packaged = [p for p in (top / "repo").iterdir() if p.name.endswith(".tar")]
    assert len(packaged) == 1
    packaged[0].rename(top / "repo" / "other-1.0.tar")
    index = json.loads((top / "repo" / "index.json").read_text())
    for entry in index["packages"]:
        entry["filename"] = "other-1.0.tar"
    (top / "repo" / "index.json").write_text(json.dumps(index))
    for stray in (top / "repo").iterdir():
        if stray.name.startswith("index.") and stray.name != "index.json":
            stray.unlink()
    prereq = top / "prereq"
    prereq.mkdir()
    (prereq / "prereq.cfg").write_text("[debian:*:*]\nfoo.tar\n")
    shutil.copy(build("foo", "1.0", {"/opt/foo": "f"}), prereq / "foo.tar")
    (root / "etc/os-release").write_text("ID=debian\nVERSION_ID=12\n")
    valid = build("valid", "1.0", {"/opt/valid/file": "v"})
    return top, valid


@pytest.fixture
def where(template, tmp_path):
    top, valid = template
    shutil.copytree(top / "root", tmp_path / "root", symlinks=True)
    shutil.copytree(top / "repo", tmp_path / "repo", symlinks=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("do not touch")
    (outside / "victim-dir").mkdir()
    (outside / "empty-dir").mkdir()
    (outside / "victim-dir" / "file").write_text("do not touch either")
    w = Where(tmp_path / "root", outside, tmp_path)
    w.valid, w.prereq = valid, top / "prereq"
    return w


def without_lock(tree, sqlite=False):
    """The tree without the lock file (a writer takes the lock before it reads what it
    refuses) and, where SQLite opened the ODA, without the time of the directory its
    -wal and -shm files came and went in."""
    tree = {k: v for k, v in tree.items() if k != "var/lib/pm/lock"}
    if sqlite and "var/lib/pm" in tree:
        tree["var/lib/pm"] = tree["var/lib/pm"][:3]
    return tree


@pytest.mark.parametrize("name", [pytest.param(name, marks=[pytest.mark.slow] if CASES[name][4] else [])
                                  for name in sorted(CASES)])
def test_planted_state_is_refused_with_one_line_and_nothing_touched_outside(name, where):
    plant, command, expect, code, _ = CASES[name]
    undo = plant(where)
    args = [str(where.valid) if a == "{valid}" else str(where.prereq) if a == "{prereq}" else a for a in command]
    sqlite = command[0] == "opm"
    outside, inside = exact_snapshot(where.outside), without_lock(exact_snapshot(where.root), sqlite)
    result = subprocess.run(["timeout", "60"] + run_command(where.root, args), capture_output=True, text=True)
    assert result.returncode != 124, "pm hung on %s" % name
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    lines = result.stderr.split("\n")
    assert len(lines) == 2 and lines[1] == "", result.stderr
    assert lines[0].startswith("pm: error: ") and expect in lines[0], result.stderr
    for raw in ("Errno", "Too many levels", "Invalid argument"):
        assert raw not in lines[0], lines[0]
    assert exact_snapshot(where.outside) == outside, "pm wrote, renamed or removed outside the root"
    assert without_lock(exact_snapshot(where.root), sqlite) == inside, "pm changed the root although it refused"
    undo()
    assert run_pm(where.root, "install", where.valid).code == 0, "the root is not usable afterwards"
    assert run_pm(where.root, "verify").code == 0
    assert exact_snapshot(where.outside) == outside


def run_command(root, args):
    import sys
    from conftest import PM
    return [sys.executable, str(PM), "--root", str(root)] + list(args)


def test_the_corpus_covers_journal_database_scripts_and_state_files():
    assert len(CASES) >= 100
    for piece in ("journal_", "file_list_", "status_", "scripts_base", "lock_as_a_fifo", "sources_list",
                  "pm_conf", "opm_conf", "os_release", "oda_sqlite", "directory_source"):
        assert any(piece in name for name in CASES), piece


# -- the ODA file ------------------------------------------------------------------------

@pytest.mark.parametrize("command", [("opm", "init"), ("opm", "node", "add", "n1", "--role", "client")])
def test_an_oda_file_that_is_a_symlink_is_never_written_through(pm, root, tmp_path, command):
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "var/lib/pm").mkdir(parents=True)
    os.symlink(outside / "oda.sqlite", root / "var/lib/pm/oda.sqlite")
    result = pm(*command, expect=3)
    assert "oda.sqlite is a symbolic link" in result.err and len(result.err.splitlines()) == 1
    assert list(outside.iterdir()) == []


def test_a_state_directory_that_is_a_symlink_keeps_the_oda_inside(pm, root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "var/lib").mkdir(parents=True)
    os.symlink(outside, root / "var/lib/pm")
    pm("opm", "node", "list", expect=3)
    assert list(outside.iterdir()) == []


# -- cleanup that cannot finish after the commit ----------------------------------------

def test_a_directory_that_cannot_be_removed_after_the_commit_is_a_leftover_not_a_blocker(pm, build, root):
    pm("install", build("app", "1.0", {"/srv/app/data/file": "x", "/srv/app/bin": "b"}))
    result = pm("uninstall", "app", env={"PM_FAULT": "EBUSY:1:rmdir"})
    assert "could not remove %s/srv/app/data" % root in result.err and "leftover" in result.err
    assert not exists(root, "/var/lib/pm/journal")
    assert pm("list-installed").out == ""
    pm("install", build("other", "1.0", {"/opt/other": "o"}))
    doctor = pm("doctor", expect=None)
    assert "%s/srv/app/data" % root in doctor.out + doctor.err
    assert exists(root, "/srv/app/data")
    recovered = pm("recover")
    assert "removed what earlier transactions left behind" in recovered.out + recovered.err
    assert not exists(root, "/srv/app") and not exists(root, "/var/lib/pm/leftovers")
    assert "no leftovers of past transactions" in pm("doctor", expect=None).out


def test_a_leftover_that_still_cannot_be_removed_stays_recorded(pm, build, root):
    pm("install", build("app", "1.0", {"/srv/app/file": "x"}))
    pm("uninstall", "app", env={"PM_FAULT": "EPERM:1:rmdir"})
    result = pm("recover", env={"PM_FAULT": "EPERM:1:rmdir"})
    assert "still cannot remove %s/srv/app" % root in result.err
    assert exists(root, "/var/lib/pm/leftovers")
    pm("recover")
    assert not exists(root, "/srv/app") and not exists(root, "/var/lib/pm/leftovers")


def test_a_mount_point_in_a_removed_package_never_blocks_other_commands(pm, build, root):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    pm("install", build("app", "1.0", {"/srv/app/mnt": Dir(), "/srv/app/file": "x"}))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(root / "srv/app/mnt")],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (%s)" % mounted.stderr.strip())
    try:
        result = pm("uninstall", "app")
        assert "could not remove %s/srv/app/mnt" % root in result.err
        assert pm("list-installed").out == ""
        pm("install", build("other", "1.0", {"/opt/other": "o"}))
        pm("verify")
    finally:
        subprocess.run(["umount", "-l", str(root / "srv/app/mnt")])
    pm("recover")
    assert not exists(root, "/srv/app")


# -- pending work of removed packages ----------------------------------------------------

@pytest.mark.parametrize("how", [("uninstall",), ("uninstall", "--purge")])
def test_removing_a_package_ends_its_pending_post_install(pm, build, root, how):
    marker = root.parent / "ran"
    script = "#!/bin/sh\necho run >> %s\nexit 1\n" % marker
    pm("install", build("bad", "1.0", {"/opt/bad": "b"}, scripts={"api-post-install": script}), expect=1)
    assert marker.read_text() == "run\n"
    pm(*how, "bad")
    assert pm("list-installed").err == "", "the removed package's pending work is still there"
    assert "nothing to recover" in pm("recover").err
    assert marker.read_text() == "run\n", "pm recover ran a removed package's script"


# -- directory modes ----------------------------------------------------------------------

def test_an_upgrade_that_tightens_a_directory_mode_applies_it_and_verify_checks_it(pm, build, root):
    pm("install", build("app", "1.0", {"/srv/private": Dir(0o755), "/srv/private/key": "k"}))
    pm("install", build("app", "2.0", {"/srv/private": Dir(0o700), "/srv/private/key": "k2"}))
    assert stat.S_IMODE(os.stat(root / "srv/private").st_mode) == 0o700
    pm("verify")
    os.chmod(root / "srv/private", 0o755)
    result = pm("verify", expect=5)
    assert "app: /srv/private: mode changed from 0700 to 0755" in result.out


def test_a_killed_directory_mode_change_is_undone_or_finished(pm, build, root):
    pm("install", build("app", "1.0", {"/srv/private": Dir(0o755), "/srv/private/key": "k"}))
    result = run_pm(root, "install", build("app", "2.0", {"/srv/private": Dir(0o700), "/srv/private/key": "k2"}),
                    env={"PM_FAULT": "kill:1:db"})
    assert result.code == -9
    pm("recover")
    assert stat.S_IMODE(os.stat(root / "srv/private").st_mode) == 0o755
    assert pm("list-installed").out == "app (1.0)\n"
    pm("verify")


# -- what a full disk names ---------------------------------------------------------------

@pytest.mark.parametrize("kind", ["journal", "write", "db"])
def test_a_full_disk_names_what_pm_was_doing_and_the_real_path(pm, build, root, kind):
    pm("install", build("app", "1.0", {"/opt/app/file": "1"}))
    result = pm("install", build("app", "2.0", {"/opt/app/file": "2"}), env={"PM_FAULT": "ENOSPC:1:" + kind},
                expect=1)
    line = result.err.strip()
    assert len(line.splitlines()) == 1 and "No space left on device" in line
    assert "journal.tmp" not in line and ".~pm." not in line and "status.tmp" not in line, line
    assert str(root) in line, line
    assert pm("list-installed").out == "app (1.0)\n"


@pytest.mark.parametrize("name", ["journal.tmp", "status.tmp"])
def test_a_directory_where_pm_keeps_a_temporary_file_is_refused_with_its_path(pm, build, root, name):
    pm("install", build("app", "1.0", {"/opt/app/file": "1"}))
    (root / "var/lib/pm" / name).mkdir()
    result = pm("install", build("other", "1.0", {"/opt/other": "o"}), expect=3)
    assert "%s/var/lib/pm/%s is a directory" % (root, name) in result.err
    assert len(result.err.splitlines()) == 1


def test_doctor_names_every_odd_state_file_and_never_hangs(pm, build, root):
    pm("install", build("app", "1.0", {"/opt/app/file": "1"}))
    state = root / "var/lib/pm"
    for name in ("status", "journal", "lock", "leftovers"):
        if (state / name).exists():
            (state / name).unlink()
        os.mkfifo(state / name)
    result = run_pm(root, "doctor", timeout=60)
    assert result.code == 1
    for name in ("status", "journal", "lock", "leftovers"):
        assert "%s/%s is a FIFO" % (state, name) in result.out, result.out
