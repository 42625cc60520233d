"""SPEC §8.1–8.3: versions, dependencies, file conflicts and shared directories."""

import os
import stat

import pytest

from conftest import File, Dir, Link, exists, read, payload, run_pm


# -- §8.1 same version, downgrade, upgrade ----------------------------------------------

def test_installing_the_same_version_again_is_a_no_op(pm, build, root):
    pm("install", build("foo", "1.0", {"/usr/bin/foo": "one"}))
    (root / "usr/bin/foo").write_text("changed by hand")
    result = pm("install", build("foo", "1.0", {"/usr/bin/foo": "one"}))
    assert "already installed" in result.err
    assert read(root, "/usr/bin/foo") == "changed by hand"


def test_allow_same_version_reinstalls_the_installed_version(pm, build, root):
    pm("install", build("foo", "1.0", {"/usr/bin/foo": "one"}))
    (root / "usr/bin/foo").write_text("changed by hand")
    pm("install", "--allow-same-version", build("foo", "1.0", {"/usr/bin/foo": "one"}))
    assert read(root, "/usr/bin/foo") == "one"
    pm("verify")


def test_partial_versions_are_the_same_version(pm, build):
    pm("install", build("foo", "1.0", {"/a": "x"}))
    result = pm("install", build("foo", "1.0.0", {"/a": "x"}))
    assert "already installed" in result.err


def test_a_lower_version_is_refused_as_a_downgrade(pm, build, root):
    pm("install", build("foo", "2.0", {"/a": "two"}))
    result = pm("install", build("foo", "1.5", {"/a": "one"}), expect=1)
    assert "downgrade" in result.err
    assert read(root, "/a") == "two"
    assert pm("list-installed").out == "foo (2.0)\n"


def test_allow_same_version_permits_a_downgrade(pm, build, root):
    pm("install", build("foo", "2.0", {"/a": "two"}))
    pm("install", "--allow-same-version", build("foo", "1.5", {"/a": "one"}))
    assert read(root, "/a") == "one"
    assert pm("list-installed").out == "foo (1.5)\n"


def test_a_higher_version_is_an_upgrade_that_replaces_files_and_removes_dropped_ones(pm, build, root):
    pm("install", build("foo", "1.0", {"/usr/bin/foo": "v1", "/usr/share/foo/old": "old",
                                       "/usr/share/foo/kept": "same"}))
    result = pm("install", build("foo", "1.1", {"/usr/bin/foo": "v2", "/usr/share/foo/kept": "same",
                                                "/usr/share/foo/new": "new"}))
    assert "upgraded foo 1.0 -> 1.1" in result.out
    assert read(root, "/usr/bin/foo") == "v2"
    assert not exists(root, "/usr/share/foo/old")
    assert read(root, "/usr/share/foo/new") == "new"
    assert pm("files", "foo").out.split() == ["/usr", "/usr/bin", "/usr/bin/foo", "/usr/share",
                                              "/usr/share/foo", "/usr/share/foo/kept", "/usr/share/foo/new"]
    pm("verify")


def test_an_upgrade_removes_directories_the_new_version_no_longer_has(pm, build, root):
    pm("install", build("foo", "1.0", {"/opt/foo/plugins/a": "a", "/opt/foo/bin": "b"}))
    pm("install", build("foo", "2.0", {"/opt/foo/bin": "b"}))
    assert not exists(root, "/opt/foo/plugins")
    assert exists(root, "/opt/foo/bin")


def test_unversioned_oppm_packages_are_always_reinstallable(pm, build, root):
    pm("install", build("legacy", "oppm", {"/a": "one"}))
    result = pm("install", build("legacy", "oppm", {"/a": "two"}))
    assert "reinstalled legacy oppm" in result.out
    assert read(root, "/a") == "two"


# -- §8.2 dependencies -----------------------------------------------------------------

def test_a_missing_dependency_is_refused_and_nothing_changes(pm, build, root):
    result = pm("install", build("app", "1.0", {"/app": "x"}, deps={"lib": ">=1.0"}), expect=1)
    assert "app needs lib >=1.0, which is not installed" in result.err
    assert payload(root) == {}


def test_a_dependency_already_installed_satisfies(pm, build):
    pm("install", build("lib", "1.2", {"/lib/x": "x"}))
    pm("install", build("app", "1.0", {"/app": "x"}, deps={"lib": ">=1.0"}))
    assert pm("list-installed").out == "app (1.0)\nlib (1.2)\n"


def test_an_installed_dependency_of_the_wrong_version_is_refused(pm, build):
    pm("install", build("lib", "0.9", {"/lib/x": "x"}))
    result = pm("install", build("app", "1.0", {"/app": "x"}, deps={"lib": ">=1.0"}), expect=1)
    assert "app needs lib >=1.0, but lib is 0.9" in result.err


def test_a_dependency_in_the_same_command_satisfies_and_is_installed_first(pm, build, root, tmp_path):
    log = tmp_path / "order.log"
    script = "#!/bin/sh\necho $PM_PACKAGE >> %s\n" % log
    app = build("app", "1.0", {"/app": "x"}, deps={"lib": "^1"}, scripts={"api-post-install": script})
    lib = build("lib", "1.4", {"/lib/x": "x"}, scripts={"api-post-install": script})
    pm("install", app, lib)
    assert log.read_text().split() == ["lib", "app"]


def test_no_deps_installs_without_checking_dependencies(pm, build):
    pm("install", "--no-deps", build("app", "1.0", {"/app": "x"}, deps={"lib": "1.0"}))
    assert pm("list-installed").out == "app (1.0)\n"


def test_an_upgrade_that_breaks_an_installed_dependent_is_refused(pm, build):
    pm("install", build("lib", "1.0", {"/lib/x": "x"}))
    pm("install", build("app", "1.0", {"/app": "x"}, deps={"lib": "<2"}))
    result = pm("install", build("lib", "2.0", {"/lib/x": "y"}), expect=1)
    assert "app needs lib <2, but lib is 2.0" in result.err


def test_provides_satisfies_an_unversioned_dependency(pm, build):
    pm("install", build("busybox", "1.36", {"/bin/busybox": "x"}, provides=["sh"]))
    pm("install", build("app", "1.0", {"/app": "x"}, deps={"sh": "*"}))


def test_declared_conflicts_are_refused(pm, build):
    pm("install", build("ntp", "4.2", {"/usr/sbin/ntpd": "x"}))
    result = pm("install", build("chrony", "4.0", {"/usr/sbin/chronyd": "x"}, conflicts={"ntp": "*"}),
                expect=1)
    assert "chrony conflicts with ntp 4.2" in result.err


def test_uninstall_refuses_while_an_installed_package_depends_on_it(pm, build, root):
    pm("install", build("lib", "1.0", {"/lib/x": "x"}), build("app", "1.0", {"/app": "x"}, deps={"lib": "1"}))
    result = pm("uninstall", "lib", expect=1)
    assert "lib is needed by app" in result.err
    assert exists(root, "/lib/x")


def test_uninstall_recursive_removes_the_dependents_too(pm, build, root):
    pm("install", build("lib", "1.0", {"/lib/x": "x"}), build("app", "1.0", {"/app": "x"}, deps={"lib": "1"}),
       build("tool", "1.0", {"/tool": "x"}, deps={"app": "*"}))
    result = pm("uninstall", "--recursive", "lib")
    assert result.out.splitlines() == ["removed tool 1.0", "removed app 1.0", "removed lib 1.0"]
    assert payload(root) == {}


def test_uninstalling_what_is_not_installed_is_a_no_op(pm):
    result = pm("uninstall", "ghost")
    assert "ghost is not installed" in result.err


# -- §8.3 file conflicts and shared directories -----------------------------------------

def test_a_path_owned_by_another_package_is_refused_with_the_list_of_paths(pm, build, root):
    pm("install", build("one", "1.0", {"/usr/bin/tool": "one", "/usr/bin/other": "one"}))
    result = pm("install", build("two", "1.0", {"/usr/bin/tool": "two", "/usr/bin/other": "two",
                                                "/usr/bin/two": "two"}), expect=1)
    assert "/usr/bin/other (owned by one)" in result.err
    assert "/usr/bin/tool (owned by one)" in result.err
    assert read(root, "/usr/bin/tool") == "one"
    assert not exists(root, "/usr/bin/two")


def test_a_path_present_on_disk_and_owned_by_nobody_is_refused(pm, build, root):
    (root / "etc").mkdir()
    (root / "etc/motd").write_text("local")
    result = pm("install", build("motd", "1.0", {"/etc/motd": "packaged"}), expect=1)
    assert "/etc/motd (exists on disk, owned by no package)" in result.err
    assert read(root, "/etc/motd") == "local"


def test_force_overwrite_replaces_and_takes_ownership(pm, build, root):
    pm("install", build("one", "1.0", {"/usr/bin/tool": "one", "/usr/bin/one": "one"}))
    pm("install", "--force-overwrite", build("two", "1.0", {"/usr/bin/tool": "two"}))
    assert read(root, "/usr/bin/tool") == "two"
    assert pm("owner", "/usr/bin/tool").out == "/usr/bin/tool is owned by two\n"
    pm("uninstall", "one")
    assert read(root, "/usr/bin/tool") == "two"
    pm("verify")


def test_a_file_can_move_between_packages_upgraded_in_one_command(pm, build, root):
    pm("install", build("core", "1.0", {"/bin/tool": "core", "/bin/core": "c"}))
    pm("install", build("core", "2.0", {"/bin/core": "c"}), build("tools", "1.0", {"/bin/tool": "tools"}))
    assert pm("owner", "/bin/tool").out == "/bin/tool is owned by tools\n"
    assert read(root, "/bin/tool") == "tools"


def test_directories_are_shared_and_removed_only_when_empty_and_unowned(pm, build, root):
    pm("install", build("a", "1.0", {"/usr/share/common/a": "a"}), build("b", "1.0", {"/usr/share/common/b": "b"}))
    pm("uninstall", "a")
    assert exists(root, "/usr/share/common/b")
    (root / "usr/share/common/local").write_text("mine")
    pm("uninstall", "b")
    assert exists(root, "/usr/share/common/local"), "a directory that is not empty stays"
    (root / "usr/share/common/local").unlink()
    pm("install", build("c", "1.0", {"/usr/share/common/c": "c"}))
    pm("uninstall", "c")
    assert not exists(root, "/usr")


def test_a_directory_owned_by_another_package_stays_even_when_empty(pm, build, root):
    pm("install", build("a", "1.0", {"/srv/data": Dir(), "/srv/a": "a"}))
    pm("install", build("b", "1.0", {"/srv/data": Dir(), "/srv/data/b": "b"}))
    pm("uninstall", "b")
    assert exists(root, "/srv/data")


def test_symlinks_are_installed_verified_and_removed(pm, build, root):
    pm("install", build("busybox", "1.0", {"/bin/busybox": File("x", 0o755), "/bin/sh": Link("busybox")}))
    assert (root / "bin/sh").is_symlink() and (root / "bin/sh").resolve().name == "busybox"
    pm("verify")
    pm("uninstall", "busybox")
    assert payload(root) == {}


def test_file_modes_are_kept(pm, build, root):
    pm("install", build("foo", "1.0", {"/usr/bin/foo": File("#!/bin/sh\n", 0o750), "/etc/secret": File("s", 0o600)}))
    assert (root / "usr/bin/foo").stat().st_mode & 0o7777 == 0o750
    assert (root / "etc/secret").stat().st_mode & 0o7777 == 0o600


def test_gzip_and_zstd_packages_install_like_plain_ones(pm, build, root):
    pm("install", build("gz", "1.0", {"/gz": "g"}, compress="gz"), build("zst", "1.0", {"/zst": "z"}, compress="zst"))
    assert read(root, "/gz") == "g" and read(root, "/zst") == "z"


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002, 0o000])
def test_each_file_gets_exactly_the_mode_of_the_package_whatever_the_umask(build, root, umask):
    modes = {"/usr/bin/tool": 0o755, "/etc/secret": 0o600, "/usr/share/doc": 0o644,
             "/usr/share/shared": 0o664, "/usr/bin/su-like": 0o4755}
    package = build("modes", "1.0", {path: File("x", mode) for path, mode in modes.items()})
    old = os.umask(umask)
    try:
        result = run_pm(root, "install", "--allow-setuid", package)
    finally:
        os.umask(old)
    assert result.code == 0, result
    assert {path: stat.S_IMODE(os.lstat(str(root) + path).st_mode) for path in modes} == modes
