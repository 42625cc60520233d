"""Issue 14, start-up: the installed launcher starts Python isolated (no site-packages
scan) with pm's own directories on sys.path, and `pm list-installed` neither imports nor
builds argparse, yet reads its command line exactly as argparse does."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pm

REPO = Path(__file__).resolve().parent.parent
LAUNCHER = REPO / "installer" / "launcher.py"


def launcher_root(top, fake_pm):
    """A root laid out as the pm package lays it out, with ``fake_pm`` as pm.py, and a
    ``python3`` on a PATH of its own that runs this interpreter."""
    version = "9.9.9"
    library = top / "usr" / "lib" / "pm" / version
    (library / "site").mkdir(parents=True)
    (library / "pm.py").write_text(fake_pm)
    (library / "site" / "bundled_marker.py").write_text("WHERE = 'site'\n")
    (library / "CONTENTS").write_text("".join(
        "%d %s\n" % ((library / rel).stat().st_size, rel) for rel in ("pm.py", "site/bundled_marker.py")))
    launcher = top / "usr" / "bin" / "pm"
    launcher.parent.mkdir(parents=True)
    launcher.write_text(LAUNCHER.read_text().replace('VERSION = "@PM_VERSION@"', 'VERSION = "%s"' % version))
    launcher.chmod(0o755)
    bindir = top / "bin"
    bindir.mkdir()
    (bindir / "python3").write_text('#!/bin/sh\nexec %s "$@"\n' % sys.executable)
    (bindir / "python3").chmod(0o755)
    env = dict(os.environ, PATH="%s%s%s" % (bindir, os.pathsep, os.environ.get("PATH", "")))
    return launcher, library, env


FAKE_PM = """import json, sys
def main():
    import bundled_marker
    import pytest                       # found only through site-packages
    print(json.dumps({"isolated": sys.flags.isolated, "no_site": sys.flags.no_site,
                      "path": sys.path[:2], "marker": bundled_marker.WHERE,
                      "site_loaded_late": "site" in sys.modules}))
    return 0
"""


def test_the_launcher_starts_python_isolated_with_pm_directories_first_on_sys_path(tmp_path):
    launcher, library, env = launcher_root(tmp_path, FAKE_PM)
    done = subprocess.run([str(launcher), "--version"], capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["isolated"] == 1 and seen["no_site"] == 1
    assert seen["path"] == [str(library), str(library / "site")]
    assert seen["marker"] == "site"
    assert seen["site_loaded_late"], "a module outside pm's directories is found once site has added site-packages"


def test_the_launcher_run_by_python_itself_still_runs_pm_without_its_own_directory_on_sys_path(tmp_path):
    launcher, library, env = launcher_root(tmp_path, FAKE_PM)
    done = subprocess.run([sys.executable, str(launcher)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["path"] == [str(library), str(library / "site")]
    assert str(launcher.parent) not in seen["path"]


def test_a_module_found_nowhere_is_still_an_import_error_through_the_launcher(tmp_path):
    launcher, _, env = launcher_root(tmp_path, "def main():\n    import no_such_module_for_pm\n")
    done = subprocess.run([str(launcher)], capture_output=True, text=True, env=env)
    assert done.returncode != 0 and "No module named 'no_such_module_for_pm'" in done.stderr


QUICK_COMMAND_LINES = [
    ["list-installed"],
    ["--root", "/r", "list-installed"],
    ["list-installed", "--root", "/r"],
    ["--root=/a", "-q", "list-installed", "-q", "--include-removed"],
    ["-q", "-q", "list-installed"],
    ["-v", "list-installed", "-q", "--json"],
    ["--json", "list-installed", "--unsafe-io", "--root", "/r", "--root", "/s"],
    ["--verbose", "--quiet", "list-installed", "--verbose", "--verbose", "--include-removed"],
]


@pytest.mark.parametrize("argv", QUICK_COMMAND_LINES)
def test_list_installed_command_line_reads_as_argparse_reads_it(argv):
    quick = pm._quick_arguments(argv)
    assert quick is not None and vars(quick) == vars(pm.build_parser().parse_args(argv))
    parsed = pm.parse_arguments(argv)
    assert isinstance(parsed, pm._QuickArguments) and parsed.func is pm.cmd_list_installed


def test_an_empty_root_is_a_usage_error_on_the_quick_path_too():
    argv = ["--root", "", "list-installed"]
    assert vars(pm._quick_arguments(argv)) == vars(pm.build_parser().parse_args(argv))
    with pytest.raises(pm.UsageError, match="the root is empty"):
        pm.parse_arguments(argv)


@pytest.mark.parametrize("argv", [["list-installed", "--incl"], ["-qq", "list-installed"], ["list-installed", "x"],
                                  ["--root", "-q", "list-installed"], ["list-installed", "-h"],
                                  ["--wait", "1", "list-installed"], ["list-installed", "--"],
                                  ["list-installed", "list-installed"], ["info", "x"]])
def test_any_other_command_line_is_left_to_argparse(argv):
    assert pm._quick_arguments(argv) is None


def test_list_installed_usage_errors_are_argparse_s(root):
    with pytest.raises(pm.UsageError, match="unrecognized arguments: x"):
        pm.parse_arguments(["--root", str(root), "list-installed", "x"])


def test_list_installed_and_version_import_no_argparse_re_or_shutil(root):
    import msgpack
    paths = [str(REPO), str(Path(msgpack.__file__).parent.parent)]
    probe = ("import sys; sys.path[0:0] = %r; import pm\n"
             "for argv in (['--version'], ['--root', %r, 'list-installed']):\n"
             "    assert pm.main(argv) == 0\n"
             "print(sorted(m for m in ('argparse', 're', 'shutil', 'json', 'hashlib') if m in sys.modules))"
             % (paths, str(root)))
    done = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
