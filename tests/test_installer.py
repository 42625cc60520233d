"""SPEC §12: offline installation media.  make_medium.py builds a medium (the bootstrap
install.py, pm.py, wheels for pm's Python packages, and a repository with the pm package
and the packages asked for); install.py bootstraps an empty root or an image directory
from it with no network, and running it again changes nothing; ``pm install pm`` later
upgrades pm itself, and a kill at any moment of that leaves a pm that runs.

Media are real: built by make_medium.py with pip and tools/repoPackager.py, once per test
session (shared by the xdist workers), and only read by the tests.  The wheels are
fetched once (PM_TEST_WHEELS names a ready wheelhouse for runs without an index).
install.py runs in a network namespace of its own where that is possible (root), else
with PIP_NO_INDEX and proxies that lead nowhere."""

import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from conftest import REPO, snapshot

MAKE_MEDIUM = REPO / "installer" / "make_medium.py"
PACKAGER = REPO / "tools" / "repoPackager.py"


def _load_tool():
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_medium_tool", str(MAKE_MEDIUM))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_medium_tool = _load_tool()


# -- building media once ----------------------------------------------------------------

@contextlib.contextmanager
def exclusive(lock_path):
    """One xdist worker at a time builds what all of them share."""
    import fcntl
    with open(lock_path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory, worker_id):
    """A directory every xdist worker of this session sees."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


def run(command, env=None, timeout=600, **kwargs):
    full_env = dict(os.environ)
    full_env.pop("PM_ROOT", None)
    full_env.update(env or {})
    proc = subprocess.run([str(c) for c in command], capture_output=True, text=True, env=full_env,
                          timeout=timeout, **kwargs)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture(scope="session")
def wheelhouse(shared_dir):
    if os.environ.get("PM_TEST_WHEELS"):
        return Path(os.environ["PM_TEST_WHEELS"])
    house = shared_dir / ("installer-wheels-signatures-py%d%d" % sys.version_info[:2])
    with exclusive(str(house) + ".lock"):
        if not (house / ".complete").exists():
            proc = run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", house]
                       + list(make_medium_tool.BUNDLED))
            assert proc.returncode == 0, "fetching pm's wheels failed: %s" % proc.stderr[-2000:]
            (house / ".complete").touch()
    return house


@pytest.fixture(scope="session")
def source_repo(shared_dir):
    """A repository (tools/repoPackager.py) with ``hello`` needing ``libgreet``, and
    ``extra``, which nothing asks for."""
    repo = shared_dir / "installer-source-repo"
    with exclusive(str(repo) + ".lock"):
        if not (repo / "index.json").exists():
            trees = shared_dir / "installer-source-trees"
            shutil.rmtree(trees, ignore_errors=True)
            write_tree(trees / "libgreet", {"package": "libgreet", "version": "1.0"},
                       {"usr/lib/libgreet/greeting": "hello, world\n"})
            write_tree(trees / "hello", {"package": "hello", "version": "1.2", "dependencies": {"libgreet": ">=1.0"},
                                         "configFiles": ["/etc/hello.conf"]},
                       {"usr/bin/hello": "#!/bin/sh\ncat /usr/lib/libgreet/greeting\n", "etc/hello.conf": "loud = no\n"})
            write_tree(trees / "extra", {"package": "extra", "version": "3.0"}, {"opt/extra/README": "extra\n"})
            proc = run([sys.executable, PACKAGER, "-d", repo, trees])
            assert proc.returncode == 0, proc.stderr
    return repo


def write_tree(top, manifest, files):
    (top / "DATA").mkdir(parents=True)
    (top / "manifest").write_text(json.dumps(manifest))
    for path, content in files.items():
        target = top / "DATA" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        if content.startswith("#!"):
            target.chmod(0o755)


def build_medium(*args, env=None):
    return run([sys.executable, MAKE_MEDIUM] + list(args), env=env)


def shared_medium(shared_dir, wheelhouse, name, *args):
    """A medium built once per session with make_medium.py ARGS (offline, from the wheelhouse)."""
    out = shared_dir / ("medium-" + name)
    with exclusive(str(out) + ".lock"):
        if not (out / "medium.json").exists():
            proc = build_medium("--out", out, "--wheels", wheelhouse, "-q", *args)
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout.strip() == str(out)
    return out


@pytest.fixture(scope="session")
def medium(shared_dir, wheelhouse, source_repo):
    """The medium most tests use: pm, and hello with what it needs."""
    return shared_medium(shared_dir, wheelhouse, "hello", "--repo", source_repo, "--include", "hello")


def next_version(version):
    major, minor, patch = (int(p) for p in re.match(r"(\d+)\.(\d+)\.(\d+)", version).groups())
    return "%d.%d.%d" % (major, minor, patch + 1)


@pytest.fixture(scope="session")
def pm_version():
    import pm
    return pm.__version__


@pytest.fixture(scope="session")
def medium_next(shared_dir, wheelhouse, pm_version):
    """A medium whose pm is the next version (this pm.py with a higher __version__)."""
    newer = shared_dir / "pm-next.py"
    with exclusive(str(newer) + ".lock"):
        text = (REPO / "pm.py").read_text()
        newer.write_text(text.replace('__version__ = "%s"' % pm_version,
                                      '__version__ = "%s"' % next_version(pm_version), 1))
    return shared_medium(shared_dir, wheelhouse, "next", "--pm", newer)


# -- running install.py and the pm in the root ----------------------------------------------

def _offline_prefix():
    """``unshare -n``: a network namespace with nothing in it, when this user may."""
    try:
        ok = subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0
    except OSError:
        ok = False
    return ["unshare", "-n"] if ok else []


OFFLINE = _offline_prefix()


def _bare_python():
    """This Python without its site-packages (the venv's base interpreter) when that one
    lacks pm's Python packages, so that the medium and the installed pm must bring their
    own; else this Python."""
    base = os.path.join(sys.base_prefix, "bin", "python%d.%d" % sys.version_info[:2])
    if os.path.exists(base) and subprocess.run([base, "-c", "import msgpack"], capture_output=True).returncode:
        return base
    return sys.executable


PYTHON = _bare_python()
NO_NETWORK = {"PIP_NO_INDEX": "1", "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
              "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": ""}


def install(medium, root, *args, env=None, python=None):
    """``python3 MEDIUM/install.py --root ROOT ARGS``, offline."""
    return run(OFFLINE + [python or PYTHON, Path(medium) / "install.py", "--root", root] + list(args),
               env=dict(NO_NETWORK, **(env or {})))


def root_pm(root, *args, env=None):
    """The pm installed in the root, run as ``ROOT/usr/bin/pm --root ROOT ARGS``."""
    return run(OFFLINE + [PYTHON, Path(root) / "usr/bin/pm", "--root", root] + list(args),
               env=dict(NO_NETWORK, **(env or {})))


def installed(root):
    result = root_pm(root, "--json", "list-installed")
    assert result.returncode == 0, result.stderr
    return {p["name"]: p["version"] for p in json.loads(result.stdout)["packages"]}


def tree(top):
    """The whole tree, with each file's inode and mtime: a rewrite with the same content
    is a change too (the lock file aside, which every writing pm command takes)."""
    result = snapshot(top)
    for rel in list(result):
        st = os.lstat(os.path.join(top, rel))
        if not os.path.isdir(os.path.join(top, rel)) and rel != "var/lib/pm/lock":
            result[rel] = result[rel] + (st.st_ino, st.st_mtime_ns)
    return result


def staging_debris(top):
    return [os.path.join(d, n) for d, dirs, files in os.walk(top) for n in dirs + files
            if n.startswith(".~pm.") or n in ("journal", "journal.tmp", "status.tmp")]


def one_line_error(proc):
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


# -- the medium ---------------------------------------------------------------------------------

def test_requirements_of_the_medium_are_pms_runtime_dependencies():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert set(make_medium_tool.REQUIREMENTS) == set(project["dependencies"])
    assert set(make_medium_tool.SIGNATURE_REQUIREMENTS) == set(project["optional-dependencies"]["signatures"])


def test_a_medium_made_with_keys_makes_the_root_trust_them_and_signs_its_repository(
        tmp_path, shared_dir, wheelhouse, source_repo):
    keys = tmp_path / "keys"
    keys.mkdir()
    assert run([sys.executable, PACKAGER, "--generate-key", keys / "site"]).returncode == 0
    assert run([sys.executable, PACKAGER, "--generate-key", keys / "other"]).returncode == 0
    refused = build_medium("--out", tmp_path / "m0", "--wheels", wheelhouse, "-q", "--key", keys / "site.pub")
    assert refused.returncode == 2 and "--sign" in refused.stderr
    refused = build_medium("--out", tmp_path / "m0", "--wheels", wheelhouse, "-q", "--key", keys / "site.pub",
                           "--sign", keys / "other.sec")
    assert refused.returncode == 2 and "not one of --key" in refused.stderr
    medium = shared_medium(shared_dir, wheelhouse, "signed", "--repo", source_repo, "--include", "hello",
                           "--key", keys / "site.pub", "--sign", keys / "site.sec")
    assert (medium / "keys/site.pub").read_bytes() == (keys / "site.pub").read_bytes()
    assert (medium / "repo/index.msgpack.zst.sig").exists()
    root = tmp_path / "root"
    proc = install(medium, root, "hello")
    assert proc.returncode == 0, proc.stderr
    assert (root / "etc/pm/keys/site.pub").read_bytes() == (keys / "site.pub").read_bytes()
    listed = json.loads(root_pm(root, "--json", "key", "list").stdout)["keys"]
    assert [k["file"] for k in listed] == [str(root / "etc/pm/keys/site.pub")]
    assert "hello" in installed(root)
    update = root_pm(root, "--json", "update")
    assert update.returncode == 0, update.stderr
    assert json.loads(update.stdout)["sources"][0]["signed_by"] == listed[0]["keynum"]
    again = install(medium, root, "hello")
    assert again.returncode == 0, again.stderr


def test_medium_holds_bootstrap_pm_wheels_and_a_repository_described_with_sha256s(medium, pm_version):
    import hashlib
    description = json.loads((medium / "medium.json").read_text())
    listed = set(description["files"])
    on_medium = {str(p.relative_to(medium)) for p in medium.rglob("*") if p.is_file()} - {"medium.json"}
    assert listed == on_medium
    for rel, entry in description["files"].items():
        data = (medium / rel).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert {"install.py", "pm.py"} <= listed
    assert (medium / "pm.py").read_bytes() == (REPO / "pm.py").read_bytes()
    wheels = {w.split("/")[1].split("-")[0] for w in description["wheels"]}
    assert {"msgpack", "semver", "zstandard", "cryptography"} <= wheels, \
        "pm's packages, and cryptography (with what it needs) to check signed indexes"
    assert description["target"]["python"] == "%d.%d" % sys.version_info[:2]
    assert description["pm"] == pm_version
    offered = {(p["name"], p["version"]) for p in description["packages"]}
    assert offered == {("pm", pm_version), ("hello", "1.2"), ("libgreet", "1.0")}   # not extra
    assert description["included"] == ["hello", "libgreet"]
    index = json.loads((medium / "repo/index.json").read_text())
    assert {(e["manifest"]["package"], e["manifest"]["version"]) for e in index["packages"]} == offered


def test_pm_package_holds_pm_its_python_packages_and_the_launcher(medium, pm_version):
    import pm
    description = json.loads((medium / "medium.json").read_text())
    entry = next(p for p in description["packages"] if p["name"] == "pm")
    package = pm.Package(str(medium / entry["file"]))
    package.close()
    members = {m.path: m for m in package.members}
    library = "/usr/lib/pm/" + pm_version
    assert members["/usr/bin/pm"].mode == 0o755
    assert package.manifest["architecture"] == os.uname().machine
    assert package.manifest["essential"] is True       # uninstall refuses it without --force-essential
    for path in ("/pm.py", "/CONTENTS", "/site/msgpack/__init__.py", "/site/semver/__init__.py",
                 "/site/zstandard/__init__.py"):
        assert library + path in members, path
    assert not any("/site/bin/" in p for p in members)
    contents = {}
    with tarfile.open(str(medium / entry["file"])) as tar:
        launcher = tar.extractfile("DATA/usr/bin/pm").read().decode()
        for line in tar.extractfile("DATA" + library + "/CONTENTS").read().decode().splitlines():
            size, _, rel = line.partition(" ")
            contents[library + "/" + rel] = int(size)
    assert 'VERSION = "%s"' % pm_version in launcher
    files = {p: m.size for p, m in members.items() if m.kind == "f" and p.startswith(library + "/")}
    assert contents == {p: s for p, s in files.items() if p != library + "/CONTENTS"}


def test_medium_as_one_tar_archive_installs_after_extraction(tmp_path, wheelhouse):
    archive = tmp_path / "node-medium.tar"
    proc = build_medium("--out", archive, "--format", "tar", "--wheels", wheelhouse, "-q")
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(str(archive)) as tar:
        names = tar.getnames()
        assert all(n == "node-medium" or n.startswith("node-medium/") for n in names)
        assert {"node-medium/install.py", "node-medium/medium.json"} <= set(names)
        assert all(m.uid == 0 and m.mtime == 0 for m in tar.getmembers())
        tar.extractall(str(tmp_path / "unpacked"))
    target = tmp_path / "target"
    target.mkdir()
    result = install(tmp_path / "unpacked/node-medium", target)
    assert result.returncode == 0, result.stderr
    assert "pm" in installed(target)


@pytest.mark.skipif(not (shutil.which("mcopy") and (shutil.which("mkfs.fat") or shutil.which("mformat"))),
                    reason="mtools and dosfstools are not installed (apt-get install mtools dosfstools)")
def test_medium_as_fat_image_holds_the_medium_and_installs_from_it(tmp_path, wheelhouse):
    image = tmp_path / "medium.img"
    proc = build_medium("--out", image, "--format", "img", "--wheels", wheelhouse, "-q")
    assert proc.returncode == 0, proc.stderr
    assert image.stat().st_size >= 1440 * 1024
    info = run(["minfo", "-i", image, "::"], env={"MTOOLS_SKIP_CHECK": "1"})
    assert "FAT" in info.stdout or "fat" in info.stdout.lower(), info.stdout
    copied = tmp_path / "copied"
    copied.mkdir()
    proc = run(["mcopy", "-s", "-n", "-i", image, "::/*", copied], env={"MTOOLS_SKIP_CHECK": "1"})
    assert proc.returncode == 0, proc.stderr
    description = json.loads((copied / "medium.json").read_text())
    assert set(description["files"]) == {str(p.relative_to(copied)) for p in copied.rglob("*")
                                           if p.is_file()} - {"medium.json"}
    target = tmp_path / "target"
    target.mkdir()
    result = install(copied, target)
    assert result.returncode == 0, result.stderr
    assert "pm" in installed(target)


def test_image_format_without_mtools_says_so_in_one_line(tmp_path, wheelhouse):
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "python3").symlink_to(sys.executable)
    proc = build_medium("--out", tmp_path / "m.img", "--format", "img", "--wheels", wheelhouse,
                       env={"PATH": str(bare)})
    assert proc.returncode == 1
    line = one_line_error(proc)
    assert "needs mtools and dosfstools (not found: mcopy" in line
    assert "apt-get install mtools dosfstools" in line
    assert os.listdir(tmp_path) == ["bin"]


def test_include_needs_a_repository(tmp_path):
    proc = build_medium("--out", tmp_path / "m", "--include", "hello")
    assert proc.returncode == 2 and "--repo" in one_line_error(proc)
    assert not (tmp_path / "m").exists()


def test_a_package_the_repository_lacks_is_refused_and_no_medium_written(tmp_path, wheelhouse, source_repo):
    proc = build_medium("--out", tmp_path / "m", "--wheels", wheelhouse, "--repo", source_repo, "--include", "nosuch")
    assert proc.returncode == 1
    assert "nosuch" in one_line_error(proc)
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_medium_for_another_python_and_machine_is_refused_on_this_one_up_front(tmp_path):
    other = "aarch64" if os.uname().machine != "aarch64" else "x86_64"
    out = tmp_path / "medium"
    proc = build_medium("--out", out, "--python-version", "3.9", "--platform", "manylinux2014_" + other, "-q")
    if proc.returncode != 0 and "pip download" in proc.stderr:
        pytest.skip("no package index reachable for wheels of another machine: " + proc.stderr.strip())
    assert proc.returncode == 0, proc.stderr
    description = json.loads((out / "medium.json").read_text())
    assert description["target"]["python"] == "3.9" and description["target"]["machine"] == other
    assert all("cp39" in w or "py3" in w for w in description["wheels"])
    assert not any("__pycache__" in f for f in description["files"])
    target = tmp_path / "target"
    target.mkdir()
    result = install(out, target)
    assert result.returncode == 1
    assert "Python 3.9 on " + other in one_line_error(result)
    assert os.listdir(target) == []


# -- bootstrapping a root --------------------------------------------------------------------

def test_bootstrap_installs_pm_and_packages_offline_and_the_roots_pm_lists_and_removes(medium, tmp_path,
                                                                                        pm_version):
    target = tmp_path / "node"
    target.mkdir()
    result = install(medium, target, "hello")
    assert result.returncode == 0, result.stderr
    assert installed(target) == {"pm": pm_version, "hello": "1.2", "libgreet": "1.0"}
    assert (target / "usr/bin/hello").read_text().startswith("#!/bin/sh")
    assert (target / "etc/pm/sources.list").read_text().splitlines()[-1] == str(medium / "repo")
    assert not (target / "etc/opm.conf").exists()
    assert root_pm(target, "verify").returncode == 0
    version = root_pm(target, "--version")
    assert version.stdout.strip() == "pm " + pm_version
    removed = root_pm(target, "uninstall", "hello")
    assert removed.returncode == 0, removed.stderr
    assert installed(target) == {"pm": pm_version, "libgreet": "1.0"}
    assert not (target / "usr/bin/hello").exists()
    assert staging_debris(target) == []


def test_image_directory_gets_role_image_in_opm_conf(medium, tmp_path, pm_version):
    image = tmp_path / "images" / "compute-image"
    image.parent.mkdir()
    result = install(medium, image, "--role", "image", "libgreet>=1.0")     # made when missing
    assert result.returncode == 0, result.stderr
    assert (image / "etc/opm.conf").read_text() == "image\ncompute-image\n"
    assert installed(image) == {"pm": pm_version, "libgreet": "1.0"}
    assert root_pm(image, "uninstall", "libgreet").returncode == 0
    assert installed(image) == {"pm": pm_version}


def test_role_and_name_are_written_as_two_lines(medium, tmp_path):
    target = tmp_path / "head"
    target.mkdir()
    assert install(medium, target, "--role", "server", "--name", "oscar-head").returncode == 0
    assert (target / "etc/opm.conf").read_text() == "server\noscar-head\n"
    assert install(medium, target, "--role", "client", "--name", "node1").returncode == 0
    assert (target / "etc/opm.conf").read_text() == "client\nnode1\n"
    for command in (("opm", "init"), ("opm", "node", "add", "node1", "--role", "client")):
        assert root_pm(target, *command).returncode == 0
    sync = root_pm(target, "opm", "sync")                  # the node it syncs is the one opm.conf names
    assert sync.returncode == 0 and "node1 has no package requests" in sync.stdout + sync.stderr, sync


def test_a_name_pm_opm_would_not_accept_is_refused_with_nothing_written(medium, tmp_path):
    target = tmp_path / "node"
    target.mkdir()
    result = install(medium, target, "--role", "client", "--name", "node 1")
    assert result.returncode == 2
    assert "'node 1' is not a name pm opm accepts" in one_line_error(result)
    assert os.listdir(target) == []


def test_source_url_goes_to_sources_list_and_the_operators_lines_stay(medium, tmp_path):
    target = tmp_path / "node"
    (target / "etc/pm").mkdir(parents=True)
    (target / "etc/pm/sources.list").write_text("# site mirror\nhttp://mirror.example/pm\n")
    result = install(medium, target, "--source", "http://head.cluster:8080/pm", "hello")
    assert result.returncode == 0, result.stderr      # installed from the medium all the same
    lines = (target / "etc/pm/sources.list").read_text().splitlines()
    assert lines[:2] == ["# site mirror", "http://mirror.example/pm"]
    assert lines[-1] == "http://head.cluster:8080/pm"
    assert install(medium, target).returncode == 0     # back to the medium: its line is replaced
    lines = (target / "etc/pm/sources.list").read_text().splitlines()
    assert lines[:2] == ["# site mirror", "http://mirror.example/pm"] and lines[-1] == str(medium / "repo")
    assert "http://head.cluster:8080/pm" not in lines


def test_a_second_run_changes_nothing(medium, tmp_path):
    target = tmp_path / "node"
    target.mkdir()
    assert install(medium, target, "--role", "client", "--name", "n1", "hello").returncode == 0
    before = tree(target)
    again = install(medium, target, "--role", "client", "--name", "n1", "hello")
    assert again.returncode == 0, again.stderr
    assert tree(target) == before


def test_a_package_not_on_the_medium_is_refused_up_front_with_nothing_written(medium, tmp_path):
    target = tmp_path / "node"
    target.mkdir()
    result = install(medium, target, "hello", "nosuch")
    assert result.returncode == 1
    assert "not on this medium: nosuch" in one_line_error(result)
    assert os.listdir(target) == []


def test_a_damaged_medium_is_refused_with_nothing_written(medium, tmp_path):
    copy = tmp_path / "medium"
    shutil.copytree(medium, copy)
    package = next((copy / "repo").glob("hello-*"))
    data = bytearray(package.read_bytes())
    data[700] ^= 1
    package.write_bytes(bytes(data))
    target = tmp_path / "node"
    target.mkdir()
    result = install(copy, target, "hello")
    assert result.returncode == 3
    assert "damaged" in one_line_error(result) and package.name in result.stderr
    assert os.listdir(target) == []


@contextlib.contextmanager
def tmpfs(path, options):
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (%s)" % (proc.stderr.strip() or "not root"))
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_a_root_with_too_little_space_is_refused_up_front_with_nothing_written(medium, tmp_path):
    with tmpfs(tmp_path / "small", "size=2m") as small:
        result = install(medium, small, "hello")
        assert result.returncode == 1
        line = one_line_error(result)
        assert "free" in line and "needs about" in line, line
        assert os.listdir(small) == []


def test_a_read_only_root_is_refused_up_front_with_nothing_written(medium, tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=64m") as read_only:
        result = install(medium, read_only / "node", "hello")
        assert result.returncode == 1
        assert "not writable (a read-only filesystem)" in one_line_error(result)
        assert os.listdir(read_only) == []


def test_a_root_that_is_a_file_is_refused(medium, tmp_path):
    (tmp_path / "node").write_text("not a directory")
    result = install(medium, tmp_path / "node")
    assert result.returncode == 1 and "not a directory" in one_line_error(result)


def other_python():
    """A working Python 3.9+ of another minor version than this one, found on PATH and probed by
    running it (a pyenv shim for a version not selected exits 127 and is no interpreter), or None."""
    probe = "import sys; print('%d.%d' % sys.version_info[:2])"
    mine = "%d.%d" % sys.version_info[:2]
    for minor in range(9, 20):
        path = shutil.which("python3.%d" % minor)
        if not path or "3.%d" % minor == mine:
            continue
        try:
            answer = subprocess.run([path, "-c", probe], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            continue
        if answer.returncode == 0 and answer.stdout.strip() == "3.%d" % minor:
            return path
    return None


def test_a_python_the_medium_is_not_for_is_refused_up_front(medium, tmp_path):
    other = other_python()
    if other is None:
        pytest.skip("no working Python of another version on PATH")
    target = tmp_path / "node"
    target.mkdir()
    result = install(medium, target, "hello", python=other)
    assert result.returncode == 1
    assert "this medium's Python packages are for Python %d.%d" % sys.version_info[:2] in one_line_error(result)
    assert os.listdir(target) == []


# -- interruptions ----------------------------------------------------------------------------------

def reference(medium, tmp_path, *args):
    """The root a clean run makes, and the pm run's step count."""
    target = tmp_path / "reference"
    target.mkdir()
    counts = tmp_path / "counts.json"
    assert install(medium, target, *args, env={"PM_FAULT_COUNT": str(counts)}).returncode == 0
    return target, json.loads(counts.read_text())


def finished_like(target, reference_root):
    """After the next run: the same packages and files as a clean run, and no debris."""
    assert installed(target) == installed(reference_root)
    ignore = re.compile(r"^var/lib/pm/(files/|status$|lock$)")
    mine = {k: v for k, v in snapshot(target).items() if not ignore.match(k)}
    theirs = {k: v for k, v in snapshot(reference_root).items() if not ignore.match(k)}
    assert mine == theirs
    assert staging_debris(target) == []
    assert root_pm(target, "verify").returncode == 0


def spread(total):
    return sorted({n for n in (1, 2, 3, 5, total // 4, total // 2, 3 * total // 4, total - 1, total) if 1 <= n <= total})


def few(steps):
    """The first and a middle step of ``steps``: the default run's sample."""
    return sorted({steps[0], steps[len(steps) // 2]})


@pytest.mark.parametrize("sample", [pytest.param(few, id="few"), pytest.param(list, id="spread", marks=pytest.mark.slow)])
def test_a_run_killed_while_installing_pm_is_completed_by_the_next(medium, tmp_path, sample):
    args = ("--role", "image", "--name", "img", "hello")
    ref, _ = reference(medium, tmp_path, *args)
    bootstrap = tmp_path / "pm-only"
    counts = tmp_path / "pm-only.json"
    assert install(medium, bootstrap, env={"PM_FAULT_COUNT": str(counts)}).returncode == 0
    faults = ["kill:%d" % n for n in sample(spread(json.loads(counts.read_text())["total"]))]
    for i, fault in enumerate(faults + ["kill:1:db"]):
        target = tmp_path / ("node%d" % i)
        target.mkdir()
        killed = install(medium, target, *args, env={"PM_FAULT": fault})
        assert killed.returncode == 1 and "installing pm failed (killed by signal 9)" in killed.stderr, \
            (fault, killed.stderr)
        result = install(medium, target, *args)
        assert result.returncode == 0, (fault, result.stderr)
        finished_like(target, ref)


@pytest.mark.parametrize("sample", [pytest.param(few, id="few"), pytest.param(list, id="spread", marks=pytest.mark.slow)])
def test_a_run_killed_while_configuring_or_installing_the_packages_is_completed_by_the_next(medium, tmp_path, sample):
    """install.py's own writes (etc/opm.conf, sources.list) count as the first steps of the
    fault injector; the pm installing the packages counts its own."""
    args = ("--role", "image", "--name", "img", "hello")
    ref, counts = reference(medium, tmp_path, *args)
    for n in sample(spread(counts["total"])):
        target = tmp_path / ("node%d" % n)
        assert install(medium, target).returncode == 0            # pm only
        killed = install(medium, target, *args, env={"PM_FAULT": "kill:%d" % n})
        assert killed.returncode != 0, n
        assert install(medium, target, *args).returncode == 0
        finished_like(target, ref)


def sigkill_install_at_random(medium, target, args, rng, limit):
    proc = subprocess.Popen(OFFLINE + [PYTHON, str(medium / "install.py"), "--root", str(target)] + list(args),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env=dict(os.environ, **NO_NETWORK))
    time.sleep(rng.uniform(0.0, limit))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("attempts", [pytest.param(1, id="one"), pytest.param(12, id="many", marks=pytest.mark.slow)])
def test_runs_killed_by_real_sigkills_are_completed_by_the_next(medium, tmp_path, attempts):
    args = ("--role", "client", "--name", "n1", "hello")
    ref, _ = reference(medium, tmp_path, *args)
    started = time.monotonic()
    install(medium, tmp_path / "timing", *args)
    duration = time.monotonic() - started
    rng = random.Random(attempts)
    for attempt in range(attempts):
        target = tmp_path / ("node%d" % attempt)
        target.mkdir()
        sigkill_install_at_random(medium, target, args, rng, duration)
        result = install(medium, target, *args)
        assert result.returncode == 0, result.stderr
        finished_like(target, ref)


# -- pm upgrading itself ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bootstrapped(medium, tmp_path_factory):
    """A root with this pm installed from the medium (copied for each test)."""
    target = tmp_path_factory.mktemp("bootstrapped") / "root"
    target.mkdir()
    assert install(medium, target, "hello").returncode == 0
    return target


def copy_root(template, path):
    shutil.copytree(template, path, symlinks=True)
    return path


def pm_package(medium):
    description = json.loads((Path(medium) / "medium.json").read_text())
    return Path(medium) / next(p["file"] for p in description["packages"] if p["name"] == "pm")


def test_pm_install_pm_replaces_the_running_pm(bootstrapped, medium_next, tmp_path, pm_version):
    target = copy_root(bootstrapped, tmp_path / "root")
    newer = next_version(pm_version)
    result = root_pm(target, "install", pm_package(medium_next))
    assert result.returncode == 0, result.stderr
    assert root_pm(target, "--version").stdout.strip() == "pm " + newer
    assert installed(target)["pm"] == newer
    assert os.listdir(target / "usr/lib/pm") == [newer]
    assert root_pm(target, "verify").returncode == 0
    assert staging_debris(target) == []


def test_pm_upgrades_itself_by_name_from_a_repository(bootstrapped, medium_next, tmp_path, pm_version):
    newer = next_version(pm_version)
    repository = ("--repository", medium_next / "repo")
    target = copy_root(bootstrapped, tmp_path / "upgrade")
    result = root_pm(target, *repository, "upgrade", "pm")
    assert result.returncode == 0, result.stderr
    assert root_pm(target, "--version").stdout.strip() == "pm " + newer
    assert root_pm(target, *repository, "upgrade").returncode == 0         # nothing newer left
    for spec in ("pm", "pm>=" + newer):                 # SPEC §12: `pm install pm` upgrades pm
        target = copy_root(bootstrapped, tmp_path / ("install " + spec))
        result = root_pm(target, *repository, "install", spec)
        assert result.returncode == 0, result.stderr
        assert installed(target)["pm"] == newer
        assert os.listdir(target / "usr/lib/pm") == [newer]
        assert root_pm(target, "verify").returncode == 0


def test_install_py_of_a_newer_medium_upgrades_pm_and_an_older_one_keeps_it(bootstrapped, medium, medium_next,
                                                                             tmp_path, pm_version):
    target = copy_root(bootstrapped, tmp_path / "root")
    assert install(medium_next, target).returncode == 0
    assert installed(target)["pm"] == next_version(pm_version)
    older = install(medium, target)
    assert older.returncode == 0, older.stderr
    assert "newer than the medium's" in older.stdout
    assert installed(target)["pm"] == next_version(pm_version)


def upgrade_state(target, old, new):
    """After an interrupted self-upgrade: the root's pm runs, recovers, and is the old
    or the new version, whole."""
    listing = root_pm(target, "list-installed")
    assert listing.returncode == 0, listing.stderr
    version = re.search(r"^pm \((.*)\)$", listing.stdout, re.M).group(1)
    assert version in (old, new)
    assert root_pm(target, "--version").stdout.strip() == "pm " + version
    assert os.listdir(target / "usr/lib/pm") == [version]
    assert root_pm(target, "recover").returncode == 0      # a kill in the journal's write leaves journal.tmp
    assert staging_debris(target) == []
    verify = root_pm(target, "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    return version


def self_upgrade_steps(bootstrapped, medium_next, tmp_path):
    target = copy_root(bootstrapped, tmp_path / "count")
    counts = tmp_path / "counts.json"
    assert root_pm(target, "install", pm_package(medium_next), env={"PM_FAULT_COUNT": str(counts)}).returncode == 0
    return json.loads(counts.read_text())["total"]


def dense_steps(total: int, edge: int = 60, between: int = 100) -> list:
    """Every step of the first and last ``edge`` (the journal, the launcher's switch, the
    commit and the clean-up) and ``between`` steps spread evenly over the rest: the
    renames of the bundled libraries' files, which are all alike (cryptography makes them
    many: killing at each of them took half an hour)."""
    if total <= 2 * edge + between:
        return list(range(1, total + 1))
    stride = (total - 2 * edge) / between
    middle = {edge + 1 + int(i * stride) for i in range(between)}
    return sorted(set(range(1, edge + 1)) | middle | set(range(total - edge + 1, total + 1)))


@pytest.mark.parametrize("dense", [pytest.param(False, id="spread"), pytest.param(True, id="dense", marks=pytest.mark.slow)])
def test_a_self_upgrade_killed_at_any_step_leaves_a_pm_that_runs(bootstrapped, medium_next, tmp_path, pm_version,
                                                                dense):
    old, new = pm_version, next_version(pm_version)
    total = self_upgrade_steps(bootstrapped, medium_next, tmp_path)
    steps = dense_steps(total) if dense else sorted({1, total // 3, total // 2, 2 * total // 3, total - 1})
    seen = set()
    for n in steps:
        target = copy_root(bootstrapped, tmp_path / ("kill%d" % n))
        killed = root_pm(target, "install", pm_package(medium_next), env={"PM_FAULT": "kill:%d" % n})
        assert killed.returncode == -signal.SIGKILL, (n, killed.stderr)
        seen.add(upgrade_state(target, old, new))
        again = root_pm(target, "install", pm_package(medium_next))
        assert again.returncode == 0, again.stderr
        assert upgrade_state(target, old, new) == new
        shutil.rmtree(target)
    assert seen == {old, new}


@pytest.mark.parametrize("attempts", [pytest.param(3, id="few"), pytest.param(20, id="many", marks=pytest.mark.slow)])
def test_a_self_upgrade_killed_by_real_sigkills_leaves_a_pm_that_runs(bootstrapped, medium_next, tmp_path,
                                                                       pm_version, attempts):
    old, new = pm_version, next_version(pm_version)
    rng = random.Random(attempts)
    timing = copy_root(bootstrapped, tmp_path / "timing")
    started = time.monotonic()
    assert root_pm(timing, "install", pm_package(medium_next)).returncode == 0
    duration = time.monotonic() - started
    for attempt in range(attempts):
        target = copy_root(bootstrapped, tmp_path / ("sigkill%d" % attempt))
        proc = subprocess.Popen([PYTHON, str(target / "usr/bin/pm"), "--root", str(target), "install",
                                 str(pm_package(medium_next))], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, duration))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        upgrade_state(target, old, new)
        shutil.rmtree(target)
