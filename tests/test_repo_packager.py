"""SPEC §3 and §10: tools/repoPackager.py builds reproducible packages and the indexes of
a repository, from package source trees and from the OpenOS layouts (NAME.manifest with
NAME.files.json, oppm programs.cfg); its packages install with pm."""

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import pm
from conftest import REPO, read, exists

PACKAGER = REPO / "tools" / "repoPackager.py"


def package(*args, env=None, expect=0, cwd=None):
    """Run repoPackager as an author would."""
    full_env = dict(os.environ)
    full_env.pop("SOURCE_DATE_EPOCH", None)
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, str(PACKAGER)] + [str(a) for a in args], capture_output=True,
                          text=True, env=full_env, cwd=cwd)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == expect, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def tree(top, manifest, files=None, scripts=None):
    """A package source tree: manifest, DATA/, CONTROL/."""
    top = Path(top)
    (top / "DATA").mkdir(parents=True)
    (top / "manifest").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    for path, content in (files or {}).items():
        target = top / "DATA" / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    for name, content in (scripts or {}).items():
        (top / "CONTROL").mkdir(exist_ok=True)
        (top / "CONTROL" / name).write_text(content)
    return top


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# -- reproducibility -------------------------------------------------------------------

@pytest.mark.parametrize("compress", [False, True], ids=["tar", "tar.zst"])
def test_two_builds_of_the_same_sources_are_byte_identical(tmp_path, compress):
    flags = ["-z"] if compress else []
    package("-d", tmp_path / "one", *flags, REPO / "examples")
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(REPO / "examples"), str(copy)], check=True)
    for path in copy.rglob("*"):                 # other times and other umask bits
        os.utime(path, (1_234_567_890, 1_234_567_890), follow_symlinks=False)
        if path.is_file():
            path.chmod(path.stat().st_mode | 0o020)
    package("-d", tmp_path / "two", *flags, copy)
    one = {p.name: p.read_bytes() for p in (tmp_path / "one").iterdir()}
    two = {p.name: p.read_bytes() for p in (tmp_path / "two").iterdir()}
    suffix = ".tar.zst" if compress else ".tar"
    assert sorted(n for n in one if n.endswith(suffix)) == ["hello-2.1.0" + suffix, "libgreet-1.2.0" + suffix,
                                                             "motd-1.0" + suffix]
    assert one == two


def test_packages_are_sorted_ustar_without_dot_slash_owned_by_root_with_normal_modes(tmp_path):
    source = tree(tmp_path / "src", {"package": "tool", "version": "1.0"},
                  {"/usr/bin/tool": "#!/bin/sh\n", "/usr/share/tool/b": "b", "/usr/share/tool/a": "a",
                   "/usr/share/tool-data/x": "x"}, {"api-post-install": "#!/bin/sh\ntrue\n"})
    (source / "DATA/usr/bin/tool").chmod(0o700)
    (source / "DATA/usr/share/tool/a").chmod(0o600)
    (source / "DATA/usr/share/tool/deep").mkdir()
    (source / "DATA/usr/share/tool/deep").chmod(0o700)
    package("-d", tmp_path / "repo", source, env={"SOURCE_DATE_EPOCH": "1700000000"})
    with tarfile.open(tmp_path / "repo/tool-1.0.tar") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == ["CONTROL", "CONTROL/api-post-install", "CONTROL/manifest", "CONTROL/sums", "DATA", "DATA/usr",
                     "DATA/usr/bin", "DATA/usr/bin/tool", "DATA/usr/share", "DATA/usr/share/tool",
                     "DATA/usr/share/tool/a", "DATA/usr/share/tool/b", "DATA/usr/share/tool/deep",
                     "DATA/usr/share/tool-data", "DATA/usr/share/tool-data/x"]
    raw = (tmp_path / "repo/tool-1.0.tar").read_bytes()
    assert raw[257:263] == b"ustar\x00" and len(raw) % 10240 == 0
    modes = {m.name: m.mode for m in members}
    assert modes["DATA/usr/bin/tool"] == 0o755 and modes["DATA/usr/share/tool/a"] == 0o644
    assert modes["DATA/usr/share/tool/deep"] == 0o755
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {(0, 0, "", "", 1700000000)}


def test_packages_record_each_files_sha256_mode_and_size_in_control_sums(tmp_path):
    import hashlib
    source = tree(tmp_path / "src", {"package": "tool", "version": "1.0"},
                  {"/usr/bin/tool": "#!/bin/sh\n", "/usr/share/tool/a b": "with a space", "/usr/lib/l": "l"})
    (source / "DATA/usr/bin/tool").chmod(0o755)
    os.symlink("tool", source / "DATA/usr/bin/alias")
    package("-d", tmp_path / "repo", source)
    with tarfile.open(tmp_path / "repo/tool-1.0.tar") as tar:
        sums = tar.extractfile("CONTROL/sums").read().decode()

    def line(path, data, mode):
        return "%s %04o %d %s" % (hashlib.sha256(data).hexdigest(), mode, len(data), path)
    assert sums.splitlines() == [line("/usr/bin/tool", b"#!/bin/sh\n", 0o755), line("/usr/lib/l", b"l", 0o644),
                                 line("/usr/share/tool/a b", b"with a space", 0o644)]


def test_a_path_too_long_for_ustar_still_builds_and_installs(tmp_path, pm, root):
    deep = "/opt/" + "/".join(["d" * 60] * 5) + "/file"
    source = tree(tmp_path / "src", {"package": "deep", "version": "1.0"}, {deep: "x"})
    package("-d", tmp_path / "repo", source)
    pm("install", tmp_path / "repo/deep-1.0.tar")
    assert read(root, deep) == "x"


# -- indexes ---------------------------------------------------------------------------

def test_the_three_indexes_list_every_package_with_its_size_and_sha256(tmp_path):
    repo = tmp_path / "repo"
    built = package("-d", repo, REPO / "examples")
    listed = json.loads((repo / "index.json").read_text())
    assert listed["format"] == 1
    assert sorted(e["manifest"]["package"] for e in listed["packages"]) == ["hello", "libgreet", "motd"]
    for entry in listed["packages"]:
        assert entry["size"] == (repo / entry["filename"]).stat().st_size
        assert entry["sha256"] == digest(repo / entry["filename"])
    import msgpack
    import zstandard
    packed = msgpack.unpackb(zstandard.ZstdDecompressor().decompress((repo / "index.msgpack.zst").read_bytes()))
    assert packed == listed
    lua = pm.LuaIndexParser((repo / "manifest").read_text()).parse()
    # hello depends on libgreet "^1.0", which pm-get cannot read: the OpenOS index leaves it out
    assert sorted(lua) == ["libgreet", "motd"]
    assert "leaves out hello-2.1.0.tar: it depends on libgreet '^1.0'" in built.stderr
    assert lua["motd"]["archiveName"] == "motd-1.0.tar"
    assert lua["motd"]["sha256"] == digest(repo / "motd-1.0.tar")
    assert lua["motd"]["configFiles"] == ["/etc/motd.d/"]


def test_adding_packages_to_a_repository_keeps_the_others(tmp_path):
    repo = tmp_path / "repo"
    package("-d", repo, REPO / "examples/libgreet")
    package("-d", repo, tree(tmp_path / "lib2", {"package": "libgreet", "version": "2.0"}, {"/usr/lib/g2": "2"}))
    package("-d", repo, REPO / "examples/hello")
    listed = json.loads((repo / "index.json").read_text())
    assert [(e["manifest"]["package"], e["manifest"]["version"]) for e in listed["packages"]] == [
        ("hello", "2.1.0"), ("libgreet", "1.2.0"), ("libgreet", "2.0")]
    lua = pm.LuaIndexParser((repo / "manifest").read_text()).parse()
    assert lua["libgreet"]["version"] == "2.0", "the OpenOS index lists the newest version"


def test_rebuilding_a_version_replaces_its_entry(tmp_path):
    repo = tmp_path / "repo"
    source = tree(tmp_path / "src", {"package": "x", "version": "1.0"}, {"/x": "one"})
    package("-d", repo, source)
    (source / "DATA/x").write_text("two")
    package("-d", repo, source)
    listed = json.loads((repo / "index.json").read_text())["packages"]
    assert len(listed) == 1 and listed[0]["sha256"] == digest(repo / "x-1.0.tar")


def test_a_bad_source_writes_nothing(tmp_path):
    repo = tmp_path / "repo"
    package("-d", repo, REPO / "examples")
    before = {p.name: p.read_bytes() for p in repo.iterdir()}
    good = tree(tmp_path / "srcs/good", {"package": "good", "version": "1.0"}, {"/g": "g"})
    tree(tmp_path / "srcs/bad", '{ package = "bad", version = "1.0", dependencies = { x = "<<1" } }', {"/b": "b"})
    result = package("-d", repo, good.parent, expect=3)
    assert "malformed version constraint '<<1'" in result.stderr
    assert {p.name: p.read_bytes() for p in repo.iterdir()} == before


def test_help_explains_sources_outputs_and_reproducibility():
    text = package("-h").stdout
    for words in ("programs.cfg", ".files.json", "index.msgpack.zst", "index.json", "SOURCE_DATE_EPOCH",
                  "-z", "ustar", "sha256", "are kept"):
        assert words in text, words


# -- its packages install with pm --------------------------------------------------------

def test_the_example_packages_install_by_file_and_by_name(tmp_path, pm, root):
    repo = tmp_path / "repo"
    package("-d", repo, "-z", REPO / "examples")
    (root / "etc/pm").mkdir(parents=True)
    (root / "etc/pm/sources.list").write_text("%s\n" % repo)
    pm("install", "hello", "motd")
    assert pm("list-installed").out == "hello (2.1.0)\nlibgreet (1.2.0)\nmotd (1.0)\n"
    assert read(root, "/etc/hello.conf") == (REPO / "examples/hello/DATA/etc/hello.conf").read_text()
    pm("verify")


def test_a_package_file_is_added_as_it_is(tmp_path, build):
    made = build("ready", "3.1", {"/r": "r"}, compress="gz")
    repo = tmp_path / "repo"
    package("-d", repo, made)
    assert (repo / "ready-3.1.tar.gz").read_bytes() == made.read_bytes()
    assert json.loads((repo / "index.json").read_text())["packages"][0]["manifest"]["package"] == "ready"


# -- OpenOS layouts --------------------------------------------------------------------------

def test_an_openos_manifest_with_files_json_builds_an_installable_package(tmp_path, pm, root):
    project = tmp_path / "bank_api"
    (project / "lib").mkdir(parents=True)
    (project / "lib/bank_api.lua").write_text("return {}")
    (project / "man").mkdir()
    (project / "man/bank_api").write_text("manual")
    (project / "etc/bank/api").mkdir(parents=True)
    (project / "etc/bank/api/api.conf").write_text("server=1")
    (project / "bank_api.manifest").write_text(
        '{\n\t["manifestVersion"] = "1.0",\n\t["package"] = "bank_api",\n\t["version"] = "1.1.0",\n'
        '\t["dependencies"] = {\n\t\t["osinetwork"] = "oppm"\n\t}\n}')
    (project / "bank_api.files.json").write_text(json.dumps(
        {"files": [["lib", "/usr/lib/"], ["man", "/usr/man/"]], "config": [["etc/bank/api/api.conf", "/etc/bank/api/"]]}))
    repo = tmp_path / "repo"
    package("-d", repo, tmp_path)
    built = pm("--json", "info", repo / "bank_api-1.1.0.tar").json
    assert built["manifest"]["configFiles"] == ["/etc/bank/api/api.conf"]
    with tarfile.open(repo / "bank_api-1.1.0.tar") as tar:
        assert tar.extractfile("CONTROL/manifest").read().startswith(b"{\n  configFiles = ")
    pm("install", "--no-deps", repo / "bank_api-1.1.0.tar")
    assert read(root, "/usr/lib/bank_api.lua") == "return {}"
    assert read(root, "/usr/man/bank_api") == "manual"
    assert read(root, "/etc/bank/api/api.conf") == "server=1"
    pm("uninstall", "bank_api")
    assert exists(root, "/etc/bank/api/api.conf"), "a config file stays"


PROGRAMS_CFG = """{
  ["song"] = {
    files = {
      ["master/song/song.lua"] = "/lib",
      ["master/song/song-example1.lua"] = "/bin",
      [":master/song/data"] = "//usr/share/song",
      ["?master/song/song.cfg"] = "//etc",
    },
    dependencies = {
      ["libnote"] = "/lib",
    },
    name = "Song API",
    description = "An API to play whole songs using computer.beep",
    authors = "Vexatos",
    repo = "tree/master/song",
  },
  ["libnote"] = {
    files = {
      ["master/libnote/note.lua"] = "/lib",
    },
    hidden = true,
    version = "1.2",
  },
}
"""


def oppm_checkout(top):
    files = {"song/song.lua": "song", "song/song-example1.lua": "example", "song/song.cfg": "volume=3",
             "song/data/tunes/a.txt": "a", "song/data/b.txt": "b", "libnote/note.lua": "note"}
    for path, content in files.items():
        (top / path).parent.mkdir(parents=True, exist_ok=True)
        (top / path).write_text(content)
    (top / "programs.cfg").write_text(PROGRAMS_CFG)
    return top


def test_an_oppm_programs_cfg_builds_installable_packages(tmp_path, pm, root):
    checkout = oppm_checkout(tmp_path / "checkout")
    repo = tmp_path / "repo"
    package("-d", repo, "-p", checkout / "programs.cfg")
    info = pm("--json", "info", repo / "song-oppm.tar").json["manifest"]
    assert info["dependencies"] == {"libnote": "oppm"} and info["configFiles"] == ["/etc/song.cfg"]
    assert info["version"] == "oppm" and info["name"] == "Song API"
    (root / "etc/pm").mkdir(parents=True)
    (root / "etc/pm/sources.list").write_text("file://%s\n" % repo)
    pm("install", "song")
    assert read(root, "/usr/lib/song.lua") == "song"
    assert read(root, "/usr/bin/song-example1.lua") == "example"
    assert read(root, "/usr/share/song/tunes/a.txt") == "a" and read(root, "/usr/share/song/b.txt") == "b"
    assert read(root, "/etc/song.cfg") == "volume=3"
    assert read(root, "/usr/lib/note.lua") == "note"
    assert pm("list-installed").out == "libnote (1.2)\nsong (oppm)\n"
    assert "libnote" not in pm("search").out, "a hidden package is not offered"


def test_a_folder_holding_programs_cfg_is_searched_like_any_folder(tmp_path):
    checkout = oppm_checkout(tmp_path / "checkout")
    package(cwd=checkout)
    assert sorted(p.name for p in (checkout / "packages").glob("*.tar")) == ["libnote-1.2.tar", "song-oppm.tar"]


def test_a_remote_file_in_programs_cfg_is_refused_with_its_name(tmp_path):
    (tmp_path / "programs.cfg").write_text('{ x = { files = { ["https://example.org/x.lua"] = "/bin" } } }')
    result = package("-d", tmp_path / "repo", tmp_path / "programs.cfg", expect=1)
    assert "https://example.org/x.lua is a URL" in result.stderr
