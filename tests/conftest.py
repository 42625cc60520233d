"""Shared fixtures: a package builder, a pm runner and tree snapshots.

Tests read like SPEC.md: build packages declaratively, run pm as a user would (a real
process on a real root), then state rules about the result.
"""

import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PM = REPO / "pm.py"
sys.path.insert(0, str(REPO))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running; run when PM_TEST_ALL=1 (CI does)")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("PM_TEST_ALL") == "1":
        return
    skip = pytest.mark.skip(reason="slow test; set PM_TEST_ALL=1 to run it (CI does)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# Property tests: a moderate number of examples by default, many more in slow runs
# (PM_TEST_ALL=1, as CI does).  No deadline: the machines are shared and loaded.
try:
    from hypothesis import settings as _hypothesis_settings
except ImportError:                      # only the property tests need hypothesis
    pass
else:
    _hypothesis_settings.register_profile("pm-default", max_examples=100, deadline=None)
    _hypothesis_settings.register_profile("pm-thorough", max_examples=1000, deadline=None)
    _hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or (
        "pm-thorough" if os.environ.get("PM_TEST_ALL") == "1" else "pm-default"))


# -- running pm ---------------------------------------------------------------------

class Result:
    def __init__(self, proc):
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    @property
    def json(self):
        return json.loads(self.out)

    def __repr__(self):
        return "Result(code=%d, out=%r, err=%r)" % (self.code, self.out[-2000:], self.err[-2000:])


def run_pm(root, *args, env=None, input=None, timeout=300, cwd=None):
    """Run ``pm --root ROOT ARGS`` as a user would; never accept a traceback."""
    command = [sys.executable, str(PM)]
    if root is not None:
        command += ["--root", str(root)]
    command += [str(a) for a in args]
    full_env = dict(os.environ)
    full_env.pop("PM_ROOT", None)
    full_env.update(env or {})
    # stdin is never the developer's terminal: pm asks before acting only on a terminal
    stdin = subprocess.DEVNULL if input is None else None
    proc = subprocess.run(command, capture_output=True, text=True, env=full_env, input=input,
                          stdin=stdin, timeout=timeout, cwd=cwd)
    result = Result(proc)
    assert "Traceback" not in result.err and "internal error" not in result.err, result
    return result


@pytest.fixture
def pm(root):
    """``pm(*args)`` runs pm on the test's root; ``pm(*args, expect=N)`` checks the exit code."""
    def run(*args, expect=0, env=None):
        result = run_pm(root, *args, env=env)
        if expect is not None:
            assert result.code == expect, result
        return result
    return run


@pytest.fixture
def root(tmp_path):
    path = tmp_path / "root"
    path.mkdir()
    return path


# -- building packages --------------------------------------------------------------

class File:
    def __init__(self, content=b"", mode=0o644):
        self.content = content.encode() if isinstance(content, str) else content
        self.mode = mode


class Dir:
    def __init__(self, mode=0o755):
        self.mode = mode


class Link:
    def __init__(self, target):
        self.target = target


def lua_literal(value, indent=""):
    """A Lua table literal for a manifest (OpenOS serialization style)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, dict):
        items = ['["%s"] = %s' % (k, lua_literal(v)) for k, v in value.items()]
        return "{" + ", ".join(items) + "}"
    raise TypeError(value)


def manifest_text(manifest, syntax="lua"):
    if syntax == "json":
        return json.dumps(manifest)
    fields = ",\n  ".join("%s = %s" % (k, lua_literal(v)) if k.isidentifier() else
                          '["%s"] = %s' % (k, lua_literal(v)) for k, v in manifest.items())
    return "{\n  %s,\n}\n" % fields


def sums_text(files):
    """CONTROL/sums as repoPackager writes it: ``SHA256 MODE SIZE /path`` per file."""
    import hashlib
    lines = []
    for target, entry in sorted(files.items()):
        if isinstance(entry, (Dir, Link)):
            continue
        entry = entry if isinstance(entry, File) else File(entry)
        lines.append("%s %04o %d %s\n" % (hashlib.sha256(entry.content).hexdigest(), entry.mode,
                                           len(entry.content), target))
    return "".join(lines)


def add_member(tar, name, entry, mtime=1_700_000_000):
    info = tarfile.TarInfo(name)
    info.mtime = mtime
    if isinstance(entry, Dir):
        info.type, info.mode = tarfile.DIRTYPE, entry.mode
        tar.addfile(info)
    elif isinstance(entry, Link):
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry.target, 0o777
        tar.addfile(info)
    else:
        if not isinstance(entry, File):
            entry = File(entry)
        info.size, info.mode = len(entry.content), entry.mode
        tar.addfile(info, io.BytesIO(entry.content))


class PackageBuilder:
    """``build(name, version, files={path: content|File|Dir|Link}, config=[...], ...)``
    writes a package archive and returns its path (``sums=True``: with CONTROL/sums, as
    repoPackager writes packages)."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def manifest(self, name, version, config=None, deps=None, conflicts=None, provides=None, **extra):
        manifest = {"manifestVersion": "1.0", "package": name, "version": version}
        if deps is not None:
            manifest["dependencies"] = deps
        if conflicts is not None:
            manifest["conflicts"] = conflicts
        if provides is not None:
            manifest["provides"] = provides
        if config is not None:
            manifest["configFiles"] = config
        manifest.update(extra)
        return manifest

    def build(self, name, version="1.0", files=None, config=None, deps=None, conflicts=None,
              provides=None, scripts=None, syntax="lua", dot_prefix=False, compress=None,
              filename=None, manifest=None, sums=False, **extra):
        manifest = manifest if manifest is not None else self.manifest(
            name, version, config, deps, conflicts, provides, **extra)
        self.count += 1
        filename = filename or "%s-%s-%d.tar" % (name, version, self.count)
        path = self.directory / filename
        raw = io.BytesIO()
        prefix = "./" if dot_prefix else ""
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
            text = manifest if isinstance(manifest, (str, bytes)) else manifest_text(manifest, syntax)
            add_member(tar, prefix + "CONTROL/manifest", File(text))
            for script, content in (scripts or {}).items():
                add_member(tar, prefix + "CONTROL/" + script, File(content, 0o755))
            if sums:            # True: the files' own; a string: that text
                add_member(tar, prefix + "CONTROL/sums", File(sums if isinstance(sums, str) else sums_text(files or {})))
            for target, entry in sorted((files or {}).items()):
                add_member(tar, prefix + "DATA" + target, entry)
        data = raw.getvalue()
        if compress == "gz":
            import gzip
            data = gzip.compress(data)
        elif compress == "zst":
            import zstandard
            data = zstandard.ZstdCompressor().compress(data)
        path.write_bytes(data)
        return path


@pytest.fixture
def build(tmp_path):
    return PackageBuilder(tmp_path / "packages").build


# -- looking at trees ---------------------------------------------------------------

def snapshot(top):
    """Everything under ``top``: {relative path: (kind, mode, sha256 or link target)}."""
    top = Path(top)
    result = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            rel = str(path.relative_to(top))
            if stat.S_ISLNK(st.st_mode):
                result[rel] = ("l", 0, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                result[rel] = ("d", stat.S_IMODE(st.st_mode), None)
            else:
                result[rel] = ("f", stat.S_IMODE(st.st_mode), hashlib.sha256(path.read_bytes()).hexdigest())
    return result


def exact_snapshot(top):
    """Everything under ``top`` and ``top`` itself, with contents and modification times
    (so that a file written and removed again still shows in its directory's time);
    FIFOs and devices are listed, never opened."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [""] + dirnames + filenames:
            path = os.path.join(dirpath, name) if name else dirpath
            if not name and dirpath != str(top):
                continue
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    content = hashlib.sha256(f.read()).hexdigest()
            else:
                content = None
            result[os.path.relpath(path, top)] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode),
                                                  st.st_size, st.st_mtime_ns, content)
    return result


def payload(top):
    """The snapshot without pm's own database directory."""
    return {k: v for k, v in snapshot(top).items() if not k.startswith("var")}


def read(root, path):
    return (Path(root) / path.lstrip("/")).read_text()


def exists(root, path):
    return os.path.lexists(Path(root) / path.lstrip("/"))


# -- repositories -------------------------------------------------------------------

def _repo_packager():
    import importlib.util
    spec = importlib.util.spec_from_file_location("repoPackager", REPO / "tools" / "repoPackager.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Repository:
    """A repository directory built by tools/repoPackager.py (run in-process):
    ``add(*package_files_or_source_trees)``, ``use(root)`` lists it in the root's
    etc/pm/sources.list (as ``url``, default the directory itself)."""

    packager = None

    def __init__(self, path):
        self.path = Path(path)

    def add(self, *sources, compress=False):
        if Repository.packager is None:
            Repository.packager = _repo_packager()
        args = ["-d", str(self.path)] + (["-z"] if compress else []) + [str(s) for s in sources]
        assert Repository.packager.main(args) == 0
        return self

    def use(self, root, url=None, options=""):
        sources = Path(root) / "etc/pm/sources.list"
        sources.parent.mkdir(parents=True, exist_ok=True)
        with open(sources, "a") as f:
            f.write("%s%s\n" % (options + " " if options else "", url or self.path))
        return self

    def entry(self, name, version):
        listed = json.loads((self.path / "index.json").read_text())["packages"]
        return next(e for e in listed if (e["manifest"]["package"], e["manifest"]["version"]) == (name, version))

    def file(self, name, version):
        return self.path / self.entry(name, version)["filename"]


@pytest.fixture
def repository(tmp_path):
    """``repository()`` makes a new repository directory under the test's tmp_path."""
    count = [0]

    def make(name=None):
        count[0] += 1
        return Repository(tmp_path / (name or "repo%d" % count[0]))
    return make


# -- an HTTP server for remote sources ------------------------------------------------

class RepositoryServer:
    """A threaded HTTP server on 127.0.0.1 (ephemeral port) serving a directory, with
    Range requests.  ``requests`` records ``(path, Range header)``; ``drop[path] = n``
    sends the first n bytes of that file once, then drops the connection;
    ``ranges = False`` makes it ignore Range headers, as simple servers do."""

    def __init__(self, directory):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        server = self
        self.directory = Path(directory)
        self.requests, self.drop, self.ranges = [], {}, True

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                import urllib.parse
                path = urllib.parse.unquote(self.path.split("?", 1)[0])
                server.requests.append((path, self.headers.get("Range")))
                target = server.directory / path.lstrip("/")
                if ".." in path.split("/") or not target.is_file():
                    self.send_error(404)
                    return
                data = target.read_bytes()
                start = 0
                wanted = self.headers.get("Range", "")
                if server.ranges and wanted.startswith("bytes=") and wanted.endswith("-"):
                    start = int(wanted[len("bytes="):-1])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", "bytes */%d" % len(data))
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = server.drop.pop(path, None)
                if cut is not None:
                    import socket
                    self.wfile.write(body[:max(0, cut - start)])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.httpd.server_address[1]

    def fetched(self, suffix):
        """The requests for paths ending in ``suffix``."""
        return [r for r in self.requests if r[0].endswith(suffix)]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    """``serve(directory)`` starts a RepositoryServer; all are stopped after the test."""
    servers = []

    def start(directory):
        servers.append(RepositoryServer(directory))
        return servers[-1]
    yield start
    for server in servers:
        server.close()
