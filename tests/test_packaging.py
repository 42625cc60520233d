"""The distribution: a wheel installed with plain ``pip install .`` (not editable) gives
the whole set of commands — pm, pm-repo-packager, pm-site-status, pm-make-medium — and the
same tools still run as scripts from a checkout."""

import json
import os
import subprocess
import sys
import venv

import pytest
from pathlib import Path

from conftest import REPO

CONSOLE_SCRIPTS = ("pm", "pm-repo-packager", "pm-site-status", "pm-make-medium")
CHECKOUT_SCRIPTS = ("pm.py", "tools/repoPackager.py", "tools/siteStatus.py", "installer/make_medium.py")


@pytest.mark.parametrize("script", CHECKOUT_SCRIPTS)
def test_each_tool_runs_as_a_script_from_a_checkout(script):
    proc = subprocess.run([sys.executable, str(REPO / script), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout


def test_pyproject_declares_every_console_script():
    text = (REPO / "pyproject.toml").read_text()
    assert 'script-files = ["bin/pm"]' in text          # pm itself: started isolated
    for name in CONSOLE_SCRIPTS[1:]:
        assert "\n%s = " % name in text


def test_the_installed_pm_starts_python_isolated_without_reading_pth_files(tmp_path):
    """bin/pm (what pip installs as ``pm``) runs the Python beside it with -I -S and finds
    pm and its dependencies in the site-packages without site's start; a .pth file there
    is not read (it would cost as much as Python's own start), and PYTHON* variables do
    not reach it."""
    import shutil
    venv_dir = tmp_path / "venv"
    venv.create(venv_dir, with_pip=False, system_site_packages=False)
    python = venv_dir / "bin" / "python3"
    site_packages = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                                   capture_output=True, text=True, check=True).stdout.strip()
    shutil.copy(REPO / "pm.py", site_packages)
    for module in ("msgpack", "semver"):         # pm's dependencies, as pip would put them there
        spec = __import__(module)
        source = os.path.dirname(spec.__file__) if spec.__file__.endswith("__init__.py") else spec.__file__
        target = os.path.join(site_packages, os.path.basename(source))
        (shutil.copytree if os.path.isdir(source) else shutil.copy)(source, target)
    (Path(site_packages) / "zz_trap.pth").write_text("import sys; sys.stderr.write('pth read\\n')\n")
    script = venv_dir / "bin" / "pm"
    shutil.copy(REPO / "bin/pm", script)
    script.chmod(0o755)
    env = dict(os.environ, PYTHONPATH="/nonexistent-pythonpath")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, env=env,
                            cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("pm ") and "pth read" not in result.stderr
    root = tmp_path / "root"
    root.mkdir()
    result = subprocess.run([str(script), "--root", str(root), "--json", "list-installed"], capture_output=True,
                            text=True, env=env, cwd=str(tmp_path))
    assert result.returncode == 0 and json.loads(result.stdout)["packages"] == [], result.stderr


def test_a_non_editable_pip_install_gives_a_working_set_of_commands(tmp_path):
    """A copy of the checkout (so that nothing can be found beside it) is installed into
    a fresh virtual environment; every console script then works from that environment
    alone, run from an unrelated directory: the packager builds a repository, pm installs
    from it, the site report reads the root, and the medium builder builds a medium."""
    source = tmp_path / "source"
    subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], check=True, capture_output=True)
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z"],
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if not (REPO / name).is_file():
            continue
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes((REPO / name).read_bytes())
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bindir = env_dir / "bin"
    proc = subprocess.run([str(bindir / "python"), "-m", "pip", "install", "-q", str(source)],
                          capture_output=True, text=True, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert not list((env_dir / "lib").glob("python*/site-packages/__editable__*"))
    for name in CONSOLE_SCRIPTS:
        assert (bindir / name).is_file(), name
    import shutil
    shutil.rmtree(source)                        # the installed set must stand alone
    work = tmp_path / "work"
    work.mkdir()
    clean_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PM_ROOT")}
    clean_env["SOURCE_DATE_EPOCH"] = "0"

    def run(*command):
        result = subprocess.run([str(bindir / command[0])] + list(command[1:]), capture_output=True,
                                text=True, cwd=str(work), env=clean_env)
        assert result.returncode == 0, (command, result.stdout, result.stderr)
        return result

    for name in CONSOLE_SCRIPTS:
        assert "usage:" in run(name, "--help").stdout
    run("pm-repo-packager", "-d", str(work / "repo"), str(REPO / "examples"))
    (work / "root").mkdir()
    run("pm", "--root", str(work / "root"), "--repository", str(work / "repo"), "install", "hello")
    listed = json.loads(run("pm", "--root", str(work / "root"), "--json", "list-installed").stdout)
    assert "hello" in [row["name"] for row in listed["packages"]]
    (work / "sites").write_text("node1 local:%s\n" % (work / "root"))
    report = run("pm-site-status", "--format", "json", str(work / "sites")).stdout
    assert "hello" in report
    run("pm-make-medium", "--out", str(work / "medium"), "--repo", str(work / "repo"), "--include", "hello")
    assert (work / "medium" / "install.py").is_file()
    assert (work / "medium" / "pm.py").is_file()
