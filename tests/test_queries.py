"""list-installed, info, files, owner, and the --json document (SPEC §7)."""

from conftest import run_pm


def test_list_installed_prints_name_and_version_sorted(pm, build):
    pm("install", build("zeta", "2.0", {"/z": "z"}), build("alpha", "1.0-rc.1", {"/a": "a"}))
    assert pm("list-installed").out == "alpha (1.0-rc.1)\nzeta (2.0)\n"


def test_list_installed_on_an_empty_root_prints_nothing(pm, root):
    assert pm("list-installed").out == ""
    assert pm("--json", "list-installed").json == {"packages": [], "warnings": []}


def test_files_lists_owned_paths_with_details_in_json(pm, build):
    pm("install", build("foo", "1.0", {"/usr/bin/foo": "hello"}))
    rows = pm("--json", "files", "foo").json["files"]
    foo = [r for r in rows if r["path"] == "/usr/bin/foo"][0]
    assert foo["type"] == "file" and foo["size"] == 5 and foo["mode"] == "0644"
    assert foo["sha256"] == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"


def test_owner_names_the_package_and_fails_for_unowned_paths(pm, build, root):
    pm("install", build("foo", "1.0", {"/usr/bin/foo": "x"}))
    assert pm("owner", "/usr/bin/foo").out == "/usr/bin/foo is owned by foo\n"
    assert pm("owner", str(root / "usr/bin/foo")).out == "/usr/bin/foo is owned by foo\n"
    assert pm("owner", "/usr/bin/nothing", expect=1).out == "/usr/bin/nothing is not owned by any package\n"


def test_info_and_files_of_a_package_that_is_not_installed_fail(pm):
    assert "not installed" in pm("info", "ghost", expect=1).err
    assert "not installed" in pm("files", "ghost", expect=1).err


def test_global_options_may_follow_the_command(build, root):
    package = build("foo", "1.0", {"/a": "x"})
    assert run_pm(None, "install", package, "--root", root).code == 0
    assert run_pm(None, "list-installed", "--root", root, "--json").json["packages"][0]["name"] == "foo"


def test_pm_root_environment_variable_chooses_the_root(build, root):
    package = build("foo", "1.0", {"/a": "x"})
    assert run_pm(None, "install", package, env={"PM_ROOT": str(root)}).code == 0
    assert (root / "a").exists()


def test_usage_errors_exit_2_with_one_line(root):
    result = run_pm(root, "install")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1
    result = run_pm(root, "frobnicate")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1


def test_json_errors_are_a_json_document(root):
    result = run_pm(root, "--json", "files", "ghost")
    assert result.code == 1 and result.json == {"error": "ghost is not installed", "exit_code": 1}


def test_version(root):
    result = run_pm(None, "--version")
    assert result.code == 0 and result.out.startswith("pm ")


def test_settings_files_are_key_value_lines_with_comments(root):
    import pm as pm_module
    (root / "etc/pm").mkdir(parents=True)
    (root / "etc/pm/pm.conf").write_text("# settings\n\noda = sqlite:///x\ncheck_vulnerabilities=always\n")
    settings = pm_module.read_settings(pm_module.Root(str(root)))
    assert settings == {"oda": "sqlite:///x", "check_vulnerabilities": "always"}
    (root / "etc/pm/pm.conf").write_text("oda\n")
    import pytest
    with pytest.raises(pm_module.InvalidInput, match="line 1"):
        pm_module.read_settings(pm_module.Root(str(root)))


def test_a_bare_name_is_a_package_name_even_when_a_file_of_that_name_exists(build, root, tmp_path):
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    (workdir / "hello").write_text("not a package")
    result = run_pm(root, "install", "hello", cwd=workdir)
    assert result.code == 1 and "hello" in result.err and "not a package" not in result.err
    assert run_pm(root, "info", "hello", cwd=workdir).code == 1


def test_a_defect_in_pm_is_still_one_line_for_people(root, monkeypatch, capsys):
    import pm as pm_module

    def broken(session, args):
        raise RuntimeError("something pm did not expect")
    monkeypatch.setattr(pm_module, "cmd_list_installed", broken)
    monkeypatch.delenv("PM_DEBUG", raising=False)
    assert pm_module.main(["--root", str(root), "list-installed"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: RuntimeError: something pm did not expect" in err
