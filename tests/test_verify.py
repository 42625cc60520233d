"""SPEC §9: verify compares every owned file with the database: missing, changed
content, changed mode; exit 5 on damage; config files are modified, not damaged."""

import os

from conftest import File, Link


def installed(pm, build):
    pm("install", build("foo", "1.0", {"/usr/bin/foo": File("x", 0o755), "/usr/bin/f": Link("foo"),
                                       "/etc/foo.conf": "c", "/usr/share/foo/data": "d"}, config=["/etc/foo.conf"]))


def test_verify_passes_on_an_intact_root(pm, build):
    installed(pm, build)
    assert "no damage" in pm("verify").err


def test_a_missing_file_is_damage(pm, build, root):
    installed(pm, build)
    (root / "usr/share/foo/data").unlink()
    result = pm("verify", expect=5)
    assert result.out == "foo: /usr/share/foo/data: missing\n"


def test_changed_content_is_damage(pm, build, root):
    installed(pm, build)
    (root / "usr/share/foo/data").write_text("D")
    assert "foo: /usr/share/foo/data: content changed" in pm("verify", expect=5).out


def test_a_changed_mode_is_damage(pm, build, root):
    installed(pm, build)
    os.chmod(root / "usr/bin/foo", 0o700)
    assert "mode changed from 0755 to 0700" in pm("verify", expect=5).out


def test_a_changed_symlink_is_damage(pm, build, root):
    installed(pm, build)
    (root / "usr/bin/f").unlink()
    (root / "usr/bin/f").symlink_to("/bin/sh")
    assert "symlink target changed" in pm("verify", expect=5).out


def test_a_modified_config_file_is_reported_but_is_not_damage(pm, build, root):
    installed(pm, build)
    (root / "etc/foo.conf").write_text("mine")
    result = pm("--json", "verify")
    assert result.json["ok"] is True
    assert result.json["modified_config"] == [{"package": "foo", "path": "/etc/foo.conf"}]


def test_verify_names_only_checks_those_packages(pm, build, root):
    installed(pm, build)
    pm("install", build("bar", "1.0", {"/bar": "b"}))
    (root / "usr/share/foo/data").unlink()
    pm("verify", "bar")
    pm("verify", "foo", expect=5)
    pm("verify", "ghost", expect=1)
