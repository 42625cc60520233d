"""SPEC §15: every hostile input costs bounded memory, time, descriptors and disk.  Each
hostile input here is given to pm running under RLIMIT_AS = 256 MiB and a wall-clock
limit: pm refuses it cleanly (one line, exit 3), never with a MemoryError, a kill or a
hang; scripts are bounded in time; staging is bounded in open descriptors."""

import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile

import pytest

import rawtar
from conftest import PM, File, payload, read, run_pm

MEMORY = 256 << 20          # RLIMIT_AS for every hostile input
WALL_CLOCK = 120            # seconds


def run_limited(root, *args, memory=MEMORY, files=None, timeout=WALL_CLOCK, env=None, killed=False):
    """pm under an address-space limit (and an open-files limit when given)."""
    def limits():
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        if files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))
    command = [sys.executable, str(PM), "--root", str(root)] + [str(a) for a in args]
    full_env = dict(os.environ, **(env or {}))
    full_env.pop("PM_ROOT", None)
    proc = subprocess.run(command, capture_output=True, text=True, preexec_fn=limits,
                          timeout=timeout, env=full_env)
    for bad in ("Traceback", "MemoryError", "internal error"):
        assert bad not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode >= 0 or killed, "pm was killed by signal %d" % -proc.returncode
    return proc


def refused(proc):
    assert proc.returncode == 3, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pm: error: "), proc.stderr[-2000:]
    return lines[0]


def test_pm_itself_runs_under_the_memory_limit(root, build):
    assert run_limited(root, "install", build("tool", "1.0", {"/t": "t"})).returncode == 0
    assert read(root, "/t") == "t"


# -- indexes -------------------------------------------------------------------------

def msgpack_index(packages_payload: bytes) -> bytes:
    """A compressed msgpack index {"format": 1, "packages": <payload>} (raw msgpack)."""
    import msgpack
    import zstandard
    data = b"\x82" + msgpack.packb("format") + msgpack.packb(1) + msgpack.packb("packages") + packages_payload
    return zstandard.ZstdCompressor(level=19).compress(data)


def array32(count: int) -> bytes:
    return b"\xdd" + count.to_bytes(4, "big")


MSGPACK_BOMBS = {
    "50 million empty maps": lambda: array32(50_000_000) + b"\x80" * 50_000_000,
    "one entry of 50 million maps": lambda: array32(1) + array32(50_000_000) + b"\x80" * 50_000_000,
    "900,000 entries of 50 values": lambda: array32(900_000) + (b"\x9f" + b"\x80" * 15) * 3 * 300_000,
}


@pytest.mark.parametrize("shape", sorted(MSGPACK_BOMBS))
def test_a_msgpack_index_bomb_is_refused_under_the_memory_limit(shape, root, tmp_path):
    pytest.importorskip("zstandard")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "index.msgpack.zst").write_bytes(msgpack_index(MSGPACK_BOMBS[shape]()))
    assert (repo / "index.msgpack.zst").stat().st_size < 64 << 10
    (root / "etc/pm").mkdir(parents=True)
    (root / "etc/pm/sources.list").write_text("%s\n" % repo)
    line = refused(run_limited(root, "update"))
    assert "index.msgpack.zst" in line


def test_an_index_that_decompresses_past_its_bound_is_refused(root, tmp_path):
    pytest.importorskip("zstandard")
    import zstandard
    repo = tmp_path / "repo"
    repo.mkdir()
    string = b"\xdb" + (400 << 10).to_bytes(4, "big") + b"s" * (400 << 10)   # one entry: a 400 KiB string
    (repo / "index.msgpack.zst").write_bytes(msgpack_index(array32(100) + string * 100))
    (root / "etc/pm").mkdir(parents=True)
    (root / "etc/pm/sources.list").write_text("%s\n" % repo)
    assert "expands past" in refused(run_limited(root, "update"))


@pytest.mark.parametrize("megabytes", [30, 240])
def test_a_huge_json_index_is_refused_under_the_memory_limit(megabytes, root, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    with open(repo / "index.json", "wb") as f:
        f.write(b'{"format": 1, "packages": [')
        block = b"{}," * (1 << 20)
        for _ in range(megabytes // 3):
            f.write(block)
        f.write(b"{}]}")
    (root / "etc/pm").mkdir(parents=True)
    (root / "etc/pm/sources.list").write_text("%s\n" % repo)
    line = refused(run_limited(root, "update"))
    assert "index.json" in line


# -- archives ------------------------------------------------------------------------

def pax_bomb(count: int) -> bytes:
    """``count`` pax headers of 1 MiB each before a 1-byte file."""
    record = rawtar.pax_record("comment", "x" * ((1 << 20) - 20))
    big = rawtar.member("././@PaxHeader", record, kind=b"x")
    return rawtar.archive(rawtar.manifest('{ package = "bomb", version = "1.0" }'),
                          *([big] * count), rawtar.member("DATA/f", b"x"))


def test_extended_headers_are_bounded_per_member(root, tmp_path):
    package = tmp_path / "bomb.tar"
    package.write_bytes(pax_bomb(8))
    line = refused(run_limited(root, "install", package))
    assert "extended headers" in line
    assert not (root / "f").exists()


@pytest.mark.slow
def test_600_pax_headers_of_1_mib_are_refused_under_the_memory_limit(root, tmp_path):
    package = tmp_path / "bomb.tar"
    with open(package, "wb") as f:
        f.write(pax_bomb(600))
    assert "extended headers" in refused(run_limited(root, "install", package))


def test_a_member_990_directories_deep_is_refused_before_anything_is_created(root, tmp_path):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in (("CONTROL/manifest", b'{ package = "deep", version = "1.0" }'),
                           ("DATA/" + "d/" * 990 + "f", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    package = tmp_path / "deep.tar"
    package.write_bytes(raw.getvalue())
    line = refused(run_limited(root, "install", package))
    assert "deep" in line
    assert list(root.iterdir()) == [], "not even the lock is created"


# -- manifests and --json ------------------------------------------------------------

@pytest.mark.parametrize("text", ['{ package = "big", version = "1.0", size = 1e999 }',
                                  '{"package": "big", "version": "1.0", "size": 1e999}',
                                  '{ package = "big", version = "1.0", size = -1e999 }'])
def test_a_number_out_of_range_in_a_manifest_is_refused_and_json_stays_strict(text, root, build):
    package = build("big", "1.0", manifest=text)
    for command in (["install"], ["info"]):
        result = run_pm(root, "--json", *command, package)
        assert result.code == 3, result
        document = json.loads(result.out, parse_constant=lambda name: pytest.fail("not JSON: " + name))
        assert document["exit_code"] == 3 and "out of range" in document["error"]


# -- descriptors ---------------------------------------------------------------------

def many_directories(build, count=5000):
    return build("wide", "1.0", {"/w/d%04d/f" % i: "x" for i in range(count)})


def test_5000_new_directories_install_under_ulimit_n_256(root, build):
    package = many_directories(build)
    proc = run_limited(root, "--unsafe-io", "install", package, files=256, memory=1 << 30)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert read(root, "/w/d4999/f") == "x"
    proc = run_limited(root, "--unsafe-io", "uninstall", "wide", files=256, memory=1 << 30)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (root / "w").exists()


@pytest.mark.parametrize("fault", ["ENOSPC:1:db", "kill:1:db"])
def test_5000_new_directories_roll_back_under_ulimit_n_256(fault, root, build):
    package = many_directories(build)
    before = payload(root)
    proc = run_limited(root, "--unsafe-io", "install", package, files=256, memory=1 << 30, env={"PM_FAULT": fault},
                       killed=fault.startswith("kill"))
    assert proc.returncode != 0
    assert "could not finish undoing" not in proc.stderr, proc.stderr[-2000:]
    proc = run_limited(root, "recover", files=256, memory=1 << 30)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert payload(root) == before
    assert not (root / "var/lib/pm/journal").exists()
    assert run_pm(root, "list-installed").out == ""


# -- scripts -------------------------------------------------------------------------

HANGING = ("#!/bin/sh\nsleep 300 &\necho $! > \"$PM_ROOT/../script.pid\"\nwait\n")


def process_gone(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_a_hanging_script_is_killed_with_its_process_group_after_the_script_timeout(root, build):
    package = build("hang", "1.0", {"/h": "h"}, scripts={"api-pre-install": HANGING})
    result = run_pm(root, "install", package, "--script-timeout", "1", timeout=120)
    assert result.code == 1, result
    assert "api-pre-install of hang did not finish within 1 seconds" in result.err
    assert not (root / "h").exists() and run_pm(root, "list-installed").out == ""
    assert process_gone(int((root.parent / "script.pid").read_text()))


def test_the_script_timeout_can_be_set_in_pm_conf_and_a_post_script_timing_out_counts_as_failed(root, build):
    (root / "etc/pm").mkdir(parents=True)
    (root / "etc/pm/pm.conf").write_text("script_timeout = 1\n")
    package = build("hang", "1.0", {"/h": "h"}, scripts={"api-post-install": HANGING})
    result = run_pm(root, "install", package, timeout=120)
    assert result.code == 1, result
    assert "api-post-install of hang did not finish within 1 seconds" in result.err
    assert read(root, "/h") == "h", "a post-install failing leaves the package installed"
    assert "pm recover runs it again" in run_pm(root, "list-installed").err
    assert process_gone(int((root.parent / "script.pid").read_text()))


def test_script_timeout_must_be_a_positive_number(root, build):
    assert run_pm(root, "list-installed", "--script-timeout", "0").code == 2
    assert run_pm(root, "list-installed", "--timeout", "nan").code == 2


# -- disk ----------------------------------------------------------------------------

def test_an_uninstall_on_a_full_disk_uses_the_reserved_space(root, build):
    assert run_pm(root, "install", build("big", "1.0", {"/big/f": "x"})).code == 0
    assert (root / "var/lib/pm/reserve").stat().st_size > 0
    result = run_pm(root, "uninstall", "big", env={"PM_FAULT": "ENOSPC:1:journal"})
    assert result.code == 0, result
    assert not (root / "big").exists() and run_pm(root, "list-installed").out == ""
    assert (root / "var/lib/pm/reserve").exists(), "the reserve is made again once space is free"


def test_an_install_never_uses_the_reserved_space(root, build):
    assert run_pm(root, "install", build("one", "1.0", {"/one": "1"})).code == 0
    result = run_pm(root, "install", build("two", "1.0", {"/two": "2"}), env={"PM_FAULT": "ENOSPC:1:journal"})
    assert result.code == 1 and "No space left" in result.err, result
    assert (root / "var/lib/pm/reserve").exists() and not (root / "two").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (root only)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield disk
    subprocess.run(["umount", "-l", str(disk)])


def fill(directory):
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, bytes(4096))
    except OSError:
        pass
    try:
        while True:
            os.write(fd, b"\0")
    except OSError:
        pass
    os.close(fd)
    assert os.statvfs(directory).f_bavail == 0


def test_an_uninstall_frees_space_on_a_really_full_disk(small_disk, build):
    root = small_disk / "root"
    root.mkdir()
    package = build("big", "1.0", {"/big/f%03d" % i: File(b"x" * 4000) for i in range(200)})
    assert run_pm(root, "install", package).code == 0
    fill(small_disk)
    result = run_pm(root, "uninstall", "big")
    assert result.code == 0, result
    assert not (root / "big").exists()
    assert run_pm(root, "list-installed").out == ""


def test_a_planted_cached_index_bomb_is_refused_under_the_memory_limit(root, build, repository, serve):
    repo = repository().add(build("tool", "1.0", {"/t": "t"}))
    server = serve(repo.path)
    repo.use(root, url=server.url)
    assert run_pm(root, "update").code == 0
    [cached] = (root / "var/cache/pm/indexes").iterdir()
    import msgpack
    cached.write_bytes(b"\x83" + msgpack.packb("format") + msgpack.packb(1) + msgpack.packb("url")
                       + msgpack.packb(server.url) + msgpack.packb("entries")
                       + array32(30_000_000) + b"\x80" * 30_000_000)
    line = refused(run_limited(root, "install", "tool"))
    assert "cached index" in line and "damaged" in line
