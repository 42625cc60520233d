"""SPEC §3: whatever repoPackager writes, the original OpenOS pm and pm-get read the way pm
reads it.  tests/openos_reader.lua, run by a real Lua 5.3, reads a tar as the original's
tar library does (the name field or a GNU long-name record, never the ustar prefix; types
0 and 5 only) and loads each manifest with load("return " .. text)."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import pm
import pm as pm_module     # for tests that take the pm fixture
from conftest import REPO, read

PACKAGER = REPO / "tools" / "repoPackager.py"
HARNESS = REPO / "tests" / "openos_reader.lua"
LUA = shutil.which("lua5.3")
needs_lua = pytest.mark.skipif(LUA is None, reason="no lua5.3 interpreter (Debian package lua5.3; .ci/run "
                                                   "installs it): the original OpenOS reader cannot be run")


def package(*args, expect=0):
    env = dict(os.environ)
    env.pop("SOURCE_DATE_EPOCH", None)
    proc = subprocess.run([sys.executable, str(PACKAGER)] + [str(a) for a in args], capture_output=True,
                          text=True, env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == expect, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def tree(top, manifest, files=(), links=()):
    """A package source tree; ``manifest`` is the text of its manifest file (or a dict, as JSON)."""
    top = Path(top)
    (top / "DATA").mkdir(parents=True)
    text = manifest if isinstance(manifest, (str, bytes)) else json.dumps(manifest)
    (top / "manifest").write_bytes(text if isinstance(text, bytes) else text.encode())
    for path, content in dict(files).items():
        target = top / "DATA" / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    for path, link in dict(links).items():
        target = top / "DATA" / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(link, target)
    return top


class Reading:
    """What the original OpenOS reader made of a package (or a Lua table file)."""

    def __init__(self, proc):
        self.code, self.error = proc.returncode, None
        self.headers, self.members, self.manifest, self.value = [], {}, None, None
        for line in proc.stdout.splitlines():
            fields = line.split("\t")
            if fields[0] == "header":
                self.headers.append((fields[1], fields[2], int(fields[3])))
            elif fields[0] == "member":
                self.members[fields[2]] = (fields[1], bytes.fromhex(fields[3]))
            elif fields[0] == "manifest":
                self.manifest = json.loads(fields[1])
            elif fields[0] == "error":
                self.error = fields[1]
            else:
                self.value = json.loads(line)
        assert proc.returncode in (0, 3), proc.stderr

    @property
    def files(self):
        """{absolute path: bytes} of what the original installs: DATA/ files."""
        return {name[len("DATA"):]: data for name, (kind, data) in self.members.items()
                if kind == "file" and name.startswith("DATA/")}


def original_reads(path):
    return Reading(subprocess.run([LUA, str(HARNESS), "tar", str(path)], capture_output=True, text=True))


def lua_loads(text):
    """load("return " .. text) as the original unserializes: the value (JSON-like), or the
    error message as an exception."""
    import tempfile
    with tempfile.NamedTemporaryFile("wb", suffix=".lua") as f:
        f.write(text if isinstance(text, bytes) else text.encode())
        f.flush()
        reading = Reading(subprocess.run([LUA, str(HARNESS), "load", f.name], capture_output=True, text=True))
    if reading.error:
        raise ValueError(reading.error)
    return reading.value


def as_lua_reads_it(value):
    """Lua has one empty table for [] and {}; the harness writes it as {}."""
    if isinstance(value, list):
        return [as_lua_reads_it(v) for v in value] if value else {}
    if isinstance(value, dict):
        return {k: as_lua_reads_it(v) for k, v in value.items()}
    return value


def pm_files(path):
    """{absolute path: bytes} of the files pm installs from the package."""
    files = {}
    with tarfile.open(path) as tar:
        for info in tar:
            if info.isfile() and info.name.startswith("DATA/"):
                files[info.name[len("DATA"):]] = tar.extractfile(info).read()
    return files


def assert_original_reads_as_pm(path):
    """The original reads the package's manifest and files exactly as pm does, and every
    header is one its reader handles (no ustar prefix, no pax)."""
    reading = original_reads(path)
    assert reading.error is None, reading.error
    package = pm.Package(str(path), allow_setuid=True)
    package.close()
    assert reading.manifest == as_lua_reads_it(package.manifest)
    assert reading.files == pm_files(path)
    assert {kind for kind, _, _ in reading.headers} <= {"file", "directory", "long name"}
    with open(path, "rb") as f:
        data = f.read()
    for offset in range(0, len(data), 512):
        block = data[offset:offset + 512]
        if block[257:262] == b"ustar":
            assert block[345:500].strip(b"\0") == b"", "a name in the ustar prefix field"
            assert block[156:157] not in (b"x", b"g"), "a pax header"
    return reading


# -- every package of examples/ ------------------------------------------------------------

@needs_lua
@pytest.mark.parametrize("options", [[], ["--openos", "--warn"]])
def test_the_original_reads_every_example_package_as_pm_does(tmp_path, options):
    package("-d", tmp_path / "repo", *options, REPO / "examples")
    built = sorted((tmp_path / "repo").glob("*.tar"))
    assert len(built) == len([p for p in (REPO / "examples").iterdir() if p.is_dir()])
    for path in built:
        assert_original_reads_as_pm(path)


@needs_lua
def test_a_json_source_manifest_is_written_as_a_lua_table_the_original_loads(tmp_path):
    manifest = {"package": "j", "version": "1.0", "description": "quote \" backslash \\ tab \t é ✓",
                "dependencies": {"b": ">=1.0"}, "configFiles": [], "authors": ["a", "b"],
                "x-extra": {"goto": 1, "end": 2, "a-b": True, "": 0, "1st": -1.5, "big": 1e300, "and": [1, 2]}}
    package("-d", tmp_path / "repo", tree(tmp_path / "src", manifest, {"/j": "j"}))
    reading = assert_original_reads_as_pm(tmp_path / "repo/j-1.0.tar")
    assert reading.manifest["x-extra"] == {"goto": 1, "end": 2, "a-b": True, "": 0, "1st": -1.5, "big": 1e300,
                                           "and": [1, 2]}
    text = reading.members["CONTROL/manifest"][1]
    assert b'["goto"] = 1' in text and b'["a-b"] = true' in text and not text.lstrip().startswith(b'{"')


def test_the_manifest_written_is_the_same_whichever_syntax_the_source_has(tmp_path):
    manifest = {"package": "s", "version": "1.0", "dependencies": {"b": "oppm"}, "hidden": False}
    lua = '{ version = "1.0", package = [[s]], hidden = false, dependencies = { ["b"] = "oppm" } }'
    package("-d", tmp_path / "a", tree(tmp_path / "json", manifest))
    package("-d", tmp_path / "b", tree(tmp_path / "lua", lua))
    assert (tmp_path / "a/s-1.0.tar").read_bytes() == (tmp_path / "b/s-1.0.tar").read_bytes()


# -- long names ------------------------------------------------------------------------------

def path_of_length(length):
    """An absolute path whose archive name DATA/... is ``length`` bytes, in parts of at
    most 200 bytes (NAME_MAX is 255)."""
    remaining = length - len("DATA/")
    parts = []
    while remaining > 0:
        part = min(200, remaining) if remaining != 201 else 199
        if remaining - part == 1:
            part -= 2
        parts.append(part)
        remaining -= part + 1
    assert sum(parts) + len(parts) - 1 + len("DATA/") == length
    return "/" + "/".join(chr(ord("a") + i) * n for i, n in enumerate(parts))


LENGTHS = [99, 100, 101, 155, 255, 256, 1000]


@needs_lua
@pytest.mark.parametrize("length", LENGTHS)
def test_a_name_of_any_length_reaches_the_original_and_pm_alike(tmp_path, pm, root, length):
    path = path_of_length(length)
    assert len(("DATA" + path).encode()) == length
    package("-d", tmp_path / "repo", tree(tmp_path / "src", {"package": "long", "version": "1.0"}, {path: "x"}))
    built = tmp_path / "repo/long-1.0.tar"
    reading = assert_original_reads_as_pm(built)
    assert reading.files == {path: b"x"}
    with open(built, "rb") as f:
        data = f.read()
    if length > 100:
        assert b"././@LongLink" in data, "a GNU long-name record"
    pm("install", built)
    assert read(root, path) == "x"


def test_pm_reads_gnu_long_names_and_long_links(tmp_path, pm, root):
    long_dir = "/" + "d" * 120 + "/" + "e" * 120
    source = tree(tmp_path / "src", {"package": "gl", "version": "1.0"}, {long_dir + "/f": "f"},
                  links={"/l": "." + long_dir + "/f"})
    package("-d", tmp_path / "repo", source)
    with tarfile.open(tmp_path / "repo/gl-1.0.tar") as tar:
        assert all(not info.pax_headers for info in tar)
    pm("install", tmp_path / "repo/gl-1.0.tar")
    assert read(root, long_dir + "/f") == "f"
    assert os.readlink(root / "l") == "." + long_dir + "/f"


# -- what the original cannot represent ----------------------------------------------------------

def test_openos_mode_refuses_a_symbolic_link_and_writes_nothing(tmp_path):
    source = tree(tmp_path / "src", {"package": "sl", "version": "1.0"}, {"/a": "a"}, links={"/b": "a"})
    result = package("-d", tmp_path / "repo", "--openos", source, expect=1)
    assert "/b is a symbolic link" in result.stderr and "--warn" in result.stderr
    assert list((tmp_path / "repo").iterdir()) == []


@needs_lua
def test_openos_mode_with_warn_builds_a_symbolic_link_and_the_lua_index_leaves_it_out(tmp_path):
    source = tree(tmp_path / "src", {"package": "sl", "version": "1.0"}, {"/a": "a"}, links={"/b": "a"})
    result = package("-d", tmp_path / "repo", "--openos", "--warn", source)
    assert "warning:" in result.stderr and "symbolic link" in result.stderr
    assert "the OpenOS index (manifest) leaves out sl.tar" in result.stderr
    reading = original_reads(tmp_path / "repo/sl.tar")
    assert ("symlink", "DATA/b", 0) in reading.headers and "/b" not in reading.files   # why: it is dropped
    assert lua_loads((tmp_path / "repo/manifest").read_bytes()) == {}
    assert [e["filename"] for e in json.loads((tmp_path / "repo/index.json").read_text())["packages"]] == ["sl.tar"]


def test_without_openos_mode_a_symbolic_link_is_built_and_left_out_of_the_lua_index(tmp_path, pm, root):
    source = tree(tmp_path / "src", {"package": "sl", "version": "1.0"}, {"/a": "a"}, links={"/b": "a"})
    result = package("-d", tmp_path / "repo", source)
    assert "leaves out sl-1.0.tar: /b is a symbolic link" in result.stderr.replace("DATA/b", "/b")
    assert pm_module.LuaIndexParser((tmp_path / "repo/manifest").read_text()).parse() == {}
    pm("install", tmp_path / "repo/sl-1.0.tar")
    assert os.readlink(root / "b") == "a"


@pytest.mark.parametrize("constraint", ["^1.0", "~1.2", ">=1.0,<2.0", "1.0 || 2.0", "<2.0", "*", "1.*", "!=1.0"])
def test_openos_mode_refuses_a_constraint_outside_the_originals_vocabulary(tmp_path, constraint):
    source = tree(tmp_path / "src", {"package": "c", "version": "1.0", "dependencies": {"b": constraint}})
    result = package("-d", tmp_path / "repo", "--openos", source, expect=1)
    assert "it depends on b %r" % constraint in result.stderr
    plain = package("-d", tmp_path / "plain", source)
    assert "leaves out c-1.0.tar: it depends on b" in plain.stderr
    assert pm.LuaIndexParser((tmp_path / "plain/manifest").read_text()).parse() == {}


@needs_lua
@pytest.mark.parametrize("constraint", ["oppm", "=1.0", ">=1.0", "1.0"])
def test_openos_mode_accepts_the_originals_constraints(tmp_path, constraint):
    source = tree(tmp_path / "src", {"package": "c", "version": "1.0", "dependencies": {"b": constraint}})
    result = package("-d", tmp_path / "repo", "--openos", source)
    assert "warning" not in result.stderr and "leaves out" not in result.stderr
    index = lua_loads((tmp_path / "repo/manifest").read_bytes())
    assert index["c"]["dependencies"] == {"b": constraint} and index["c"]["archiveName"] == "c.tar"
    assert_original_reads_as_pm(tmp_path / "repo/c.tar")


def test_openos_mode_refuses_zstd_and_warn_builds_it_out_of_the_lua_index(tmp_path):
    pytest.importorskip("zstandard")
    source = tree(tmp_path / "src", {"package": "z", "version": "1.0"}, {"/z": "z"})
    result = package("-d", tmp_path / "repo", "--openos", "-z", source, expect=1)
    assert "zstd-compressed" in result.stderr
    assert list((tmp_path / "repo").iterdir()) == []
    warned = package("-d", tmp_path / "repo", "--openos", "--warn", "-z", source)
    assert "warning:" in warned.stderr and "leaves out z.tar.zst" in warned.stderr
    assert pm.LuaIndexParser((tmp_path / "repo/manifest").read_text()).parse() == {}


def test_without_openos_mode_zstd_packages_are_left_out_of_the_lua_index_with_a_note(tmp_path):
    pytest.importorskip("zstandard")
    package("-d", tmp_path / "repo", tree(tmp_path / "plain", {"package": "p", "version": "1.0"}))
    result = package("-d", tmp_path / "repo", "-z", tree(tmp_path / "src", {"package": "z", "version": "1.0"}))
    assert "leaves out z-1.0.tar.zst: it is zstd-compressed" in result.stderr
    lua = pm.LuaIndexParser((tmp_path / "repo/manifest").read_text()).parse()
    assert sorted(lua) == ["p"]
    listed = json.loads((tmp_path / "repo/index.json").read_text())["packages"]
    assert sorted(e["filename"] for e in listed) == ["p-1.0.tar", "z-1.0.tar.zst"], "pm's own indexes list both"


def test_the_lua_index_lists_the_newest_version_the_original_can_read(tmp_path):
    pytest.importorskip("zstandard")
    package("-d", tmp_path / "repo", tree(tmp_path / "a", {"package": "p", "version": "1.0"}))
    package("-d", tmp_path / "repo", "-z", tree(tmp_path / "b", {"package": "p", "version": "2.0"}))
    lua = pm.LuaIndexParser((tmp_path / "repo/manifest").read_text()).parse()
    assert lua["p"]["version"] == "1.0" and lua["p"]["archiveName"] == "p-1.0.tar"


def test_openos_mode_names_packages_as_the_upstream_installer_expects(tmp_path):
    for name in ("pm", "pm_get", "libtar"):
        tree(tmp_path / "src" / name, {"package": name, "version": "1.0", "dependencies": {"pm": "oppm"}
                                       if name != "pm" else {}}, {"/usr/lib/%s.lua" % name: name})
    package("-d", tmp_path / "packages", "--openos", tmp_path / "src")
    assert sorted(p.name for p in (tmp_path / "packages").glob("*.tar")) == ["libtar.tar", "pm.tar", "pm_get.tar"]
    lua = pm.LuaIndexParser((tmp_path / "packages/manifest").read_text()).parse()
    assert {n: e["archiveName"] for n, e in lua.items()} == {"pm": "pm.tar", "pm_get": "pm_get.tar",
                                                             "libtar": "libtar.tar"}


def test_openos_mode_a_new_version_replaces_the_old_one_under_the_same_file_name(tmp_path):
    package("-d", tmp_path / "repo", "--openos", tree(tmp_path / "a", {"package": "p", "version": "1.0"}))
    package("-d", tmp_path / "repo", "--openos", tree(tmp_path / "b", {"package": "p", "version": "1.1"}))
    listed = json.loads((tmp_path / "repo/index.json").read_text())["packages"]
    assert [(e["filename"], e["manifest"]["version"]) for e in listed] == [("p.tar", "1.1")]
    assert pm.Package(str(tmp_path / "repo/p.tar")).version.text == "1.1"


def test_warn_without_openos_is_a_usage_error(tmp_path):
    package("-d", tmp_path / "repo", "--warn", tree(tmp_path / "a", {"package": "p", "version": "1.0"}), expect=2)


# -- byte-order marks and keywords: pm accepts a manifest only when Lua loads it -----------------

@needs_lua
def test_a_source_manifest_with_a_bom_is_written_without_one(tmp_path):
    for syntax, text in (("lua", '{package = "b", version = "1.0"}'), ("json", '{"package": "b", "version": "1.0"}')):
        source = tree(tmp_path / syntax, b"\xef\xbb\xbf" + text.encode())
        package("-d", tmp_path / syntax / "repo", source)
        reading = assert_original_reads_as_pm(tmp_path / syntax / "repo/b-1.0.tar")
        assert not reading.members["CONTROL/manifest"][1].startswith(b"\xef\xbb\xbf")


def openos_package(path, manifest):
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("CONTROL/manifest")
        info.size = len(manifest)
        import io
        tar.addfile(info, io.BytesIO(manifest))
    return path


@needs_lua
def test_pm_refuses_a_package_whose_manifest_starts_with_a_bom_as_the_original_does(tmp_path, pm):
    path = openos_package(tmp_path / "b.tar", b'\xef\xbb\xbf{package = "b", version = "1.0"}')
    result = pm("install", path, expect=3)
    assert "byte-order mark" in result.err
    assert original_reads(path).error is not None


LITERALS_LUA_REFUSES = ['{goto = 1}', '{end = 1}', '{package = "p", and = 1}', '{while = 1}', '{a = "x\ry"}',
                        '\ufeff{a = 1}', '{a = 1} return', '{["a"] = 1, function = 2}']
LITERALS_LUA_LOADS = ['{["goto"] = 1}', '{["end"] = 1, ends = 2, _end = 3, END = 4}', "{a = 'x\\\ry'}",
                      '{a = [[x\r\ny]]}', '{--c\ra = 1}', '{--[==[ c ]==] a = 1; [ [[k]] ] = 2,}', '{a = "\\z  \n  b"}']


@pytest.mark.parametrize("text", LITERALS_LUA_REFUSES)
def test_pm_refuses_what_lua_refuses(text):
    with pytest.raises(pm.InvalidInput):
        pm.LuaLiteralParser(text).parse()
    if LUA is not None:
        with pytest.raises(ValueError):
            lua_loads(text)


@needs_lua
@pytest.mark.parametrize("text", LITERALS_LUA_LOADS)
def test_pm_reads_what_lua_loads_as_lua_reads_it(text):
    assert as_lua_reads_it(pm.LuaLiteralParser(text).parse()) == lua_loads(text)


def lua_loads_each(texts, tmp_path):
    """load("return " .. text) of each text in one Lua process: values, or ValueError."""
    batch = tmp_path / "texts"
    batch.write_bytes(b"".join(t.encode() + b"\0" for t in texts))
    proc = subprocess.run([LUA, str(HARNESS), "loads", str(batch)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == len(texts)
    return [ValueError(line) if line.startswith("error\t") else json.loads(line) for line in lines]


@needs_lua
def test_pm_accepting_a_random_lua_manifest_implies_lua_loads_it_alike(tmp_path):
    import random
    chooser = random.Random(15)
    words = sorted(pm.LUA_KEYWORDS) + ["a", "b_1", "pkg", "x-y", "1a", ""]
    texts = []
    for _ in range(500):
        fields = []
        for _ in range(chooser.randint(0, 4)):
            key = chooser.choice(words)
            spelled = key if chooser.random() < 0.5 else '["%s"]' % key
            value = chooser.choice(['1', '"s"', "true", "{1, 2}", "[[long]]", "-0.5", "{k = 1}", "nil"])
            fields.append("%s = %s" % (spelled, value))
        texts.append("{" + ", ".join(fields) + "}")
    accepted = []
    for text in texts:
        try:
            accepted.append((text, pm.LuaLiteralParser(text).parse()))
        except pm.InvalidInput:
            pass                     # refused by pm: whatever Lua does is fine
    for (text, value), loaded in zip(accepted, lua_loads_each([t for t, _ in accepted], tmp_path)):
        assert as_lua_reads_it(value) == loaded, text


TOKENS = ["{", "}", "=", ",", ";", "[", "]", '"a"', "'b'", "[[x]]", "[==[y]==]", "1", "-1", "0x10", "1e5", ".5",
          "5.", "true", "false", "nil", "a", "end", "goto", "_x", "--c\n", "--[[c]]", " ", "\n", "\r", '"\\z  "',
          '"\\x41"', '"\\065"', '"\\u{41}"', '"a\rb"', "-", "--", '"\\\n"', "#", "..", "1.5e", "0x", '"\\q"',
          "\\", '"', "'", "[=[", "\f", "\v", "--[", "\r\n", "0x1p4", "1e+", "9223372036854775807",
          "9223372036854775808", '"\\256"',
          "[ [[k]] ]", '["k"]', "[1]", "[-1]", "[1.5]", "\ufeff", "nil,", '["1"]', "[2]"]


@needs_lua
def test_whatever_token_soup_pm_accepts_lua_loads_as_the_same_value(tmp_path):
    import random
    chooser = random.Random(1515)
    accepted = []
    for _ in range(20000):
        text = "{" + "".join(chooser.choice(TOKENS) for _ in range(chooser.randint(0, 8))) + "}"
        try:
            accepted.append((text, pm.LuaLiteralParser(text).parse()))
        except pm.InvalidInput:
            pass
    assert len(accepted) > 1000
    for (text, value), loaded in zip(accepted, lua_loads_each([t for t, _ in accepted], tmp_path)):
        assert not isinstance(loaded, ValueError), (text, loaded)
        assert as_lua_reads_it(value) == loaded, text


# -- pm-get's sources.list ----------------------------------------------------------------------

def test_a_github_tree_url_is_read_from_its_raw_files_as_pm_get_reads_it():
    source = pm.Source("https://github.com/AR2000AR/openComputers_codes/tree/master/packages")
    assert source.location == "https://raw.githubusercontent.com/AR2000AR/openComputers_codes/master/packages"
    assert pm.Source("https://example.org/tree/x").location == "https://example.org/tree/x"


def test_pm_reads_pm_gets_sources_list_and_its_lua_manifest_index(tmp_path, pm, root, serve):
    # a repository as pm-get's upstream publishes it: NAME.tar files and a Lua manifest
    # index without sizes or checksums
    repo = tmp_path / "upstream"
    package("-d", repo, "--openos", tree(tmp_path / "src", {"package": "tool", "version": "1.0"}, {"/bin/tool": "t"}))
    for name in ("index.msgpack.zst", "index.json"):
        (repo / name).unlink()
    (repo / "manifest").write_text('{\n  ["tool"] = {\n    ["package"] = "tool",\n    ["version"] = "1.0",\n'
                                   '    ["archiveName"] = "tool.tar"\n  }\n}\n')
    server = serve(repo)
    (root / "etc/pm").mkdir(parents=True)
    (root / "etc/pm/sources.list").write_text(server.url + "\n")      # pm-get's format: one URL a line
    refused = pm("update", expect=3)
    assert "no size and sha256" in refused.err and "sources.list.d" in refused.err
    assert "sources from %s: %s" % (root / "etc/pm/sources.list", server.url) in refused.out
    (root / "etc/pm/sources.list.d").mkdir()
    (root / "etc/pm/sources.list.d/openos.list").write_text("[trusted=yes] %s\n" % server.url)
    updated = pm("update")
    assert "%s: 1 package" % server.url in updated.out
    assert "sources from %s" % (root / "etc/pm/sources.list.d/openos.list") in updated.out
    pm("install", "tool")
    assert read(root, "/bin/tool") == "t"


def test_a_repository_repopackager_writes_works_from_pm_gets_sources_list(tmp_path, pm, root, serve):
    repo = tmp_path / "repo"
    package("-d", repo, "--openos", tree(tmp_path / "src", {"package": "tool", "version": "1.0"}, {"/bin/tool": "t"}))
    (repo / "index.msgpack.zst").unlink()
    (repo / "index.json").unlink()            # only the Lua index, as pm-get reads it
    server = serve(repo)
    (root / "etc/pm").mkdir(parents=True)
    (root / "etc/pm/sources.list").write_text(server.url + "\n")
    pm("update")
    pm("install", "tool")
    assert read(root, "/bin/tool") == "t"


# -- package files added as they are ------------------------------------------------------------

def foreign_package(path, manifest, names, fmt=tarfile.USTAR_FORMAT):
    import io
    with tarfile.open(path, "w", format=fmt) as tar:
        for name, data in [("CONTROL/manifest", manifest)] + [(n, b"x") for n in names]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_an_added_package_with_a_json_manifest_is_left_out_of_the_lua_index_and_refused_by_openos(tmp_path):
    path = foreign_package(tmp_path / "j.tar", b'{"package": "j", "version": "1.0"}', ["DATA/j"])
    result = package("-d", tmp_path / "repo", path)
    assert "leaves out j-1.0.tar: its CONTROL/manifest is not a Lua table literal" in result.stderr
    assert pm.LuaIndexParser((tmp_path / "repo/manifest").read_text()).parse() == {}
    package("-d", tmp_path / "openos", "--openos", path, expect=1)


def test_an_added_package_named_with_the_ustar_prefix_is_left_out_of_the_lua_index(tmp_path):
    long_name = "DATA/" + "p" * 90 + "/" + "q" * 40
    path = foreign_package(tmp_path / "u.tar", b'{package = "u", version = "1.0"}', [long_name])
    with open(path, "rb") as f:
        assert b"p" * 90 in f.read(2048)[1024 + 345:1024 + 500], "the ustar prefix field holds the directory"
    result = package("-d", tmp_path / "repo", path)
    assert "is named with the ustar prefix field" in result.stderr
    assert pm.LuaIndexParser((tmp_path / "repo/manifest").read_text()).parse() == {}


def test_an_added_package_with_a_pax_header_is_left_out_of_the_lua_index(tmp_path):
    path = foreign_package(tmp_path / "x.tar", b'{package = "x", version = "1.0"}',
                           ["DATA/" + "/".join(["x" * 100] * 3)], fmt=tarfile.PAX_FORMAT)
    result = package("-d", tmp_path / "repo", path)
    assert "pax header" in result.stderr
    assert pm.LuaIndexParser((tmp_path / "repo/manifest").read_text()).parse() == {}
