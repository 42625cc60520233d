"""bench/run.py (issue 8): one command runs the benchmarks side by side and writes the
report.  The numbers are not judged here (never timed assertions in the tests); what is
proven is that the harness runs, checks what the tools did, and keeps the hand-written
findings when it rewrites the report."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "run.py"


PACMAN = bool(shutil.which("pacman")) and os.geteuid() == 0


def run_bench(tmp_path, *only, installed=False):
    report = tmp_path / "RESULTS.md"
    report.write_text("# old report\n\n## Profile findings\n\nfound by hand: keep me\n")
    done = subprocess.run([sys.executable, str(BENCH), "--quick", "--only", ",".join(only),
                           "--out", str(report), "--dir", str(tmp_path)] + ([] if installed else ["--no-installed"]),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return report.read_text(), done.stdout


def test_the_report_has_a_row_per_benchmark_and_keeps_the_findings_written_by_hand(tmp_path):
    text, table = run_bench(tmp_path, "startup", "resolve")
    for row in ("start-up: pm --version", "start-up: python pm.py --version (no .pyc)",
                "resolve: 100-package closure"):
        assert "| %s |" % row in text and row in table
    assert "## Machine" in text and "# old report" not in text
    assert text.endswith("## Profile findings\n\nfound by hand: keep me\n")
    assert [p.name for p in tmp_path.iterdir()] == ["RESULTS.md"], "the work directory stays behind"


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="dpkg is not installed: the comparison needs it")
def test_install_upgrade_and_uninstall_run_side_by_side_with_tar_and_dpkg(tmp_path):
    text, _ = run_bench(tmp_path, "install", "upgrade", "uninstall")
    assert "| install (1000 files, 5 MiB in 100 directories) |" in text
    for compared in ("dpkg -i", "tar -xf", "dpkg -r", "rm -rf", "pm/dpkg"):
        assert compared in text
    targets = text.split("## Targets", 1)[1].split("## Notes", 1)[0]
    for target in ("| install (1000 files, 5 MiB in 100 directories) | pm/dpkg <= 0.60 |",
                   "| install (1000 files, 5 MiB in 100 directories) | pm/tar <= 2.50 |",
                   "| upgrade (half the files changed) | pm/dpkg <= 0.50 |", "| uninstall | pm/dpkg <= 0.80 |"):
        assert target in targets


@pytest.mark.slow
@pytest.mark.skipif(not PACMAN, reason="pacman is not installed here, or this is not root (pacman -U needs root)")
@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="dpkg is not installed: the comparison needs it")
def test_pacman_installs_upgrades_and_removes_the_same_tree_beside_pm(tmp_path):
    text, table = run_bench(tmp_path, "install", "upgrade", "uninstall")
    for compared in ("pacman -U", "pacman -R", "pm/pacman"):
        assert compared in text and compared in table
    targets = text.split("## Targets", 1)[1].split("## Notes", 1)[0]
    for target in ("| install (1000 files, 5 MiB in 100 directories) | pm/pacman <= 1.00 |",
                   "| upgrade (half the files changed) | pm/pacman <= 0.70 |", "| uninstall | pm/pacman <= 1.00 |"):
        assert target in targets and "not measured" not in targets.split(target, 1)[1].splitlines()[0]


@pytest.mark.slow
def test_start_up_and_list_installed_are_measured_as_pm_is_installed(tmp_path):
    text, _ = run_bench(tmp_path, "startup", "list", installed=True)
    targets = text.split("## Targets", 1)[1].split("## Notes", 1)[0]
    for row in ("start-up: pm --version (/usr/bin/pm of the pm package) | pm/python <= 1.40",
                "start-up: pm --version (pip console script) | pm/python <= 1.40",
                "list-installed (200 packages, 20000 files) | pm/python <= 1.60",
                "list-installed (2000 packages, 20000 files) | 2000/200 <= 2.00",
                "list-installed (/usr/bin/pm of the pm package, 200 packages) | pm/python <= 1.60"):
        assert "| %s |" % row in targets
    launcher_row = targets.split("start-up: pm --version (/usr/bin/pm of the pm package) |", 1)[1].splitlines()[0]
    assert "not measured" not in launcher_row, "the pm package was built and its launcher ran"
