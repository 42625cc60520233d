"""Principles: pm runs on the standard library, msgpack (also its pure-Python fallback) and
semver; zstandard only for .tar.zst, with a one-line error naming it when missing."""

import subprocess
import sys

from conftest import run_pm


def test_pm_works_with_pure_python_msgpack(build, root):
    env = {"MSGPACK_PUREPYTHON": "1"}
    probe = subprocess.run([sys.executable, "-c", "import msgpack; print(msgpack.Packer.__module__)"],
                           capture_output=True, text=True, env=dict(__import__("os").environ, **env))
    assert probe.stdout.strip() == "msgpack.fallback"
    package = build("foo", "1.0", {"/usr/bin/foo": "x", "/etc/foo": "c"}, config=["/etc/foo"])
    assert run_pm(root, "install", package, env=env).code == 0
    assert run_pm(root, "list-installed", env=env).out == "foo (1.0)\n"
    assert run_pm(root, "verify", env=env).code == 0
    assert run_pm(root, "uninstall", "--purge", "foo", env=env).code == 0


def without_zstandard(tmp_path):
    """An environment in which `import zstandard` fails as if it were not installed."""
    blocker = tmp_path / "no-zstandard" / "zstandard"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('No module named zstandard')\n")
    return {"PYTHONPATH": str(blocker.parent)}


def test_without_zstandard_plain_and_gzip_packages_still_install(build, root, tmp_path):
    env = without_zstandard(tmp_path)
    assert run_pm(root, "install", build("plain", "1.0", {"/p": "p"}), build("gz", "1.0", {"/g": "g"}, compress="gz"),
                  env=env).code == 0


def test_without_zstandard_a_zst_package_gives_a_one_line_error_naming_it(build, root, tmp_path):
    result = run_pm(root, "install", build("z", "1.0", {"/z": "z"}, compress="zst"), env=without_zstandard(tmp_path))
    assert result.code != 0
    assert len(result.err.strip().splitlines()) == 1
    assert "zstandard" in result.err and "pip install zstandard" in result.err
    assert not (root / "z").exists()
