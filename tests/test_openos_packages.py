"""Packages in the original OpenOS pm format install as they are (SPEC §3, §4)."""

import io
import tarfile

from conftest import read, exists

OPENOS_MANIFEST = b"""{
  manifestVersion = "1.0",
  package = "example",
  dependencies = { ["neededpackage"] = "oppm" },
  configFiles = { "/etc/example/" }, --list configurations files that need to be left on update
  name = "Example Package",
  version = "1.0.0",
  description = 'Package description with an escaped \\"quote\\"',
  authors = "AR2000AR",
  note = [[Extra bit
of information]],
  hidden = false,
  repo = "https://github.com/AR2000AR/openComputers_codes"
}
"""


def openos_tar(path, manifest, files):
    """A tar as OpenOS tools write it: no ./ prefix, no directory entries."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in [("CONTROL/manifest", manifest)] + [("DATA" + p, d) for p, d in files.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_an_openos_package_installs_as_it_is(pm, root, tmp_path):
    needed = openos_tar(tmp_path / "needed.tar", b'{package="neededpackage",version="oppm"}', {"/lib/needed.lua": b"x"})
    example = openos_tar(tmp_path / "example.tar", OPENOS_MANIFEST,
                         {"/bin/example.lua": b"print('hi')", "/etc/example/example.cfg": b"{}"})
    result = pm("install", example, needed)
    assert "neededpackage is unversioned (oppm)" not in result.err   # "oppm" means any version
    assert read(root, "/bin/example.lua") == "print('hi')"
    info = pm("--json", "info", "example").json
    assert info["manifest"]["note"] == "Extra bit\nof information"
    assert info["manifest"]["description"] == 'Package description with an escaped "quote"'
    pm("uninstall", "example")
    assert exists(root, "/etc/example/example.cfg"), "a configFiles directory keeps what is below it"
    assert not exists(root, "/bin/example.lua")


def test_members_with_a_dot_slash_prefix_install_the_same(pm, build, root):
    pm("install", build("dotted", "1.0", {"/usr/share/d": "d"}, dot_prefix=True))
    assert read(root, "/usr/share/d") == "d"


def test_a_json_manifest_works_like_a_lua_one(pm, build, root):
    pm("install", build("j", "1.0", {"/j": "j"}, syntax="json", deps={}))
    assert pm("list-installed").out == "j (1.0)\n"


def test_info_reads_a_package_file(pm, build):
    result = pm("info", build("foo", "1.2.3", {"/a": "x"}, description="a foo"))
    assert "Package:      foo" in result.out
    assert "Description:  a foo" in result.out
