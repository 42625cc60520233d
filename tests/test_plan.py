"""SPEC §8 (install, upgrade, uninstall) proved on plans, as values, with no filesystem.

Every scenario here builds its world in memory: packages as the values the planner reads
(``MemoryPackage``), the database with ``pm.Database.of`` and the tree under the root as a
``MemoryTree`` (a ``pm.TreeView`` answered from a dict).  It then asks
``pm.plan_install`` / ``pm.plan_uninstall`` for the Plan and states SPEC §8's rules about
that value: the changes and their actions, each change's steps, the operations a
transaction would journal, the database records after, the notes for the person at the
terminal, and the one-line ``pm.Refused`` message when the command is refused.

Each planning call runs inside ``sealed_filesystem()``, which makes ``os.open``,
``os.stat``, ``os.lstat``, ``os.listdir``, ``os.scandir``, ``os.readlink`` and
``builtins.open`` raise (and remembers the attempt, in case pm swallows the error): a plan
that reached for the disk fails its test.  The last tests show that computing a plan is
deterministic (apart from the reserved staging names) and changes neither the database
nor the tree it was computed from.
"""

import builtins
import contextlib
import copy
import errno
import hashlib
import io
import os
import stat

import pytest

import pm


# -- a tree held in memory ------------------------------------------------------------

def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def ancestors(path: str) -> list:
    """The directories above ``path``, nearest last, without ``/``."""
    found = []
    while True:
        path = parent(path)
        if path == "/":
            return found[::-1]
        found.append(path)


DIR = ("d", 0o755)


def link(target: str) -> tuple:
    return ("l", target)


def regular(content: bytes, mode: int = 0o644) -> tuple:
    return ("f", content, mode)


def entry_of(value) -> tuple:
    """A tree entry from the shorthand scenarios use: bytes are a 0644 regular file."""
    return regular(value) if isinstance(value, bytes) else value


class MemoryTree(pm.TreeView):
    """The tree under a root, in a dict ``{path: ("f", bytes, mode) | ("d", mode) |
    ("l", target)}``; ``/`` is always a directory and every parent of a path given is
    one too.  It answers the planner's five questions and never touches the disk."""

    def __init__(self, entries=None):
        self.entries = {"/": DIR}
        for path, value in sorted((entries or {}).items()):
            for directory in ancestors(path):
                self.entries.setdefault(directory, DIR)
            self.entries[path] = entry_of(value)

    def lstat(self, path):
        entry = self.entries.get(path)
        if entry is None:
            return None
        if entry[0] == "f":
            mode, size = stat.S_IFREG | entry[2], len(entry[1])
        elif entry[0] == "d":
            mode, size = stat.S_IFDIR | entry[1], 4096
        else:
            mode, size = stat.S_IFLNK | 0o777, len(entry[1])
        return os.stat_result((mode, 0, 0, 1, 0, 0, size, 0, 0, 0))

    def _file(self, path):
        entry = self.entries.get(path)
        if entry is None:
            return None
        if entry[0] != "f":         # as pm.Root: never read through a link, nor a directory
            raise pm.InvalidInput("%s is not a regular file" % path)
        return entry[1]

    def digest(self, path):
        content = self._file(path)
        return None if content is None else sha(content)

    def read(self, path):
        return self._file(path)

    def listdir(self, path):
        entry = self.entries.get(path)
        if entry is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        if entry[0] != "d":
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", path)
        return sorted(p.rsplit("/", 1)[1] for p in self.entries if p != "/" and parent(p) == path)

    def link_leaves_root(self, path):
        """As pm.Root for a root that is not ``/``: an absolute target, or one climbing
        above the root with ``..``, leaves it."""
        target = self.entries[path][1]
        return target.startswith("/") or pm.climbs_above_root(path, target)


# -- packages made in memory ----------------------------------------------------------

class MemoryPackage:
    """What the planner reads of a checked package archive (pm.Package after its
    checks): ``name``, ``version``, ``manifest``, ``members`` (directories before their
    contents, as archives list them), ``scripts`` and ``config_digests``."""

    def __init__(self, manifest: dict, files: dict, scripts: dict):
        pm.validate_manifest(manifest)          # the manifest a real archive could carry
        self.manifest = manifest
        self.name = manifest["package"]
        self.version = pm.Version.parse(manifest["version"])
        self.scripts = dict(scripts)
        self.files = {}                         # path -> tree entry, every member
        for path, value in files.items():
            for directory in ancestors(path):
                self.files.setdefault(directory, DIR)
            self.files[path] = entry_of(value)
        self.members = []
        for path, entry in sorted(self.files.items()):     # a parent sorts before its contents
            if entry[0] == "d":
                member = pm.Member(path, "d", entry[1], 0, None, 0)
            elif entry[0] == "l":
                member = pm.Member(path, "l", 0o777, 0, entry[1], 0)
            else:
                member = pm.Member(path, "f", entry[2], len(entry[1]), None, 0)
                member.digest = sha(entry[1])           # CONTROL/sums, as repoPackager writes it
            self.members.append(member)
        is_config = pm.config_matcher(manifest)
        self.config_digests = {m.path: m.digest for m in self.members if m.kind == "f" and is_config(m.path)}

    def __repr__(self):
        return "MemoryPackage(%s %s)" % (self.name, self.version)


def package(name, version="1.0", files=None, config=(), depends=None, conflicts=None, provides=None,
            scripts=None, **manifest):
    """A package value: ``files`` maps paths to bytes (a 0644 file), ``regular(bytes,
    mode)``, ``DIR`` or ``link(target)``; ``config`` is the manifest's configFiles."""
    fields = {"manifestVersion": "1.0", "package": name, "version": version, "architecture": "all"}
    for field, value in (("dependencies", depends), ("conflicts", conflicts), ("provides", provides)):
        if value is not None:
            fields[field] = value
    if config:
        fields["configFiles"] = list(config)
    fields.update(manifest)
    return MemoryPackage(fields, files or {"/usr/share/%s/README" % name: b"about " + name.encode()},
                         scripts or {})


def file_entries(pkg: MemoryPackage, only=None) -> dict:
    """The database's file list of ``pkg`` installed (``only``: just these paths and
    their directories)."""
    entries = {}
    for member in pkg.members:
        if only is not None and member.path not in only and not any(
                p.startswith(member.path + "/") for p in only):
            continue
        if member.kind == "d":
            entries[member.path] = pm.FileEntry("d", member.mode, explicit=True)
        elif member.kind == "l":
            entries[member.path] = pm.FileEntry("l", 0o777, 0, None, member.link)
        else:
            entries[member.path] = pm.FileEntry("f", member.mode, member.size, member.digest)
    return entries


SCRIPTS = "/var/lib/pm/scripts"


def world(*installed, removed=(), disk=None, reasons=None):
    """The database with ``installed`` packages (those named in ``removed``: only their
    config files remain) and a MemoryTree holding their files and kept scripts, under a
    root whose pm directory exists.  ``disk`` then changes the tree: {path: bytes or an
    entry, or None for absent}."""
    records, lists, tree = {}, {}, {SCRIPTS: DIR}
    for pkg in installed:
        config = sorted(pkg.config_digests)
        gone = pkg.name in removed
        entries = file_entries(pkg, only=set(config) if gone else None)
        records[pkg.name] = {
            "version": pkg.version.text, "manifest": pkg.manifest,
            "state": pm.STATE_CONFIG_REMAINING if gone else pm.STATE_INSTALLED,
            "reason": (reasons or {}).get(pkg.name, pm.REASON_EXPLICIT), "time": 0,
            "files": pkg.name + ".abc", "config": config,
            "size": sum(e.size for e in entries.values())}
        lists[pkg.name] = entries
        for path in entries:
            tree[path] = pkg.files[path]
        if not gone:
            for script, content in pkg.scripts.items():
                tree["%s/%s/%s" % (SCRIPTS, pkg.name, script)] = regular(content, 0o755)
    tree = MemoryTree(tree)
    for path, value in (disk or {}).items():
        if value is None:
            tree.entries.pop(path, None)
        else:
            for directory in ancestors(path):
                tree.entries.setdefault(directory, DIR)
            tree.entries[path] = entry_of(value)
    return pm.Database.of(records, lists), tree


# -- planning with the filesystem sealed ----------------------------------------------

class FilesystemTouched(AssertionError):
    """The planner reached for the disk."""


@contextlib.contextmanager
def sealed_filesystem():
    """Make the ways to reach the disk raise while the block runs, and fail afterwards
    if any was tried (even when pm caught the error)."""
    touched = []

    def refusing(name):
        def call(*args, **kwargs):
            touched.append("%s%r" % (name, args))
            raise FilesystemTouched("the planner called %s%r" % (name, args))
        return call

    with pytest.MonkeyPatch.context() as patch:
        for name in ("open", "stat", "lstat", "listdir", "scandir", "readlink"):
            patch.setattr(os, name, refusing("os." + name))
        patch.setattr(builtins, "open", refusing("open"))
        patch.setattr(io, "open", refusing("io.open"))
        try:
            yield
        finally:
            patch.undo()
            if touched:
                raise FilesystemTouched("the planner touched the filesystem: " + "; ".join(touched))


def install(db, tree, *packages, reasons=None, **options) -> pm.Plan:
    with sealed_filesystem():
        return pm.plan_install(db, tree, list(packages), reasons or {}, pm.Options(**options))


def uninstall(db, tree, *names, **options) -> pm.Plan:
    with sealed_filesystem():
        return pm.plan_uninstall(db, tree, list(names), pm.Options(**options))


def refused(plan_call, *args, **options) -> str:
    """The one-line message of the Refused the call raises (exit code 1)."""
    with pytest.raises(pm.Refused) as caught:
        plan_call(*args, **options)
    assert caught.value.exit_code == 1
    assert "\n" not in caught.value.message
    return caught.value.message


# -- reading plans --------------------------------------------------------------------

def ops(plan) -> list:
    """The plan's operations as the journal holds them: plain lists ``[kind, path, ...]``."""
    return [op.as_list() for op in plan.journal()["ops"]]


def paths(plan, kind) -> list:
    """The paths of the plan's operations of ``kind`` (put, mkdir, delete, rmdir...)."""
    return [op[1] for op in ops(plan) if op[0] == kind]


def touched_paths(plan) -> set:
    return {op[1] for op in ops(plan)}


def change(plan, name):
    found = [c for c in plan.changes if c.name == name]
    assert len(found) == 1, plan.changes
    return found[0]


def file_list(plan, name) -> dict:
    """The new file list of ``name`` in the database after the plan."""
    return plan.file_lists[plan.packages[name]["files"]]


def written_from(plan, pkg) -> dict:
    """{member path: target path} of the files the plan writes from ``pkg``'s members."""
    staged_to_target = {op[2]: op[1] for op in ops(plan) if op[0] in ("put", "put-in")}
    return {member.path: staged_to_target[staged] for member, (staged, _) in plan.puts_of(pkg)}


def written_bytes(plan, path) -> bytes:
    """The bytes the plan writes at ``path`` from data of its own (kept scripts)."""
    op = next(op for op in ops(plan) if op[0] in ("put", "put-in") and op[1] == path)
    return next(data for staged, data, _ in plan.byte_puts if staged == op[2])


def test_the_seal_catches_every_way_to_the_disk():
    with pytest.raises(FilesystemTouched):
        with sealed_filesystem():
            pm.Root("/").lstat("/etc")
    with pytest.raises(FilesystemTouched, match="os.listdir"):
        with sealed_filesystem():
            try:                        # an error swallowed is still caught on the way out
                os.listdir("/")
            except Exception:
                pass
    with pytest.raises(FilesystemTouched):
        with sealed_filesystem():
            open("/etc/hostname", "rb")
    assert os.listdir("/")              # and everything is back afterwards


def test_memory_tree_answers_the_five_questions():
    tree = MemoryTree({"/etc/app.conf": b"abc", "/usr/bin/sh": link("dash"), "/up": link("../x"),
                       "/abs": link("/etc"), "/opt": DIR})
    with sealed_filesystem():
        assert stat.S_ISDIR(tree.lstat("/").st_mode) and stat.S_ISDIR(tree.lstat("/etc").st_mode)
        assert stat.S_ISREG(tree.lstat("/etc/app.conf").st_mode) and tree.lstat("/etc/app.conf").st_size == 3
        assert stat.S_ISLNK(tree.lstat("/usr/bin/sh").st_mode) and tree.lstat("/nothing") is None
        assert tree.digest("/etc/app.conf") == sha(b"abc") and tree.digest("/etc/none") is None
        assert tree.read("/etc/app.conf") == b"abc" and tree.read("/etc/none") is None
        assert tree.listdir("/") == ["abs", "etc", "opt", "up", "usr"] and tree.listdir("/opt") == []
        with pytest.raises(FileNotFoundError):
            tree.listdir("/srv")
        assert not tree.link_leaves_root("/usr/bin/sh")
        assert tree.link_leaves_root("/up") and tree.link_leaves_root("/abs")


# -- §8.1 same version, downgrade, upgrade --------------------------------------------

APP = {"/usr/bin/app": regular(b"app 1", 0o755), "/usr/share/app/data": b"data 1"}


def test_installing_the_same_version_again_is_a_no_op():
    db, tree = world(package("app", "1.0", APP))
    plan = install(db, tree, package("app", "1.0", APP))
    assert plan.empty and plan.changes == [] and ops(plan) == []
    assert ("say", "app 1.0 is already installed") in plan.notes
    assert plan.packages == db.packages


def test_the_same_version_with_allow_same_version_is_a_reinstall():
    db, tree = world(package("app", "1.0", APP))
    plan = install(db, tree, package("app", "1.0", APP), allow_same_version=True)
    (reinstall,) = plan.changes
    assert (reinstall.name, reinstall.action, reinstall.version, reinstall.old_version) == \
        ("app", "reinstall", "1.0", "1.0")
    # the files are the ones installed (same sha256, mode and size): left as they are
    assert ("unchanged", "/usr/bin/app") in reinstall.steps
    assert set(paths(plan, "keep")) == {"/usr/bin/app", "/usr/share/app/data"}
    assert plan.packages["app"]["version"] == "1.0"


def test_an_unversioned_package_is_always_reinstallable():
    db, tree = world(package("app", "oppm", APP))
    plan = install(db, tree, package("app", "oppm", APP))
    assert [(c.name, c.action) for c in plan.changes] == [("app", "reinstall")]


def test_a_lower_version_is_refused_as_a_downgrade():
    db, tree = world(package("app", "2.0", APP))
    message = refused(install, db, tree, package("app", "1.5", APP))
    assert "downgrade" in message and "app 2.0 is installed" in message and "1.5" in message


def test_a_lower_version_with_allow_same_version_is_a_downgrade():
    db, tree = world(package("app", "2.0", APP))
    plan = install(db, tree, package("app", "1.5", APP), allow_same_version=True)
    (downgrade,) = plan.changes
    assert (downgrade.action, downgrade.version, downgrade.old_version) == ("downgrade", "1.5", "2.0")
    assert plan.packages["app"]["version"] == "1.5"


def test_a_higher_version_is_an_upgrade():
    old = package("app", "1.0", dict(APP, **{"/usr/share/app/old": b"dropped"}))
    db, tree = world(old)
    new = package("app", "1.1", {"/usr/bin/app": regular(b"app 1.1", 0o755),
                                 "/usr/share/app/data": b"data 1", "/usr/share/app/new": b"added"})
    plan = install(db, tree, new)
    (upgrade,) = plan.changes
    assert (upgrade.name, upgrade.action, upgrade.version, upgrade.old_version) == ("app", "upgrade", "1.1", "1.0")
    assert ("replace", "/usr/bin/app") in upgrade.steps
    assert ("unchanged", "/usr/share/app/data") in upgrade.steps
    assert ("write", "/usr/share/app/new") in upgrade.steps
    assert ("remove", "/usr/share/app/old") in upgrade.steps
    puts = {op[1]: op[3] for op in ops(plan) if op[0] == "put"}
    assert puts["/usr/bin/app"] is not None          # the old file is backed up until commit
    assert puts["/usr/share/app/new"] is None        # nothing there to back up
    assert paths(plan, "keep") == ["/usr/share/app/data"]
    assert paths(plan, "delete") == ["/usr/share/app/old"]
    assert plan.packages["app"]["version"] == "1.1"
    assert set(file_list(plan, "app")) == {"/usr", "/usr/bin", "/usr/bin/app", "/usr/share", "/usr/share/app",
                                           "/usr/share/app/data", "/usr/share/app/new"}
    assert "app.abc" in plan.obsolete_lists


# -- §8.2 dependencies ----------------------------------------------------------------

def test_a_missing_dependency_is_refused_naming_it():
    db, tree = world()
    message = refused(install, db, tree, package("app", depends={"libfoo": ">=1.2"}))
    assert "app needs libfoo >=1.2, which is not installed" in message


def test_a_dependency_installed_in_the_same_command_satisfies_it_and_comes_first():
    db, tree = world()
    app, lib = package("app", depends={"zlib": ">=1.0"}), package("zlib", "1.3")
    plan = install(db, tree, app, lib)
    assert [(c.name, c.action) for c in plan.changes] == [("zlib", "install"), ("app", "install")]
    assert plan.packages["app"]["state"] == plan.packages["zlib"]["state"] == pm.STATE_INSTALLED


def test_a_dependency_is_satisfied_through_provides():
    db, tree = world(package("postfix", "3.0", provides=["mta"]))
    plan = install(db, tree, package("mailer", depends={"mta": "*"}))
    assert [(c.name, c.action) for c in plan.changes] == [("mailer", "install")]


def test_a_declared_conflict_is_refused():
    db, tree = world(package("sendmail", "8.0"))
    message = refused(install, db, tree, package("postfix", "3.0", conflicts={"sendmail": "*"}))
    assert "postfix conflicts with sendmail 8.0" in message


def test_uninstall_is_refused_while_another_package_depends_on_it():
    db, tree = world(package("lib"), package("app", depends={"lib": ">=1.0"}))
    message = refused(uninstall, db, tree, "lib")
    assert "lib is needed by app" in message and "--recursive" in message


def test_uninstall_is_refused_while_a_package_depends_on_what_it_provides():
    db, tree = world(package("postfix", provides=["mta"]), package("mailer", depends={"mta": "*"}))
    message = refused(uninstall, db, tree, "postfix")
    assert "mta (provided by postfix) is needed by mailer" in message


def test_recursive_uninstall_removes_the_dependents_first():
    db, tree = world(package("lib"), package("app", depends={"lib": ">=1.0"}), package("other"))
    plan = uninstall(db, tree, "lib", recursive=True)
    assert [(c.name, c.action) for c in plan.changes] == [("app", "remove"), ("lib", "remove")]
    assert set(plan.packages) == {"other"}
    assert "/usr/share/app/README" in paths(plan, "delete") and "/usr/share/lib/README" in paths(plan, "delete")


def test_an_upgrade_breaking_an_installed_dependents_constraint_is_refused():
    db, tree = world(package("lib", "1.4"), package("app", depends={"lib": ">=1.0,<2"}))
    message = refused(install, db, tree, package("lib", "2.0"))
    assert "app needs lib" in message and "but lib is 2.0" in message


# -- §8.3 file conflicts and shared directories ----------------------------------------

def test_a_path_owned_by_another_package_is_refused_with_the_path_and_its_owner():
    db, tree = world(package("tools", files={"/usr/bin/tool": b"theirs", "/usr/bin/other": b"x"}))
    message = refused(install, db, tree, package("app", files={"/usr/bin/tool": b"mine"}))
    assert message.startswith("file conflicts")
    assert "/usr/bin/tool (owned by tools)" in message and "--force-overwrite" in message


def test_a_path_on_disk_owned_by_nobody_is_refused():
    db, tree = world(disk={"/usr/bin/tool": b"left by hand"})
    message = refused(install, db, tree, package("app", files={"/usr/bin/tool": b"mine"}))
    assert "/usr/bin/tool (exists on disk, owned by no package)" in message


def test_force_overwrite_takes_a_file_over_from_its_owner():
    tools = package("tools", files={"/usr/bin/tool": b"theirs", "/usr/bin/other": b"x"})
    db, tree = world(tools)
    app = package("app", files={"/usr/bin/tool": b"mine"})
    plan = install(db, tree, app, force_overwrite=True)
    assert ("warn", "app takes over /usr/bin/tool from tools") in plan.notes
    assert written_from(plan, app) == {"/usr/bin/tool": "/usr/bin/tool"}
    assert [op[3] is not None for op in ops(plan) if op[:2] == ["put", "/usr/bin/tool"]] == [True]
    # the other owner's file list loses that path, and only that path
    assert plan.packages["tools"]["files"] != "tools.abc" and "tools.abc" in plan.obsolete_lists
    assert set(file_list(plan, "tools")) == set(db.files("tools")) - {"/usr/bin/tool"}
    assert "/usr/bin/tool" in file_list(plan, "app")


def test_force_overwrite_replaces_a_file_owned_by_nobody():
    db, tree = world(disk={"/usr/bin/tool": b"left by hand"})
    plan = install(db, tree, package("app", files={"/usr/bin/tool": b"mine"}), force_overwrite=True)
    assert ("warn", "app replaces /usr/bin/tool, which no package owned") in plan.notes
    assert ("replace", "/usr/bin/tool") in change(plan, "app").steps


def test_two_packages_of_one_command_containing_the_same_path_are_refused():
    db, tree = world()
    message = refused(install, db, tree, package("one", files={"/usr/bin/x": b"1"}),
                      package("two", files={"/usr/bin/x": b"2"}))
    assert message == "one and two both contain /usr/bin/x"


SHARED = "/usr/share/common"


def test_uninstalling_one_of_two_packages_sharing_a_directory_keeps_it():
    db, tree = world(package("a", files={SHARED + "/a": b"a"}), package("b", files={SHARED + "/b": b"b"}))
    plan = uninstall(db, tree, "a")
    assert paths(plan, "delete") == [SHARED + "/a"]
    assert paths(plan, "rmdir") == []
    assert not any(verb == "rmdir" for verb, _ in change(plan, "a").steps)


def test_uninstalling_the_last_owner_of_a_directory_removes_it_when_empty():
    db, tree = world(package("a", files={"/opt/a/bin/run": b"a", "/opt/a/lib/x": b"x"}))
    plan = uninstall(db, tree, "a")
    assert sorted(paths(plan, "delete")) == ["/opt/a/bin/run", "/opt/a/lib/x"]
    assert paths(plan, "rmdir") == ["/opt/a/lib", "/opt/a/bin", "/opt/a", "/opt"]     # deepest first
    assert ("rmdir", "/opt/a") in change(plan, "a").steps
    assert "a" not in plan.packages


def test_a_directory_emptied_by_an_uninstall_stays_while_another_package_owns_it():
    db, tree = world(package("a", files={"/srv/shared/a": b"a"}), package("b", files={"/srv/shared": DIR}))
    assert tree.listdir("/srv/shared") == ["a"]
    plan = uninstall(db, tree, "a")
    assert paths(plan, "delete") == ["/srv/shared/a"]
    assert paths(plan, "rmdir") == []


def test_uninstalling_every_owner_of_a_shared_directory_removes_it():
    db, tree = world(package("a", files={SHARED + "/a": b"a"}), package("b", files={SHARED + "/b": b"b"}))
    plan = uninstall(db, tree, "a", "b")
    assert {SHARED, "/usr/share", "/usr"} <= set(paths(plan, "rmdir"))


def test_a_directory_holding_a_file_no_package_owns_stays():
    db, tree = world(package("a", files={"/opt/a/run": b"a"}), disk={"/opt/a/notes.txt": b"mine"})
    plan = uninstall(db, tree, "a")
    assert paths(plan, "delete") == ["/opt/a/run"]
    assert paths(plan, "rmdir") == []
    assert "/opt/a/notes.txt" not in touched_paths(plan)


# -- §8.4 config files ----------------------------------------------------------------
#
# A: the sha256 the database recorded (the package installed), D: the file on disk (the
# MemoryTree), N: the new package's config digest.

CONF = "/etc/app.conf"
NEW = CONF + ".pm-new"


def config_upgrade(packaged_before, on_disk, packaged_now):
    """Upgrade app 1.0 (CONF = packaged_before) to 2.0 (CONF = packaged_now) with
    ``on_disk`` at CONF (None: absent); the plan and the new package."""
    old = package("app", "1.0", {"/usr/bin/app": b"v1", CONF: packaged_before}, config=[CONF])
    new = package("app", "2.0", {"/usr/bin/app": b"v2", CONF: packaged_now}, config=[CONF])
    db, tree = world(old, disk={CONF: on_disk})
    plan = install(db, tree, new)
    assert db.files("app")[CONF].digest == sha(packaged_before)
    assert new.config_digests[CONF] == sha(packaged_now)
    return plan, new


def assert_written(plan, new, step):
    """N is written at CONF (no .pm-new) and recorded as the packaged digest."""
    assert (step, CONF) in change(plan, "app").steps
    assert written_from(plan, new)[CONF] == CONF
    assert NEW not in touched_paths(plan)
    assert file_list(plan, "app")[CONF].digest == new.config_digests[CONF]
    assert plan.packages["app"]["config"] == [CONF]


def assert_kept(plan, new):
    """D stays as it is and nothing is written beside it; N is the digest recorded
    (the packaged one, A of the next upgrade)."""
    assert ("keep", CONF) in change(plan, "app").steps
    assert CONF not in written_from(plan, new)
    assert CONF not in touched_paths(plan) and NEW not in touched_paths(plan)
    assert file_list(plan, "app")[CONF].digest == new.config_digests[CONF]


def test_config_a_d_n_all_equal_is_written():
    plan, new = config_upgrade(b"same", b"same", b"same")
    assert pm.decide_config_file(sha(b"same"), sha(b"same"), sha(b"same")) == pm.ConfigFileDecision.WRITE
    assert_written(plan, new, "replace")


def test_config_unmodified_on_disk_takes_the_new_version():
    plan, new = config_upgrade(b"v1 setting", b"v1 setting", b"v2 setting")
    assert_written(plan, new, "replace")
    assert [op[3] is not None for op in ops(plan) if op[:2] == ["put", CONF]] == [True]


def test_config_modified_on_disk_and_unchanged_in_the_package_is_kept():
    plan, new = config_upgrade(b"packaged", b"edited", b"packaged")
    assert_kept(plan, new)


def test_config_modified_on_disk_as_the_new_package_has_it_is_kept():
    plan, new = config_upgrade(b"packaged 1", b"as in 2", b"as in 2")
    assert_kept(plan, new)


def test_config_modified_on_disk_and_changed_in_the_package_is_kept_with_pm_new_beside_it():
    plan, new = config_upgrade(b"packaged 1", b"edited", b"packaged 2")
    steps = change(plan, "app").steps
    assert steps.index(("keep", CONF)) + 1 == steps.index(("write-new", NEW))
    assert written_from(plan, new)[CONF] == NEW
    assert [op for op in ops(plan) if op[1] == NEW][0][0] == "put"
    assert [op[3] for op in ops(plan) if op[1] == NEW] == [None]
    assert CONF not in touched_paths(plan)
    assert file_list(plan, "app")[CONF].digest == sha(b"packaged 2")


def test_config_absent_from_disk_is_written():
    plan, new = config_upgrade(b"packaged 1", None, b"packaged 2")
    assert_written(plan, new, "write")
    assert [op[3] for op in ops(plan) if op[:2] == ["put", CONF]] == [None]


def test_config_of_a_fresh_install_over_an_unowned_file_keeps_it_and_writes_pm_new():
    db, tree = world(disk={CONF: b"written by hand"})
    new = package("app", "1.0", {"/usr/bin/app": b"v1", CONF: b"packaged"}, config=[CONF])
    plan = install(db, tree, new)        # no conflict: a config file is not taken over
    steps = change(plan, "app").steps
    assert steps.index(("keep", CONF)) + 1 == steps.index(("write-new", NEW))
    assert written_from(plan, new)[CONF] == NEW
    assert CONF not in touched_paths(plan)
    assert plan.packages["app"]["config"] == [CONF]


def test_config_of_a_fresh_install_over_an_identical_unowned_file_is_kept_without_pm_new():
    # pm's refinement of the row above: nothing to compare when D is N already
    db, tree = world(disk={CONF: b"packaged"})
    new = package("app", "1.0", {CONF: b"packaged"}, config=[CONF])
    plan = install(db, tree, new)
    assert ("keep", CONF) in change(plan, "app").steps
    assert CONF not in touched_paths(plan) and NEW not in touched_paths(plan)


def test_config_directory_entry_covers_every_file_below_it():
    old = package("app", "1.0", {"/etc/app/a.conf": b"a1", "/etc/app/b.conf": b"b1"}, config=["/etc/app/"])
    new = package("app", "2.0", {"/etc/app/a.conf": b"a2", "/etc/app/b.conf": b"b2"}, config=["/etc/app/"])
    db, tree = world(old, disk={"/etc/app/a.conf": b"edited"})
    plan = install(db, tree, new)
    steps = change(plan, "app").steps
    assert ("write-new", "/etc/app/a.conf.pm-new") in steps and ("replace", "/etc/app/b.conf") in steps
    assert plan.packages["app"]["config"] == ["/etc/app/a.conf", "/etc/app/b.conf"]


def app_with_config():
    return package("app", "1.0", {"/usr/bin/app": b"v1", CONF: b"packaged"}, config=[CONF])


def test_uninstall_keeps_config_files_and_the_record_as_config_remaining():
    db, tree = world(app_with_config(), disk={CONF: b"edited"})
    plan = uninstall(db, tree, "app")
    (removal,) = plan.changes
    assert (removal.action, removal.old_version) == ("remove", "1.0")
    assert ("keep", CONF) in removal.steps and ("remove", "/usr/bin/app") in removal.steps
    assert paths(plan, "delete") == ["/usr/bin/app"]
    assert CONF not in touched_paths(plan) and "/etc" not in paths(plan, "rmdir")
    record = plan.packages["app"]
    assert record["state"] == pm.STATE_CONFIG_REMAINING and record["config"] == [CONF]
    assert record["version"] == "1.0"
    assert set(file_list(plan, "app")) == {"/etc", CONF}
    assert file_list(plan, "app")[CONF].digest == sha(b"packaged")


def test_purge_removes_config_files_and_the_record():
    db, tree = world(app_with_config(), disk={CONF: b"edited", NEW: b"packaged later"})
    plan = uninstall(db, tree, "app", purge=True)
    (purge,) = plan.changes
    assert purge.action == "purge"
    assert set(paths(plan, "delete")) == {"/usr/bin/app", CONF, NEW}
    assert ("remove", CONF) in purge.steps
    assert "/etc" in paths(plan, "rmdir")
    assert "app" not in plan.packages and purge.record is None


def test_uninstall_of_a_package_already_config_remaining_is_a_no_op():
    db, tree = world(app_with_config(), removed=["app"])
    plan = uninstall(db, tree, "app")
    assert plan.empty and ops(plan) == []
    assert ("say", "app is already removed (its config files remain; --purge removes them)") in plan.notes


def test_purge_of_a_package_already_config_remaining_removes_its_config_files_and_record():
    db, tree = world(app_with_config(), removed=["app"])
    assert "/usr/bin/app" not in tree.entries and CONF in tree.entries
    plan = uninstall(db, tree, "app", purge=True)
    (purge,) = plan.changes
    assert (purge.action, purge.version, purge.old_version) == ("purge", "1.0", "")
    assert paths(plan, "delete") == [CONF]
    assert "app" not in plan.packages
    assert purge.pre_script is None and purge.post_script is None


# -- §8.5 scripts -----------------------------------------------------------------------

PRE, POST = b"#!/bin/sh\necho before\n", b"#!/bin/sh\necho after\n"


def test_install_scripts_are_kept_and_planned_to_run():
    db, tree = world()
    app = package("app", scripts={"api-pre-install": PRE, "api-post-install": POST, "README": b"not a script"})
    plan = install(db, tree, app)
    (install_change,) = plan.changes
    assert install_change.pre_script == "api-pre-install"
    assert install_change.post_script == "api-post-install" and install_change.post_content == POST
    kept = SCRIPTS + "/app"
    assert [p for p in paths(plan, "mkdir") if p.startswith(SCRIPTS)] == [kept]
    assert sorted(p for p in paths(plan, "put") if p.startswith(kept + "/")) == \
        [kept + "/api-post-install", kept + "/api-pre-install"]
    assert written_bytes(plan, kept + "/api-pre-install") == PRE
    assert written_bytes(plan, kept + "/api-post-install") == POST
    assert kept + "/README" not in touched_paths(plan)


def test_uninstall_runs_the_kept_uninstall_scripts_and_removes_them():
    app = package("app", scripts={"api-pre-uninstall": PRE, "api-post-uninstall": POST})
    db, tree = world(app)
    assert SCRIPTS + "/app/api-pre-uninstall" in tree.entries
    plan = uninstall(db, tree, "app")
    (removal,) = plan.changes
    assert removal.pre_script == "api-pre-uninstall"
    assert removal.post_script == "api-post-uninstall" and removal.post_content == POST
    assert {SCRIPTS + "/app/api-pre-uninstall", SCRIPTS + "/app/api-post-uninstall"} <= set(paths(plan, "delete"))
    assert SCRIPTS + "/app" in paths(plan, "rmdir")


def test_an_upgrade_drops_the_kept_scripts_the_new_version_lacks():
    db, tree = world(package("app", "1.0", scripts={"api-pre-install": PRE, "api-pre-uninstall": PRE}))
    plan = install(db, tree, package("app", "2.0", scripts={"api-pre-install": POST}))
    assert paths(plan, "delete") == [SCRIPTS + "/app/api-pre-uninstall"]
    assert written_bytes(plan, SCRIPTS + "/app/api-pre-install") == POST


# -- plans as values --------------------------------------------------------------------

def rich_world():
    """An upgrade with a bit of everything: new, replaced, unchanged, removed files, a
    modified config file, new directories, kept scripts; and a dependency installed."""
    old = package("app", "1.0", {"/usr/bin/app": b"v1", "/usr/lib/app/old": b"old", "/usr/lib/app/same": b"s",
                                 CONF: b"packaged 1"}, config=[CONF], scripts={"api-post-install": POST})
    new = package("app", "2.0", {"/usr/bin/app": b"v2", "/usr/lib/app/same": b"s", "/opt/app/new/x": b"x",
                                 CONF: b"packaged 2"}, config=[CONF], depends={"lib": ">=1"},
                  scripts={"api-pre-install": PRE})
    db, tree = world(old, package("other"), disk={CONF: b"edited"})
    return db, tree, [new, package("lib", "1.0", {"/usr/lib/liblib.so": b"so"})]


def normalized(plan) -> list:
    """The plan's operations with the reserved staging names (which carry each plan's
    transaction id) replaced by one placeholder."""
    return [[("<staged>" if isinstance(part, str) and pm.STAGING_PREFIX in part else part) for part in op]
            for op in ops(plan)]


def test_a_plan_is_deterministic_apart_from_reserved_names():
    db, tree, packages = rich_world()
    first, second = install(db, tree, *packages), install(db, tree, *packages)
    assert first.txid != second.txid
    assert normalized(first) == normalized(second)
    assert {op[0] for op in ops(first)} >= {"put", "keep", "delete", "newdir", "put-in"}
    assert [(c.name, c.action, c.steps) for c in first.changes] == [(c.name, c.action, c.steps)
                                                                    for c in second.changes]
    assert first.notes == second.notes

    def records(plan):
        return {name: {k: v for k, v in r.items() if k not in ("files", "time")}
                for name, r in plan.packages.items()}
    assert records(first) == records(second)
    removal_1, removal_2 = uninstall(db, tree, "app", purge=True), uninstall(db, tree, "app", purge=True)
    assert normalized(removal_1) == normalized(removal_2) and removal_1.packages == removal_2.packages


def test_computing_a_plan_changes_neither_the_database_nor_the_tree():
    db, tree, packages = rich_world()

    def state():
        return (copy.deepcopy(db.packages),
                {name: {p: e.packed(p) for p, e in sorted(db.files(name).items())} for name in sorted(db.packages)},
                dict(tree.entries))
    before = state()
    install(db, tree, *packages)
    install(db, tree, packages[0], force_overwrite=True, allow_same_version=True, no_deps=True)
    uninstall(db, tree, "app", purge=True)
    uninstall(db, tree, "other")
    with pytest.raises(pm.Refused):
        install(db, tree, package("other", "0.5"))
    assert state() == before
    assert db.packages["app"]["files"] == "app.abc"


# -- symbolic links where a directory is needed ---------------------------------------

def test_a_symlink_where_a_directory_is_needed_is_a_conflict_naming_its_owner():
    links = package("links", files={"/opt/data": link("store"), "/opt/store/keep": b"kept"})
    db, tree = world(links)
    message = refused(install, db, tree, package("app", files={"/opt/data/file": b"x"}))
    assert "app needs a directory at /opt/data" in message
    assert "symbolic link owned by links" in message


def test_a_symlink_leaving_the_root_where_a_directory_is_needed_is_refused_as_unsafe():
    db, tree = world(disk={"/opt/data": link("../../../elsewhere")})
    with pytest.raises(pm.UnsafePath, match="/opt/data"):
        install(db, tree, package("app", files={"/opt/data/file": b"x"}))


# -- install reasons and architectures ----------------------------------------------------

def test_marking_an_installed_package_explicit_keeps_the_file_list_an_overwrite_changed():
    tools = package("tools", files={"/usr/bin/tool": b"theirs", "/usr/bin/other": b"x"})
    db, tree = world(tools, reasons={"tools": pm.REASON_DEPENDENCY})
    app = package("app", files={"/usr/bin/tool": b"mine"})
    with sealed_filesystem():
        plan = pm.plan_install(db, tree, [app], {"app": pm.REASON_EXPLICIT}, pm.Options(force_overwrite=True),
                               relabel={"tools": pm.REASON_EXPLICIT})
    assert plan.relabel == {"tools": pm.REASON_EXPLICIT}
    record = plan.packages["tools"]
    assert record["reason"] == pm.REASON_EXPLICIT
    assert record["files"] != "tools.abc" and "tools.abc" in plan.obsolete_lists
    assert set(file_list(plan, "tools")) == set(db.files("tools")) - {"/usr/bin/tool"}


def test_a_package_for_another_architecture_is_refused_unless_any_is_allowed():
    db, tree = world()
    arm = package("app", architecture="aarch64")
    with sealed_filesystem():
        with pytest.raises(pm.Refused, match="is for architecture aarch64, but this root is x86_64"):
            pm.plan_install(db, tree, [arm], {}, pm.Options(), architecture="x86_64")
        plan = pm.plan_install(db, tree, [arm], {}, pm.Options(force_architecture=True), architecture=None)
    assert [(c.name, c.action) for c in plan.changes] == [("app", "install")]
