"""Scenarios pm was compared on with its peers (pacman's test suite, apt, apk), adapted
where SPEC differs on purpose: provides protect like names, the newest satisfying set,
path-type changes within one transaction, a config file that stops being one, the
architecture, essential packages, and what a new user meets first (issue 13).

Where a scenario must not depend on whether a source is configured, it runs both ways:
``sources`` lists an unrelated repository in the root, or nothing."""

import json
import os
import platform
import subprocess
import sys

import pytest

from conftest import PM, Dir, File, Link, exists, payload, read, run_pm


@pytest.fixture(params=["without a source", "with a source"])
def sources(request, root, build, repository):
    """Configure an unrelated repository in the root (or none): the outcome must be the
    same either way."""
    if request.param == "with a source":
        repository().add(build("unrelated", "1.0", {"/unrelated": "u"})).use(root)
    return request.param


# -- 1. dependencies met through provides are protected like dependencies by name --------

def test_uninstalling_the_only_provider_of_a_needed_name_is_refused(pm, build, root, sources):
    pm("install", build("busybox", "1.36", {"/bin/busybox": "x"}, provides=["sh"]))
    pm("install", build("app", "1.0", {"/app": "x"}, deps={"sh": "*"}))
    result = pm("uninstall", "busybox", expect=1)
    assert "sh (provided by busybox) is needed by app" in result.err
    assert exists(root, "/bin/busybox")
    assert "busybox (1.36)" in pm("list-installed").out


def test_uninstalling_one_of_two_providers_is_allowed(pm, build, root, sources):
    pm("install", build("busybox", "1.36", {"/bin/busybox": "x"}, provides=["sh"]),
       build("dash", "0.5", {"/bin/dash": "x"}, provides=["sh"]))
    pm("install", build("app", "1.0", {"/app": "x"}, deps={"sh": "*"}))
    pm("uninstall", "busybox")
    assert pm("list-installed").out == "app (1.0)\ndash (0.5)\n"


def test_uninstall_recursive_on_the_provider_takes_the_dependent_along(pm, build, root, sources):
    pm("install", build("busybox", "1.36", {"/bin/busybox": "x"}, provides=["sh"]))
    pm("install", build("app", "1.0", {"/app": "x"}, deps={"sh": "*"}))
    result = pm("uninstall", "--recursive", "busybox")
    assert result.out.splitlines() == ["removed app 1.0", "removed busybox 1.36"]
    assert payload(root).keys() <= {"etc", "etc/pm", "etc/pm/sources.list"}


def test_an_upgrade_of_the_provider_that_drops_a_needed_name_is_refused(pm, build, root, sources):
    pm("install", build("busybox", "1.36", {"/bin/busybox": "old"}, provides=["sh"]))
    pm("install", build("app", "1.0", {"/app": "x"}, deps={"sh": "*"}))
    result = pm("install", build("busybox", "1.37", {"/bin/busybox": "new"}), expect=1)
    assert "app" in result.err and "needs sh" in result.err
    assert read(root, "/bin/busybox") == "old"
    assert "busybox (1.36)" in pm("list-installed").out


def test_an_upgrade_of_the_provider_that_keeps_the_name_is_allowed(pm, build, root, sources):
    pm("install", build("busybox", "1.36", {"/bin/busybox": "old"}, provides=["sh"]))
    pm("install", build("app", "1.0", {"/app": "x"}, deps={"sh": "*"}))
    pm("install", build("busybox", "1.37", {"/bin/busybox": "new"}, provides=["sh"]))
    assert read(root, "/bin/busybox") == "new"


# -- 2. conflicts declared against a provided name ---------------------------------------

def test_a_conflict_with_a_name_an_installed_package_provides_is_refused(pm, build, root, sources):
    pm("install", build("busybox", "1.36", {"/bin/busybox": "x"}, provides=["sh"]))
    result = pm("install", build("dash", "0.5", {"/bin/dash": "x"}, conflicts={"sh": "*"}), expect=1)
    assert "conflicts with busybox 1.36" in result.err and "which provides sh" in result.err
    assert not exists(root, "/bin/dash")


def test_a_provider_of_a_name_an_installed_package_conflicts_with_is_refused(pm, build, root, sources):
    pm("install", build("dash", "0.5", {"/bin/dash": "x"}, conflicts={"sh": "*"}))
    result = pm("install", build("busybox", "1.36", {"/bin/busybox": "x"}, provides=["sh"]), expect=1)
    assert "dash 0.5" in result.err and "conflicts with sh, which busybox" in result.err
    assert not exists(root, "/bin/busybox")


def test_a_package_providing_and_conflicting_with_one_name_installs(pm, build, root, sources):
    pm("install", build("qt", "4.5.3", {"/usr/lib/qt": "x"}, provides=["phonon"], conflicts={"phonon": "*"}))
    assert "qt (4.5.3)" in pm("list-installed").out


# -- 3. the newest satisfying set ---------------------------------------------------------

def test_naming_an_installed_provider_upgrades_it_and_brings_the_real_package(pm, build, root, repository):
    """pacman's "phonon/qt issue": -S kdelibs qt gives qt 4.6.1, phonon and kdelibs."""
    pm("install", build("qt", "4.5.3", {"/usr/lib/qt": "4.5.3"}, provides=["phonon"], conflicts={"phonon": "*"}))
    repository().add(build("qt", "4.6.1", {"/usr/lib/qt": "4.6.1"}),
                     build("phonon", "1.0", {"/usr/lib/phonon": "p"}),
                     build("kdelibs", "1.0", {"/usr/lib/kdelibs": "k"}, deps={"phonon": "*"})).use(root)
    result = pm("install", "kdelibs", "qt")
    assert "already installed" not in result.err
    assert pm("list-installed").out == "kdelibs (1.0)\nphonon (1.0)\nqt (4.6.1)\n"
    assert read(root, "/usr/lib/qt") == "4.6.1"
    pm("verify")


# -- 4. path-type changes within one transaction ------------------------------------------

def test_an_upgrade_replaces_its_own_directory_by_a_symlink(pm, build, root):
    pm("install", build("pkg", "1.0", {"/test/file": "f", "/test/sub/deep": "d", "/test2/x": "x"}))
    pm("install", build("pkg", "1.1", {"/test": Link("test2"), "/test2/x": "x"}))
    assert os.readlink(root / "test") == "test2"
    assert read(root, "/test/x") == "x"
    assert pm("files", "pkg").out.split() == ["/test", "/test2", "/test2/x"]
    pm("verify")


def test_an_upgrade_replaces_its_own_directory_by_a_file(pm, build, root):
    pm("install", build("pkg", "1.0", {"/test/file": "f"}))
    pm("install", build("pkg", "1.1", {"/test": "now a file"}))
    assert read(root, "/test") == "now a file"
    pm("verify")


def test_a_directory_holding_what_the_command_does_not_remove_stays_a_conflict(pm, build, root):
    pm("install", build("pkg", "1.0", {"/test/file": "f"}))
    (root / "test/mine").write_text("local")
    result = pm("install", build("pkg", "1.1", {"/test": Link("test2")}), expect=1)
    assert "/test is a directory on disk" in result.err
    assert read(root, "/test/mine") == "local" and read(root, "/test/file") == "f"


def test_a_directory_another_package_shares_stays_a_conflict(pm, build, root):
    pm("install", build("pkg", "1.0", {"/test/file": "f"}), build("other", "1.0", {"/test/": Dir()}))
    result = pm("install", build("pkg", "1.1", {"/test": Link("test2")}), expect=1)
    assert "/test is a directory on disk" in result.err


def test_a_symlink_dropped_by_an_upgrade_in_the_command_makes_way_for_a_directory(pm, build, root):
    """The usr-merge case: pkg1 1.0 has lib -> usr/lib; pkg1 1.1 drops it and pkg2,
    installed in the same command, ships lib/bar."""
    pm("install", build("pkg1", "1.0", {"/lib": Link("usr/lib"), "/usr/lib/foo": "foo"}))
    pm("install", build("pkg1", "1.1", {"/usr/lib/foo": "foo"}), build("pkg2", "1.0", {"/lib/bar": "bar"}))
    assert not (root / "lib").is_symlink()
    assert read(root, "/lib/bar") == "bar" and read(root, "/usr/lib/foo") == "foo"
    assert not exists(root, "/usr/lib/bar")
    assert pm("owner", "/lib/bar").out == "/lib/bar is owned by pkg2\n"
    pm("verify")


# -- 5. a symlink inside the root where a package needs a directory is a conflict ---------

def test_an_unowned_symlink_where_a_directory_is_needed_is_a_conflict(pm, build, root):
    (root / "usr/lib").mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    result = pm("install", build("pkg2", "1.0", {"/lib/bar": "bar"}), expect=1)
    assert "pkg2 needs a directory at /lib, where there is a symbolic link owned by no package" in result.err
    assert os.readlink(root / "lib") == "usr/lib" and not exists(root, "/usr/lib/bar")


def test_an_owned_symlink_where_a_directory_is_needed_is_a_conflict_naming_its_owner(pm, build, root):
    pm("install", build("pkg1", "1.0", {"/lib": Link("usr/lib"), "/usr/lib/foo": "foo"}))
    result = pm("install", build("pkg2", "1.0", {"/lib/bar": "bar"}), expect=1)
    assert "pkg2 needs a directory at /lib, where there is a symbolic link owned by pkg1" in result.err
    assert not exists(root, "/usr/lib/bar")


@pytest.mark.parametrize("target", ["../outside", "/absolute/elsewhere"])
def test_a_symlink_leading_outside_the_root_stays_refused_as_hostile(pm, build, root, target):
    (root / "lib").symlink_to(target)
    result = pm("install", build("pkg2", "1.0", {"/lib/bar": "bar"}), expect=3)
    assert "/lib is a symbolic link in the root" in result.err


# -- 6. an edit of a former config file is kept as .pm-save --------------------------------

def test_an_edit_of_a_former_config_file_is_kept_as_pm_save(pm, build, root):
    pm("install", build("app", "1.0", {"/etc/app.conf": "packaged 1\n"}, config=["/etc/app.conf"]))
    (root / "etc/app.conf").write_text("edited by the user\n")
    result = pm("install", build("app", "1.1", {"/etc/app.conf": "packaged 2\n"}))
    assert read(root, "/etc/app.conf") == "packaged 2\n"
    assert read(root, "/etc/app.conf.pm-save") == "edited by the user\n"
    assert "/etc/app.conf is no longer a config file of app; your modified version is kept as " \
           "/etc/app.conf.pm-save" in result.err
    pm("verify")


def test_an_unedited_former_config_file_is_replaced_without_a_pm_save(pm, build, root):
    pm("install", build("app", "1.0", {"/etc/app.conf": "packaged 1\n"}, config=["/etc/app.conf"]))
    pm("install", build("app", "1.1", {"/etc/app.conf": "packaged 2\n"}))
    assert read(root, "/etc/app.conf") == "packaged 2\n"
    assert not exists(root, "/etc/app.conf.pm-save")


def test_a_dry_run_shows_the_pm_save_it_would_write(pm, build, root):
    pm("install", build("app", "1.0", {"/etc/app.conf": "packaged 1\n"}, config=["/etc/app.conf"]))
    (root / "etc/app.conf").write_text("edited\n")
    result = pm("install", "--dry-run", "-v", build("app", "1.1", {"/etc/app.conf": "packaged 2\n"}))
    assert "  save /etc/app.conf.pm-save" in result.out
    assert not exists(root, "/etc/app.conf.pm-save")


# -- 7. architecture -----------------------------------------------------------------------

def this_machine():
    return platform.machine()


def other_architecture():
    return "riscv64" if this_machine() != "riscv64" else "x86_64"


def test_a_package_for_another_architecture_is_refused(pm, build, root):
    result = pm("install", build("tool", "1.0", {"/tool": "x"}, architecture=other_architecture()), expect=1)
    assert "tool 1.0 is for architecture %s, but this root is %s" % (other_architecture(), this_machine()) \
        in result.err
    assert "--force-architecture" in result.err and not exists(root, "/tool")


def test_force_architecture_installs_a_package_for_another_architecture(pm, build, root):
    pm("install", "--force-architecture", build("tool", "1.0", {"/tool": "x"}, architecture=other_architecture()))
    assert read(root, "/tool") == "x"


@pytest.mark.parametrize("architecture", ["any", None])
def test_an_architecture_independent_package_installs_anywhere(pm, build, root, architecture):
    extra = {"architecture": architecture} if architecture else {}
    pm("install", build("tool", "1.0", {"/tool": "x"}, **extra))


@pytest.mark.parametrize("machine, package", [("x86_64", "amd64"), ("amd64", "x86_64"),
                                              ("aarch64", "arm64"), ("arm64", "aarch64"), ("x86_64", "x86_64")])
def test_the_root_architecture_from_pm_conf_matches_the_other_names_of_it(pm, build, root, machine, package):
    (root / "etc/pm").mkdir(parents=True)
    (root / "etc/pm/pm.conf").write_text("architecture = %s\n" % machine)
    pm("install", build("tool", "1.0", {"/tool": "x"}, architecture=package))


def test_the_root_architecture_from_pm_conf_refuses_this_machines_packages(pm, build, root):
    (root / "etc/pm").mkdir(parents=True)
    (root / "etc/pm/pm.conf").write_text("architecture = %s\n" % other_architecture())
    result = pm("install", build("tool", "1.0", {"/tool": "x"}, architecture=this_machine()), expect=1)
    assert "but this root is %s" % other_architecture() in result.err


def test_the_resolver_skips_candidates_for_another_architecture(pm, build, root, repository):
    repository().add(build("tool", "1.0", {"/tool": "1.0"}),
                     build("tool", "2.0", {"/tool": "2.0"}, architecture=other_architecture())).use(root)
    pm("install", "tool")
    assert read(root, "/tool") == "1.0"


def test_a_name_offered_only_for_another_architecture_says_so(pm, build, root, repository):
    repository().add(build("tool", "2.0", {"/tool": "2.0"}, architecture=other_architecture())).use(root)
    result = pm("install", "tool", expect=1)
    assert "no source offers tool for this root's architecture %s, only for %s" % (
        this_machine(), other_architecture()) in result.err
    pm("install", "--force-architecture", "tool")
    assert read(root, "/tool") == "2.0"


# -- 9. essential packages -----------------------------------------------------------------

def test_uninstalling_an_essential_package_is_refused(pm, build, root):
    pm("install", build("pm", "1.0", {"/usr/bin/pm": "x"}, essential=True))
    result = pm("uninstall", "pm", expect=1)
    assert "pm is essential" in result.err and "--force-essential" in result.err
    assert exists(root, "/usr/bin/pm")


def test_uninstall_recursive_does_not_take_an_essential_package_along(pm, build, root):
    pm("install", build("lib", "1.0", {"/lib/x": "x"}), build("pm", "1.0", {"/usr/bin/pm": "x"},
                                                             deps={"lib": "*"}, essential=True))
    result = pm("uninstall", "--recursive", "lib", expect=1)
    assert "pm is essential" in result.err
    assert exists(root, "/lib/x") and exists(root, "/usr/bin/pm")


def test_force_essential_uninstalls_an_essential_package(pm, build, root):
    pm("install", build("pm", "1.0", {"/usr/bin/pm": "x"}, essential=True))
    pm("uninstall", "--force-essential", "pm")
    assert not exists(root, "/usr/bin/pm")


def test_autoremove_keeps_an_essential_package_and_what_it_needs(pm, build, root, repository):
    repository().add(build("app", "1.0", {"/app": "a"}, deps={"pm": "*"}),
                     build("pm", "1.0", {"/usr/bin/pm": "x"}, deps={"lib": "*"}, essential=True),
                     build("lib", "1.0", {"/lib/x": "x"})).use(root)
    pm("install", "app")
    pm("uninstall", "app")
    pm("autoremove")
    assert pm("list-installed").out == "lib (1.0)\npm (1.0)\n"


def test_essential_must_be_true_or_false(pm, build):
    result = pm("install", build("pm", "1.0", {"/usr/bin/pm": "x"}, essential="yes"), expect=3)
    assert "essential must be true or false" in result.err


# -- 8. an empty root is a usage error -----------------------------------------------------

def run_pm_in(directory, *args, env=None):
    """pm run in ``directory`` without --root (the environment decides)."""
    environment = dict(os.environ, **(env or {}))
    proc = subprocess.run([sys.executable, str(PM)] + list(args), capture_output=True, text=True,
                          cwd=str(directory), env=environment)
    assert "Traceback" not in proc.stderr
    return proc


def test_an_empty_root_option_is_a_usage_error(build, tmp_path):
    package = build("tool", "1.0", {"/tool": "x"})
    before = sorted(os.listdir(tmp_path))
    proc = run_pm_in(tmp_path, "--root", "", "install", package)
    assert proc.returncode == 2
    assert "the root is empty" in proc.stderr
    assert sorted(os.listdir(tmp_path)) == before


def test_an_empty_pm_root_is_a_usage_error(build, tmp_path):
    package = build("tool", "1.0", {"/tool": "x"})
    before = sorted(os.listdir(tmp_path))
    proc = run_pm_in(tmp_path, "install", package, env={"PM_ROOT": ""})
    assert proc.returncode == 2
    assert "the root is empty" in proc.stderr
    assert sorted(os.listdir(tmp_path)) == before


def test_an_explicit_root_wins_over_an_empty_pm_root(build, root, tmp_path):
    proc = run_pm_in(tmp_path, "--root", str(root), "list-installed", env={"PM_ROOT": ""})
    assert proc.returncode == 0, proc.stderr


# -- 11. what a new user meets first -------------------------------------------------------

def test_the_missing_sources_list_is_named_with_the_root(pm, root):
    result = pm("install", "hello", expect=1)
    assert "no sources are configured in %s/etc/pm/sources.list" % root in result.err


@pytest.mark.parametrize("how", ["bare", "path"])
def test_installing_a_directory_says_it_is_a_directory(pm, root, tmp_path, how):
    (tmp_path / "repo").mkdir()
    argument = "repo" if how == "bare" else str(tmp_path / "repo")
    result = run_pm(root, "install", argument, cwd=tmp_path)
    assert result.code == 3, result
    assert "%s is a directory" % argument in result.err or "%s is not a regular file but a directory" % argument \
        in result.err
    assert "no source offers" not in result.err


def test_repo_packager_takes_the_packages_of_a_repository_directory(build, repository, root, pm):
    first = repository("first").add(build("hello", "1.0", {"/hello": "1"}), build("motd", "1.0", {"/motd": "m"}))
    second = repository("second").add(first.path)
    listed = json.loads((second.path / "index.json").read_text())["packages"]
    assert sorted((e["manifest"]["package"], e["manifest"]["version"]) for e in listed) == \
        [("hello", "1.0"), ("motd", "1.0")]
    second.use(root)
    pm("install", "hello")
    assert read(root, "/hello") == "1"


def test_a_repository_directory_with_a_missing_package_file_is_refused(build, repository, tmp_path):
    first = repository("first").add(build("hello", "1.0", {"/hello": "1"}))
    os.unlink(first.file("hello", "1.0"))
    proc = subprocess.run([sys.executable, str(PM.parent / "tools/repoPackager.py"), "-d", str(tmp_path / "out"),
                           str(first.path)], capture_output=True, text=True)
    assert proc.returncode == 1 and "which is missing" in proc.stderr
    assert not (tmp_path / "out" / "index.json").exists()


@pytest.mark.parametrize("wait", ["-5", "-0.5", "nan"])
def test_a_negative_wait_is_a_usage_error(pm, wait):
    result = pm("--wait", wait, "list-installed", expect=2)
    assert "--wait needs a number of seconds of 0 or more" in result.err


@pytest.mark.parametrize("command", ["info", "files", "uninstall", "install"])
def test_an_empty_package_name_is_a_usage_error(pm, command):
    result = pm(command, "", expect=2)
    assert "a package name is needed, not an empty string" in result.err


@pytest.mark.parametrize("command", ["info", "files", "uninstall", "install"])
def test_a_huge_bad_name_is_shortened_in_the_message(pm, command):
    name = "a" * 5000 + "!"
    result = pm(command, name, expect=2)
    assert len(result.err) < 400, result.err
    assert "(5001 characters)" in result.err or "(5000 characters)" in result.err


def test_an_unowned_empty_directory_where_a_package_has_a_file_stays_a_conflict(pm, build, root):
    (root / "test").mkdir()
    result = pm("install", build("pkg", "1.0", {"/test": "a file"}), expect=1)
    assert "/test is a directory on disk" in result.err
    assert (root / "test").is_dir()


def test_a_dropped_config_file_where_another_package_needs_a_directory_is_refused(pm, build, root):
    pm("install", build("pkg1", "1.0", {"/etc/app": "edited later"}, config=["/etc/app"]))
    (root / "etc/app").write_text("my edit\n")
    result = pm("install", build("pkg1", "1.1", {"/usr/bin/app": "x"}), build("pkg2", "1.0", {"/etc/app/conf": "c"}),
                expect=1)
    assert "needs a directory at /etc/app, where there is a file owned by pkg1" in result.err
    assert read(root, "/etc/app") == "my edit\n"
