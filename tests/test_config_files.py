"""SPEC §8.4: config files by three sha256s — packaged before (A), on disk (D),
packaged now (N) — and what uninstall and --purge do with them."""

import pytest

from conftest import exists, read

CONF = "/etc/app/app.conf"


def app(build, version, conf, **kw):
    return build("app", version, {CONF: conf, "/usr/bin/app": version}, config=[CONF], **kw)


@pytest.fixture
def installed(pm, build, root):
    """app 1.0 installed with the config file 'A'."""
    pm("install", app(build, "1.0", "A"))
    return root


def edit(root, text):
    (root / CONF.lstrip("/")).write_text(text)


def test_row_A_eq_D_eq_N_writes_N(pm, build, installed):
    pm("install", app(build, "2.0", "A"))
    assert read(installed, CONF) == "A"
    assert not exists(installed, CONF + ".pm-new")


def test_row_D_absent_writes_N(pm, build, installed):
    (installed / CONF.lstrip("/")).unlink()
    pm("install", app(build, "2.0", "N"))
    assert read(installed, CONF) == "N"


def test_row_A_eq_D_ne_N_writes_N(pm, build, installed):
    pm("install", app(build, "2.0", "N"))
    assert read(installed, CONF) == "N"
    assert not exists(installed, CONF + ".pm-new")
    pm("verify")


def test_row_D_ne_A_and_N_eq_A_keeps_D(pm, build, installed):
    edit(installed, "D")
    pm("install", app(build, "2.0", "A"))
    assert read(installed, CONF) == "D"
    assert not exists(installed, CONF + ".pm-new")


def test_row_D_ne_A_and_N_eq_D_keeps_D(pm, build, installed):
    edit(installed, "N")
    pm("install", app(build, "2.0", "N"))
    assert read(installed, CONF) == "N"
    assert not exists(installed, CONF + ".pm-new")


def test_row_all_three_different_keeps_D_writes_N_as_pm_new_and_says_so(pm, build, installed):
    edit(installed, "D")
    result = pm("install", app(build, "2.0", "N"))
    assert read(installed, CONF) == "D"
    assert read(installed, CONF + ".pm-new") == "N"
    assert CONF + ".pm-new" in result.err


def test_row_fresh_install_over_an_existing_unowned_file_keeps_D_and_writes_pm_new(pm, build, root):
    (root / "etc/app").mkdir(parents=True)
    edit(root, "local")
    pm("install", app(build, "1.0", "N"))
    assert read(root, CONF) == "local"
    assert read(root, CONF + ".pm-new") == "N"


def test_the_packaged_sha256_is_what_counts_as_before_after_a_pm_new(pm, build, installed):
    edit(installed, "D")
    pm("install", app(build, "2.0", "N"))           # keeps D, writes N as .pm-new
    pm("install", app(build, "3.0", "N"))           # A is now N: D≠A, N=A -> keep D
    assert read(installed, CONF) == "D"


def test_a_modified_config_file_is_reported_by_verify_but_is_not_damage(pm, installed):
    edit(installed, "D")
    result = pm("verify")
    assert "modified config file" in result.out


def test_a_config_directory_covers_every_file_below_it(pm, build, root):
    files = {"/etc/svc/a.conf": "a", "/etc/svc/sub/b.conf": "b", "/usr/bin/svc": "x"}
    pm("install", build("svc", "1.0", files, config=["/etc/svc/"]))
    (root / "etc/svc/sub/b.conf").write_text("mine")
    pm("install", build("svc", "2.0", dict(files, **{"/etc/svc/sub/b.conf": "b2"}), config=["/etc/svc/"]))
    assert read(root, "/etc/svc/sub/b.conf") == "mine"
    assert read(root, "/etc/svc/sub/b.conf.pm-new") == "b2"


def test_uninstall_keeps_config_files_and_the_record(pm, installed):
    pm("uninstall", "app")
    assert read(installed, CONF) == "A"
    assert not exists(installed, "/usr/bin/app")
    assert pm("list-installed").out == ""
    assert pm("list-installed", "--include-removed").out == "app (1.0) [config remaining]\n"


def test_list_installed_include_removed_shows_both_states(pm, build, installed):
    pm("install", build("other", "2.1", {"/other": "x"}))
    pm("uninstall", "app")
    assert pm("list-installed", "--include-removed").out == \
        "app (1.0) [config remaining]\nother (2.1) [installed]\n"


def test_purge_removes_config_files_and_the_record(pm, installed):
    edit(installed, "D")
    pm("uninstall", "--purge", "app")
    assert not exists(installed, "/etc")
    assert pm("list-installed", "--include-removed").out == ""


def test_purge_later_removes_what_uninstall_left(pm, installed):
    pm("uninstall", "app")
    result = pm("uninstall", "app")
    assert "already removed" in result.err
    pm("uninstall", "--purge", "app")
    assert not exists(installed, CONF)
    assert pm("list-installed", "--include-removed").out == ""


def test_purge_removes_a_pm_new_file_too(pm, build, installed):
    edit(installed, "D")
    pm("install", app(build, "2.0", "N"))
    pm("uninstall", "--purge", "app")
    assert not exists(installed, CONF + ".pm-new")


def test_reinstall_after_uninstall_applies_the_table_to_the_remaining_config(pm, build, installed):
    edit(installed, "D")
    pm("uninstall", "app")
    pm("install", app(build, "1.0", "A"))           # D≠A, N=A -> keep D
    assert read(installed, CONF) == "D"
    assert pm("list-installed", "--include-removed").out == "app (1.0) [installed]\n"


def test_a_config_file_dropped_by_an_upgrade_is_kept_when_modified(pm, build, installed):
    edit(installed, "D")
    pm("install", build("app", "2.0", {"/usr/bin/app": "2"}))
    assert read(installed, CONF) == "D"


def test_a_config_file_dropped_by_an_upgrade_is_removed_when_unmodified(pm, build, installed):
    pm("install", build("app", "2.0", {"/usr/bin/app": "2"}))
    assert not exists(installed, CONF)


@pytest.mark.parametrize("A,D,N,expected", [
    ("a", "a", "a", "write"), ("a", None, "n", "write"), ("a", "a", "n", "write"),
    ("a", "d", "a", "keep"), ("a", "d", "d", "keep"), ("a", "d", "n", "keep-and-write-new"),
    (None, "d", "n", "keep-and-write-new"), (None, "n", "n", "keep"), (None, None, "n", "write"),
])
def test_the_decision_table_itself(A, D, N, expected):
    import pm as pm_module
    assert pm_module.decide_config_file(A, D, N) == expected
