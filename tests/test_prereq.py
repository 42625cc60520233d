"""SPEC §14 prerequisites: prereq.cfg blocks for this root's distribution, installed,
removed and run the way OSCAR's install_prereq did, through pm's own transactions."""

import os
import shutil

import pytest

from conftest import exists, read


@pytest.fixture
def system(root):
    """``system(distro, version, arch)`` describes the root: etc/os-release and the
    architecture in pm.conf."""
    def describe(distro="debian", version="12", arch="x86_64"):
        (root / "etc/pm").mkdir(parents=True, exist_ok=True)
        (root / "etc/os-release").write_text('PRETTY_NAME="Test"\nID=%s\nVERSION_ID="%s"\n' % (distro, version))
        (root / "etc/pm/pm.conf").write_text("architecture = %s\n" % arch)
    describe()
    return describe


@pytest.fixture
def prereq(tmp_path):
    """``prereq(name, config, packages)`` makes a prerequisite directory holding a
    prereq.cfg and package files ({relative file name: built package})."""
    def make(name, config, packages=None):
        directory = tmp_path / "prereqs" / name
        directory.mkdir(parents=True)
        (directory / "prereq.cfg").write_text(config)
        for filename, package in (packages or {}).items():
            (directory / filename).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(package, directory / filename)
        return directory
    return make


def installed(pm):
    return pm("list-installed").out.splitlines()


# -- which block applies -------------------------------------------------------------------

def test_a_glob_header_matches_the_roots_distribution(pm, build, prereq, system):
    path = prereq("base", "[deb*:1*:*]\nfoo.tar\n", {"foo.tar": build("foo", "1.0", {"/foo": "x"})})
    pm("prereq", path)
    assert installed(pm) == ["foo (1.0)"]


def test_alternatives_match_any_of_their_values(pm, build, prereq, system):
    config = "[fedora|debian:11|12:aarch64|x86_64]\nfoo.tar\n"
    path = prereq("base", config, {"foo.tar": build("foo", "1.0", {"/foo": "x"})})
    pm("prereq", path)
    assert installed(pm) == ["foo (1.0)"]


def test_only_the_first_matching_block_counts(pm, build, prereq, system):
    config = ("[fedora:*:*]\nfedora.tar\n"
              "[debian:12:x86_64]\nfirst.tar\n"
              "[debian:*:*]\nsecond.tar\n"
              "[*:*:*]\ndefault.tar\n")
    packages = {name + ".tar": build(name, "1.0", {"/" + name: name}) for name in
                ("fedora", "first", "second", "default")}
    pm("prereq", prereq("base", config, packages))
    assert installed(pm) == ["first (1.0)"]


def test_the_catch_all_block_applies_when_nothing_more_specific_does(pm, build, prereq, system):
    system("alpine", "3.19", "x86_64")
    config = "[debian:*:*]\ndebian.tar\n# default\n[*:*:*]\ndefault.tar\n"
    packages = {n + ".tar": build(n, "1.0", {"/" + n: n}) for n in ("debian", "default")}
    pm("prereq", prereq("base", config, packages))
    assert installed(pm) == ["default (1.0)"]


def test_no_matching_block_changes_nothing_and_says_so(pm, build, prereq, system, root):
    system("debian", "12", "riscv64")
    path = prereq("base", "[debian:12:x86_64|aarch64]\nfoo.tar\n", {"foo.tar": build("foo", "1.0", {"/foo": "x"})})
    result = pm("prereq", path)
    assert "no block of prereq.cfg matches debian:12:riscv64" in result.err
    assert installed(pm) == []


def test_the_version_must_match_the_whole_value(pm, build, prereq, system):
    system("debian", "12", "x86_64")
    path = prereq("base", "[debian:1:*]\nfoo.tar\n", {"foo.tar": build("foo", "1.0", {"/foo": "x"})})
    pm("prereq", path)
    assert installed(pm) == []


def test_without_pm_conf_the_architecture_is_this_machines(pm, build, prereq, system, root):
    os.unlink(root / "etc/pm/pm.conf")
    config = "[debian:12:%s]\nfoo.tar\n" % os.uname().machine
    pm("prereq", prereq("base", config, {"foo.tar": build("foo", "1.0", {"/foo": "x"})}))
    assert installed(pm) == ["foo (1.0)"]


def test_os_release_is_also_read_from_usr_lib(pm, build, prereq, system, root):
    os.unlink(root / "etc/os-release")
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/os-release").write_text("ID='rocky'\nVERSION_ID=9.3\n")
    config = "[debian:*:*]\nwrong.tar\n[rocky:9*:*]\nright.tar\n"
    packages = {n + ".tar": build(n, "1.0", {"/" + n: n}) for n in ("wrong", "right")}
    pm("prereq", prereq("base", config, packages))
    assert installed(pm) == ["right (1.0)"]


def test_a_root_without_os_release_matches_only_wildcards(pm, build, prereq, system, root):
    os.unlink(root / "etc/os-release")
    config = "[debian:*:*]\nwrong.tar\n[*:*:*]\nright.tar\n"
    packages = {n + ".tar": build(n, "1.0", {"/" + n: n}) for n in ("wrong", "right")}
    pm("prereq", prereq("base", config, packages))
    assert installed(pm) == ["right (1.0)"]


# -- dumb mode: the files named, no resolution --------------------------------------------

def test_dumb_installs_the_named_files_in_one_transaction_with_their_dependencies(pm, build, prereq, system, root):
    config = "[*:*:*]\napp-2.0.tar\nlib-1.0.tar\n"
    packages = {"app-2.0.tar": build("app", "2.0", {"/usr/bin/app": "a"}, deps={"lib": ">=1.0"}),
                "lib-1.0.tar": build("lib", "1.0", {"/usr/lib/lib.so": "l"})}
    result = pm("prereq", "--dumb", prereq("base", config, packages))
    assert result.out == "installed lib 1.0\ninstalled app 2.0\n"
    assert read(root, "/usr/bin/app") == "a"
    pm("verify")


def test_dumb_refuses_a_dependency_its_files_do_not_provide(pm, build, prereq, system, root):
    config = "[*:*:*]\napp.tar\n"
    packages = {"app.tar": build("app", "2.0", {"/usr/bin/app": "a"}, deps={"lib": ">=1.0"})}
    result = pm("prereq", "--dumb", prereq("base", config, packages), expect=1)
    assert "app needs lib >=1.0, which is not installed" in result.err
    assert installed(pm) == []


def test_package_files_are_found_below_the_prerequisite_directory(pm, build, prereq, system):
    config = "[*:*:*]\nfoo-1.0.tar\nsub/bar.tar\n"
    packages = {"distro/debian-12-x86_64/foo-1.0.tar": build("foo", "1.0", {"/foo": "x"}),
                "sub/bar.tar": build("bar", "1.0", {"/bar": "x"})}
    pm("prereq", prereq("base", config, packages))
    assert installed(pm) == ["bar (1.0)", "foo (1.0)"]


def test_a_missing_package_file_is_refused_before_anything_changes(pm, build, prereq, system, root):
    config = "[*:*:*]\n!old\nfoo.tar\nmissing.tar\n:bash: touch \"$PM_ROOT/ran\"\n"
    pm("install", build("old", "1.0", {"/old": "o"}))
    result = pm("prereq", prereq("base", config, {"foo.tar": build("foo", "1.0", {"/foo": "x"})}), expect=1)
    assert "line 4: no package file missing.tar" in result.err
    assert installed(pm) == ["old (1.0)"] and not exists(root, "/ran")


def test_a_package_name_in_dumb_mode_must_already_be_installed(pm, build, prereq, system, root):
    config = "[*:*:*]\nbase-tools>=1.2\nfoo.tar\n"
    path = prereq("base", config, {"foo.tar": build("foo", "1.0", {"/foo": "x"})})
    result = pm("prereq", "--dumb", path, expect=1)
    assert "names base-tools >=1.2, which --dumb cannot install" in result.err and "--smart" in result.err
    assert installed(pm) == []
    pm("install", build("base-tools", "1.1", {"/bt": "1"}))
    pm("prereq", "--dumb", path, expect=1)
    pm("install", build("base-tools", "1.2", {"/bt": "2"}))
    pm("prereq", "--dumb", path)
    assert installed(pm) == ["base-tools (1.2)", "foo (1.0)"]


def test_running_the_same_prerequisites_again_changes_nothing(pm, build, prereq, system, root):
    path = prereq("base", "[*:*:*]\nfoo.tar\n", {"foo.tar": build("foo", "1.0", {"/foo": "x"})})
    pm("prereq", path)
    result = pm("prereq", path)
    assert result.out == "" and "foo 1.0 is already installed" in result.err


# -- smart mode: names resolved from the root's sources --------------------------------------

@pytest.fixture
def offered(repository, build, root):
    """A repository in the root's sources.list offering app 1.0 and 2.0 (needing lib), lib 1.0
    and 1.5, and tools 1.0."""
    made = repository("offered")
    made.add(build("app", "1.0", {"/usr/bin/app": "1"}, deps={"lib": ">=1.0"}),
             build("app", "2.0", {"/usr/bin/app": "2"}, deps={"lib": ">=1.5"}),
             build("lib", "1.0", {"/usr/lib/lib.so": "1.0"}), build("lib", "1.5", {"/usr/lib/lib.so": "1.5"}),
             build("tools", "1.0", {"/usr/bin/tools": "t"}))
    return made.use(root)


def test_smart_installs_names_from_the_sources_with_their_dependencies(pm, prereq, system, offered):
    pm("prereq", "--smart", prereq("base", "[debian:*:*]\napp\ntools=1.0\n"))
    assert installed(pm) == ["app (2.0)", "lib (1.5)", "tools (1.0)"]
    reasons = {p["name"]: p["reason"] for p in pm("--json", "list-installed").json["packages"]}
    assert reasons == {"app": "explicit", "lib": "dependency", "tools": "explicit"}


def test_smart_honours_a_constraint_on_a_name(pm, prereq, system, offered):
    pm("prereq", "--smart", prereq("base", "[*:*:*]\napp<2\n"))
    assert installed(pm) == ["app (1.0)", "lib (1.5)"]


def test_smart_mixes_package_files_and_names_in_one_transaction(pm, build, prereq, system, offered):
    config = "[*:*:*]\nplugin.tar\napp\n"
    path = prereq("base", config, {"plugin.tar": build("plugin", "0.1", {"/usr/lib/plugin": "p"}, deps={"app": "^2"})})
    result = pm("--json", "prereq", "--smart", path)
    assert sorted(c["package"] for c in result.json["prerequisites"][0]["changes"]) == ["app", "lib", "plugin"]
    assert installed(pm) == ["app (2.0)", "lib (1.5)", "plugin (0.1)"]


def test_dumb_does_not_resolve_even_when_sources_are_configured(pm, build, prereq, system, offered):
    path = prereq("base", "[*:*:*]\nmine.tar\n", {"mine.tar": build("mine", "1.0", {"/m": "m"}, deps={"lib": "*"})})
    assert "mine needs lib, which is not installed" in pm("prereq", "--dumb", path, expect=1).err
    assert "names app, which --dumb cannot install" in pm("prereq", prereq("names", "[*:*:*]\napp\n"),
                                                        expect=1).err
    assert installed(pm) == []


def test_smart_removes_then_installs_the_replacement(pm, build, prereq, system, offered, root):
    pm("install", build("old-tools", "1.0", {"/usr/bin/tools": "old"}))
    pm("prereq", "--smart", prereq("base", "[*:*:*]\n!old-tools\ntools\n"))
    assert installed(pm) == ["tools (1.0)"] and read(root, "/usr/bin/tools") == "t"


def test_smart_refuses_a_name_no_source_offers(pm, prereq, system, offered):
    result = pm("prereq", "--smart", prereq("base", "[*:*:*]\nnowhere\n"), expect=1)
    assert "no source offers a package named nowhere" in result.err


def test_the_install_time_vulnerability_check_covers_dependencies_from_sources(pm, prereq, system, offered, root):
    (root / "etc/pm/vulns").write_text("lib <2 memory-corruption https://example.org/lib\n")
    with open(root / "etc/pm/pm.conf", "a") as f:
        f.write("vulnerabilities = /etc/pm/vulns\ncheck_vulnerabilities = always\n")
    result = pm("prereq", "--smart", prereq("base", "[*:*:*]\napp\n"), expect=1)
    assert "lib 1.5 has a memory-corruption vulnerability" in result.err
    assert installed(pm) == []


def test_smart_prerequisites_can_be_removed_again(pm, prereq, system, offered):
    path = prereq("base", "[*:*:*]\napp\n")
    pm("prereq", "--smart", path)
    assert pm("prereq", "--status", path).out.splitlines()[1].split() == ["installed", "app", "(2.0)"]
    pm("prereq", "--remove", path)
    assert installed(pm) == ["lib (1.5)"], "the dependency stays, as after pm uninstall (pm autoremove takes it)"


# -- removals and commands -----------------------------------------------------------------

def test_bang_lines_remove_packages_before_the_installs(pm, build, prereq, system, root):
    pm("install", build("tftp-server", "1.0", {"/usr/sbin/in.tftpd": "old"}))
    config = "[*:*:*]\n!tftp-server\n!never-installed\ntftp-hpa.tar\n"
    packages = {"tftp-hpa.tar": build("tftp-hpa", "5.2", {"/usr/sbin/in.tftpd": "new"})}
    result = pm("prereq", prereq("base", config, packages))
    assert result.out == "removed tftp-server 1.0\ninstalled tftp-hpa 5.2\n"
    assert read(root, "/usr/sbin/in.tftpd") == "new"
    assert installed(pm) == ["tftp-hpa (5.2)"]


def test_command_lines_run_after_the_installs_in_the_directory_with_pm_root(pm, build, prereq, system, root):
    config = ("[*:*:*]\n"
              ":bash: [[ -e $PM_ROOT/usr/bin/foo ]] && echo bash \"$PWD\" >> \"$PM_ROOT/log\"\n"
              "foo.tar\n"
              "sh: echo sh $PM_ROOT >> \"$PM_ROOT/log\"\n")
    path = prereq("base", config, {"foo.tar": build("foo", "1.0", {"/usr/bin/foo": "x"})})
    report = pm("--json", "prereq", path).json
    assert read(root, "/log") == "bash %s\nsh %s\n" % (path, root)
    assert report["prerequisites"][0]["commands"] == [
        {"command": ':bash: [[ -e $PM_ROOT/usr/bin/foo ]] && echo bash "$PWD" >> "$PM_ROOT/log"',
         "line": 2, "ok": True},
        {"command": 'sh: echo sh $PM_ROOT >> "$PM_ROOT/log"', "line": 4, "ok": True}]


def test_a_failing_command_stops_with_its_line_and_keeps_the_installs(pm, build, prereq, system, root):
    config = "[*:*:*]\nfoo.tar\nsh: exit 7\nsh: touch \"$PM_ROOT/after\"\n"
    result = pm("prereq", prereq("base", config, {"foo.tar": build("foo", "1.0", {"/foo": "x"})}), expect=1)
    assert "prereq.cfg line 3: 'exit 7' failed (exit 7)" in result.err
    assert installed(pm) == ["foo (1.0)"] and not exists(root, "/after")


def test_command_output_does_not_spoil_the_json_document(pm, build, prereq, system):
    path = prereq("base", "[*:*:*]\nsh: echo noise\n")
    result = pm("--json", "prereq", path)
    assert result.json["system"] == {"distro": "debian", "version": "12", "arch": "x86_64"}
    assert "noise" in result.err


# -- --status and --remove ------------------------------------------------------------------

def test_status_reports_each_line_and_exits_1_until_everything_is_done(pm, build, prereq, system, root):
    pm("install", build("tftp-server", "1.0", {"/tftpd": "x"}))
    config = "[*:*:*]\n!tftp-server\nfoo.tar\nlib\nsh: true\n"
    path = prereq("base", config, {"foo.tar": build("foo", "1.0", {"/foo": "x"})})
    result = pm("--json", "prereq", "--status", path, expect=1)
    entries = result.json["prerequisites"][0]["entries"]
    assert [(e["line"], e["kind"], e["text"], e["state"], e["version"]) for e in entries] == [
        (2, "remove", "!tftp-server", "present", "1.0"),
        (3, "install", "foo.tar", "missing", None),
        (4, "install", "lib", "missing", None),
        (5, "command", "sh: true", "command", None)]
    assert result.json["done"] is False and result.json["prerequisites"][0]["block"] == "[*:*:*]"
    assert installed(pm) == ["tftp-server (1.0)"], "--status changes nothing"
    pm("install", build("lib", "3.0", {"/lib": "l"}))
    pm("prereq", path)
    result = pm("prereq", "--status", path, expect=0)
    assert result.out == ("%s [*:*:*]\n  absent    !tftp-server\n  installed foo.tar (1.0)\n"
                          "  installed lib (3.0)\n  command   sh: true\n" % path)


def test_status_calls_an_older_installed_version_older(pm, build, prereq, system):
    pm("install", build("foo", "0.9", {"/foo": "x"}))
    path = prereq("base", "[*:*:*]\nfoo.tar\n", {"foo.tar": build("foo", "1.0", {"/foo": "x"})})
    assert "  older     foo.tar (0.9)" in pm("prereq", "--status", path, expect=1).out


def test_remove_uninstalls_what_the_block_installs_and_says_what_it_cannot_undo(pm, build, prereq, system, root):
    pm("install", build("unrelated", "1.0", {"/u": "u"}))
    config = "[*:*:*]\n!tftp-server\nfoo.tar\nbar.tar\nsh: true\n"
    packages = {"foo.tar": build("foo", "1.0", {"/foo": "x"}), "bar.tar": build("bar", "1.0", {"/bar": "x"})}
    path = prereq("base", config, packages)
    pm("prereq", path)
    result = pm("prereq", "--remove", path)
    assert sorted(result.out.splitlines()) == ["removed bar 1.0", "removed foo 1.0"]
    assert "line 2: !tftp-server is not undone" in result.err and "line 5: sh: true is not undone" in result.err
    assert installed(pm) == ["unrelated (1.0)"]
    assert not exists(root, "/foo")


def test_remove_refuses_while_another_package_needs_a_prerequisite(pm, build, prereq, system):
    path = prereq("base", "[*:*:*]\nlib.tar\n", {"lib.tar": build("lib", "1.0", {"/lib": "l"})})
    pm("prereq", path)
    pm("install", build("app", "1.0", {"/app": "a"}, deps={"lib": "1.0"}))
    assert "lib is needed by app" in pm("prereq", "--remove", path, expect=1).err


# -- order files ---------------------------------------------------------------------------

def test_an_order_file_processes_directories_in_order_and_remove_reverses_it(pm, build, prereq, system, root, tmp_path):
    base = prereq("base", "[*:*:*]\nbase.tar\nsh: echo base >> \"$PM_ROOT/log\"\n",
                  {"base.tar": build("base", "1.0", {"/base": "b"})})
    prereq("tools", "[*:*:*]\ntools.tar\nsh: echo tools >> \"$PM_ROOT/log\"\n",
           {"tools.tar": build("tools", "1.0", {"/tools": "t"}, deps={"base": "1.0"})})
    order = tmp_path / "prereqs" / "prereqs.order"
    order.write_text("# bootstrap first\nbase\n\ntools\n")
    result = pm("prereq", order)
    assert result.out == "installed base 1.0\ninstalled tools 1.0\n"
    assert read(root, "/log") == "base\ntools\n"
    report = pm("--json", "prereq", "--status", order).json
    assert [p["path"] for p in report["prerequisites"]] == [str(base), str(tmp_path / "prereqs/tools")]
    assert report["done"] is True
    assert pm("prereq", "--remove", order).out == "removed tools 1.0\nremoved base 1.0\n"


def test_an_order_file_naming_a_directory_without_prereq_cfg_is_refused(pm, prereq, system, tmp_path):
    prereq("base", "[*:*:*]\n")
    (tmp_path / "prereqs/empty").mkdir()
    order = tmp_path / "prereqs" / "order"
    order.write_text("base\nempty\n")
    assert "order line 2" in pm("prereq", order, expect=1).err


# -- malformed files -------------------------------------------------------------------------

@pytest.mark.parametrize("config, problem", [
    ("foo.tar\n[*:*:*]\n", "line 1: 'foo.tar' comes before any [distro:version:architecture] header"),
    ("[*:*]\nfoo.tar\n", "line 1: a block header is [distro:version:architecture]"),
    ("[*:*:*\nfoo.tar\n", "line 1: a block header is [distro:version:architecture]"),
    ("[*:*:*]\nfoo.tar bar.tar\n", "line 2: one package name or package file per line"),
    ("[*:*:*]\n!bad/name\n", "line 2: bad package name 'bad/name'"),
    ("[*:*:*]\n:bash:\n", "line 2: an empty command"),
])
def test_a_malformed_prereq_cfg_is_invalid_input_naming_the_line(pm, prereq, system, config, problem):
    result = pm("prereq", prereq("base", config), expect=3)
    assert problem in result.err


def test_a_malformed_block_that_does_not_match_is_still_an_error(pm, build, prereq, system):
    config = "[debian:*:*]\nfoo.tar\n[fedora:*:*]\nbar baz\n"
    pm("prereq", prereq("base", config, {"foo.tar": build("foo", "1.0", {"/foo": "x"})}), expect=3)
    assert installed(pm) == []


def test_a_missing_path_is_refused(pm, system, tmp_path):
    assert "no such prerequisite directory or order file" in pm("prereq", tmp_path / "nowhere", expect=1).err
