"""bench/run.py (issue 8): one command runs the benchmarks side by side and writes the
report.  The numbers are not judged here (never timed assertions in the tests); what is
proven is that the harness runs, checks what the tools did, and keeps the hand-written
findings when it rewrites the report."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "run.py"


def run_bench(tmp_path, *only):
    report = tmp_path / "RESULTS.md"
    report.write_text("# old report\n\n## Profile findings\n\nfound by hand: keep me\n")
    done = subprocess.run([sys.executable, str(BENCH), "--quick", "--only", ",".join(only),
                           "--out", str(report), "--dir", str(tmp_path)],
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
