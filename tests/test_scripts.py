"""SPEC §8.5: package scripts — their environment, a failing pre-script aborting with
nothing changed, a failing post-script recorded, reported and retried by pm recover."""

import json

from conftest import exists, snapshot, run_pm

ENV_DUMP = """#!/bin/sh
{ echo "script=$(basename "$0")"; echo "cwd=$(pwd)"; env | grep '^PM_' | sort; } >> %s
"""


def parse_dump(path):
    runs, current = [], None
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "script":
            current = {}
            runs.append(current)
        current[key] = value
    return runs


def test_scripts_run_in_the_root_with_the_pm_environment(pm, build, root, tmp_path):
    dump = tmp_path / "env"
    scripts = {name: ENV_DUMP % dump for name in ("api-pre-install", "api-post-install")}
    pm("install", build("foo", "1.0", {"/a": "1"}, scripts=scripts))
    pm("install", build("foo", "1.1", {"/a": "2"}, scripts=scripts))
    runs = parse_dump(dump)
    assert [r["script"] for r in runs][:2] != []
    first, upgrade = runs[1], runs[3]
    assert first["cwd"] == str(root)
    assert first["PM_ROOT"] == str(root) and first["PM_PACKAGE"] == "foo" and first["PM_VERSION"] == "1.0"
    assert first["PM_OLD_VERSION"] == "" and first["PM_ACTION"] == "install"
    assert upgrade["PM_VERSION"] == "1.1" and upgrade["PM_OLD_VERSION"] == "1.0" and upgrade["PM_ACTION"] == "upgrade"


def test_uninstall_and_purge_run_the_uninstall_scripts(pm, build, root, tmp_path):
    dump = tmp_path / "env"
    scripts = {name: ENV_DUMP % dump for name in ("api-pre-uninstall", "api-post-uninstall")}
    pm("install", build("foo", "1.0", {"/a": "1", "/etc/foo": "c"}, config=["/etc/foo"], scripts=scripts))
    assert exists(root, "/var/lib/pm/scripts/foo/api-post-uninstall"), "scripts are kept for later"
    pm("uninstall", "foo")
    runs = parse_dump(dump)
    assert [(r["script"], r["PM_ACTION"], r["PM_VERSION"]) for r in runs] == [
        ("api-pre-uninstall", "uninstall", "1.0"), ("api-post-uninstall", "uninstall", "1.0")]
    assert not exists(root, "/var/lib/pm/scripts/foo")


def test_a_failing_pre_install_script_aborts_with_nothing_changed(pm, build, root):
    pm("install", build("base", "1.0", {"/base": "b"}))
    before = snapshot(root)
    result = pm("install", build("foo", "1.0", {"/a": "1"}, scripts={"api-pre-install": "#!/bin/sh\nexit 3\n"}),
                expect=1)
    assert "api-pre-install of foo failed (exit 3)" in result.err
    assert snapshot(root) == before


def test_a_failing_pre_uninstall_script_aborts_with_nothing_changed(pm, build, root):
    pm("install", build("foo", "1.0", {"/a": "1"}, scripts={"api-pre-uninstall": "exit 1"}))
    before = snapshot(root)
    pm("uninstall", "foo", expect=1)
    assert snapshot(root) == before


def test_a_failing_post_install_script_is_recorded_reported_and_retried_by_recover(pm, build, root, tmp_path):
    flag = tmp_path / "ready"
    script = "#!/bin/sh\ntest -e %s\n" % flag
    result = pm("install", build("foo", "1.0", {"/a": "1"}, scripts={"api-post-install": script}), expect=1)
    assert "api-post-install of foo failed (exit 1)" in result.err
    assert pm("list-installed").out == "foo (1.0)\n", "the package is installed all the same"
    assert "pm recover runs it again" in pm("list-installed").err
    assert "api-post-install of foo failed" in pm("recover", expect=1).err
    flag.write_text("")
    pm("recover")
    assert "nothing to recover" in pm("recover").err


def test_no_scripts_skips_every_script(pm, build, root, tmp_path):
    marker = tmp_path / "ran"
    script = "#!/bin/sh\ntouch %s\n" % marker
    pm("install", "--no-scripts", build("foo", "1.0", {"/a": "1"}, scripts={"api-pre-install": script,
                                                                             "api-post-install": script}))
    pm("uninstall", "--no-scripts", "foo")
    assert not marker.exists()


def test_a_script_without_interpreter_line_runs_with_sh(pm, build, root, tmp_path):
    marker = tmp_path / "ran"
    pm("install", build("foo", "1.0", {"/a": "1"}, scripts={"api-post-install": "echo $PM_PACKAGE > %s\n" % marker}))
    assert marker.read_text() == "foo\n"


def test_script_output_does_not_spoil_the_json_document(pm, build, root):
    result = pm("--json", "install", build("foo", "1.0", {"/a": "1"}, scripts={"api-post-install": "echo noisy"}))
    assert result.json["changes"][0]["scripts"] == ["api-post-install"]
    assert "noisy" in result.err


def test_a_post_uninstall_script_survives_until_it_has_run(pm, build, root, tmp_path):
    flag = tmp_path / "ready"
    pm("install", build("foo", "1.0", {"/a": "1"}, scripts={"api-post-uninstall": "test -e %s" % flag}))
    pm("uninstall", "foo", expect=1)
    assert pm("list-installed", "--include-removed").out == ""
    flag.write_text("")
    pm("recover")
