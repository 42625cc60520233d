"""Issue 14: an upgrade leaves alone what did not change, an uninstall makes one system
call per removed file, and a fresh install puts each new directory in place at once.

A package built by repoPackager records every file's sha256, mode and size in
CONTROL/sums.  On upgrade, a file whose recorded digest is the one installed, and whose
disk content and mode are still those, is neither read from the archive nor rewritten
(the journal says ``keep``).  Removals are unlinked after the commit (``delete``), rolled
forward after a kill, as dpkg removes.  A new directory is staged whole under a reserved
name and renamed into place once, its files made inside it under their own names.  The
kill-at-every-step tests of test_transactions.py cover all three."""

import json
import os

import msgpack
import pytest

from conftest import File, run_pm, snapshot, sums_text


def files(version, count=20, changed=()):
    """``count`` modules, those in ``changed`` with content of ``version``."""
    return {"/usr/lib/app/mod%02d" % i: "module %d version %s\n" % (i, version if i in changed else "1")
            for i in range(count)}


def inode(root, path):
    st = os.lstat(root / path.lstrip("/"))
    return st.st_ino, st.st_mtime_ns


def step_counts(root, *args):
    counts = root.parent / ("counts-%s" % root.name)
    result = run_pm(root, *args, env={"PM_FAULT_COUNT": str(counts)})
    assert result.code == 0, result
    return json.loads(counts.read_text())


def test_an_upgrade_leaves_files_whose_recorded_digest_did_not_change_untouched(pm, build, root):
    pm("install", build("app", "1.0", files("1"), sums=True))
    before = {path: inode(root, path) for path in files("1")}
    pm("install", build("app", "2.0", files("2", changed={0, 1, 2}), sums=True))
    after = {path: inode(root, path) for path in files("1")}
    rewritten = sorted(path for path in before if before[path] != after[path])
    assert rewritten == ["/usr/lib/app/mod00", "/usr/lib/app/mod01", "/usr/lib/app/mod02"]
    assert (root / "usr/lib/app/mod00").read_text() == "module 0 version 2\n"
    assert pm("verify").code == 0


def test_an_upgrade_rewrites_an_unchanged_file_that_was_modified_on_disk(pm, build, root):
    pm("install", build("app", "1.0", files("1"), sums=True))
    (root / "usr/lib/app/mod05").write_text("damaged\n")
    pm("install", build("app", "2.0", files("2", changed={0}), sums=True))
    assert (root / "usr/lib/app/mod05").read_text() == "module 5 version 1\n"
    assert pm("verify").code == 0


def test_an_upgrade_rewrites_an_unchanged_file_whose_mode_changed(pm, build, root):
    pm("install", build("app", "1.0", {"/usr/bin/app": File("same\n", 0o644)}, sums=True))
    ino = inode(root, "/usr/bin/app")
    pm("install", build("app", "2.0", {"/usr/bin/app": File("same\n", 0o755)}, sums=True))
    assert inode(root, "/usr/bin/app") != ino
    assert os.lstat(root / "usr/bin/app").st_mode & 0o777 == 0o755
    assert pm("verify").code == 0


def test_an_upgrade_from_a_package_without_sums_rewrites_every_file(pm, build, root):
    pm("install", build("app", "1.0", files("1")))
    before = {path: inode(root, path) for path in files("1")}
    pm("install", build("app", "2.0", files("2", changed={0}), sums=True))
    # the installed version's digests are known (pm records what it wrote), so even then
    # only the changed file is rewritten; without sums in the new one, all are
    assert [p for p in before if inode(root, p) != before[p]] == ["/usr/lib/app/mod00"]
    before = {path: inode(root, path) for path in files("1")}
    pm("install", build("app", "3.0", files("3", changed={0})))
    assert all(inode(root, p) != before[p] for p in before)
    assert pm("verify").code == 0


def test_unchanged_files_are_neither_written_nor_linked(build, root):
    assert run_pm(root, "install", build("app", "1.0", files("1", count=50), sums=True)).code == 0
    counts = step_counts(root, "install", build("app", "2.0", files("2", count=50, changed={7}), sums=True))
    assert counts.get("write", 0) == 2              # mod07 and the new file list: no other data
    assert counts.get("link", 0) == 1              # only mod07's old version kept until the commit


def test_the_dry_run_and_the_journal_say_which_files_are_kept(pm, build, root, tmp_path):
    pm("install", build("app", "1.0", files("1", count=3), sums=True))
    v2 = build("app", "2.0", files("2", count=3, changed={0}), sums=True)
    shown = pm("-v", "install", "--dry-run", v2).out
    assert "unchanged /usr/lib/app/mod01" in shown and "unchanged /usr/lib/app/mod02" in shown
    assert "replace /usr/lib/app/mod00" in shown
    # killed at its second rename (the first puts the journal in place), before the commit
    killed = run_pm(root, "install", v2, env={"PM_FAULT": "kill:2:rename"})
    assert killed.code != 0
    journal = msgpack.unpackb((root / "var/lib/pm/journal").read_bytes(), raw=False)
    assert ["keep", "/usr/lib/app/mod01"] in journal["ops"] and ["keep", "/usr/lib/app/mod02"] in journal["ops"]
    assert pm("recover").code == 0
    assert (root / "usr/lib/app/mod00").read_text() == "module 0 version 1\n"
    assert pm("verify").code == 0


@pytest.mark.parametrize("sums, why", [
    ("0" * 64 + " 0644 19 /usr/lib/app/mod00\n", "does not match the sha256"),
    ("0" * 64 + " 0755 19 /usr/lib/app/mod00\n", "mode 755"),
    ("0" * 64 + " 0644 5 /usr/lib/app/mod00\n", "and 5 bytes"),
    ("0" * 64 + " 0644 19 /usr/lib/app/nothing\n", "not a file of the package"),
    ("0" * 64 + " 0644 0 /usr/lib/app\n", "not a file of the package"),
    ("zz 0644 19 /usr/lib/app/mod00\n", "is not 'SHA256 MODE SIZE /path'"),
    (("0" * 64 + " 0644 19 /usr/lib/app/mod00\n") * 2, "twice"),
    ("0" * 64 + " 0644 19\n", "is not 'SHA256 MODE SIZE /path'"),
])
def test_a_package_whose_sums_disagree_with_its_files_is_refused_with_nothing_changed(pm, build, root, sums, why):
    pm("install", build("app", "1.0", files("1", count=2), sums=True))
    before = snapshot(root)
    result = pm("install", build("app", "2.0", files("2", count=2, changed={0}), sums=sums), expect=3)
    assert why in result.err and len(result.err.strip().splitlines()) == 1
    assert snapshot(root) == before


def test_an_unchanged_file_is_not_read_from_the_archive_its_sums_line_decides(pm, build, root):
    """mod00's data in the archive is new, but its line claims the installed digest: pm
    keeps the installed file without reading the member (had it read it, the data
    would not match the line and the package would be refused), and the database and
    the disk still agree."""
    pm("install", build("app", "1.0", files("1", count=2), sums=True))
    old = files("1", count=2)
    new = files("2", count=2, changed={0})
    pm("install", build("app", "2.0", new, sums=sums_text(old)))
    assert (root / "usr/lib/app/mod00").read_text() == "module 0 version 1\n"
    assert pm("verify").code == 0


def test_an_uninstall_makes_one_system_call_per_removed_file(build, root):
    assert run_pm(root, "install", build("app", "1.0", files("1", count=200), sums=True)).code == 0
    counts = step_counts(root, "uninstall", "app")
    # each file, then a few of pm's own: the old file list, the journal, debris
    assert 200 <= counts.get("unlink", 0) <= 205, counts
    assert counts.get("rename", 0) <= 2             # the journal and the database, not the files
    assert not (root / "usr/lib/app").exists()


def test_a_kill_after_an_uninstall_commits_is_rolled_forward(pm, build, root):
    pm("install", build("app", "1.0", files("1", count=20), sums=True))
    killed = run_pm(root, "uninstall", "app", env={"PM_FAULT": "kill:3:unlink"})
    assert killed.code != 0
    assert (root / "var/lib/pm/journal").exists()
    recovered = pm("recover")
    assert "finished an interrupted transaction" in recovered.out + recovered.err
    assert not (root / "usr/lib/app").exists()
    assert pm("list-installed").out.strip() == ""
    assert pm("verify").code == 0


def test_a_failing_pre_uninstall_script_still_changes_nothing(pm, build, root):
    pm("install", build("app", "1.0", files("1", count=5), scripts={"api-pre-uninstall": "#!/bin/sh\nexit 1\n"}))
    before = snapshot(root)
    pm("uninstall", "app", expect=1)
    assert snapshot(root) == before


def test_a_fresh_install_puts_each_new_directory_in_place_with_one_rename(build, root, pm):
    tree = {"/opt/app/d%02d/f%02d" % (d, f): "%d %d\n" % (d, f) for d in range(10) for f in range(20)}
    tree["/usr/bin/app"] = File("#!/bin/sh\n", 0o755)
    (root / "usr").mkdir()                       # /usr exists: /usr/bin is new below it
    counts = step_counts(root, "install", build("app", "1.0", tree, sums=True))
    # the journal, the database, and one for each new top directory (/opt, /usr/bin)
    assert counts.get("rename", 0) == 2 + 2, counts
    assert counts.get("write", 0) == len(tree) + 1          # and the file list
    assert not [p for p in os.listdir(root / "opt") + os.listdir(root / "usr") if p.startswith(".~pm.")]
    assert (root / "opt/app/d03/f07").read_text() == "3 7\n"
    assert os.lstat(root / "usr/bin/app").st_mode & 0o777 == 0o755
    assert pm("verify").code == 0


@pytest.mark.parametrize("step", ["kill:5:write", "kill:2:rename", "ENOSPC:40:write", "EIO:3:mkdir"])
def test_a_fresh_install_cut_short_leaves_no_staged_tree_and_nothing_new(build, root, pm, step):
    tree = {"/opt/app/d%02d/f%02d" % (d, f): "%d %d\n" % (d, f) for d in range(5) for f in range(20)}
    (root / "opt").mkdir()
    (root / "opt/keep").write_text("not pm's\n")
    before = snapshot(root)
    result = run_pm(root, "install", build("app", "1.0", tree, sums=True), env={"PM_FAULT": step})
    assert result.code != 0
    pm("recover")
    after = snapshot(root)
    assert not [p for p in after if ".~pm." in p]
    assert {p: v for p, v in after.items() if not p.startswith("var")} == \
        {p: v for p, v in before.items() if not p.startswith("var")}
    assert pm("list-installed").out.strip() == ""
