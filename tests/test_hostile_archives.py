"""SPEC §15: a package is hostile until proven otherwise.

Every kind of hostile package below is a real file on disk.  Installing it gives exit 3
and one line on stderr (no traceback), and writes nothing at all — not inside the root
(payload, database, lock, journal), not beside it — whether the root is empty or already
has a package installed.  Each kind also names the reason pm must give, so that a
package refused for some other, accidental reason does not pass.
"""

import gzip
import os
import shutil
import stat
import zlib

import pytest

import pm as pm_module
from conftest import Dir, File, Link, PackageBuilder, exact_snapshot as tree, payload, run_pm
from rawtar import (BLOCK_DEVICE, CHAR_DEVICE, END, FIFO, archive, directory, gnu_long_link,
                    gnu_long_name, hard_link, header, manifest, member, padded, pax, symlink, with_checksum)

KINDS = {}


def kind(expect, prepare=None):
    """Register a hostile package builder: ``build(where) -> bytes | path``; ``expect`` is a
    piece of the one-line error; ``prepare(root, outside)`` sets up the root first."""
    def register(build):
        KINDS[build.__name__] = (build, expect, prepare)
        return build
    return register


class Where:
    """What a builder may use: a directory for package files and the test's directories."""

    def __init__(self, packages, root, outside, cache):
        self.packages, self.root, self.outside, self.cache = packages, root, outside, cache


def lua(extra="", package='"base"', version='"2.0"'):
    return "{ package = %s, version = %s, %s }" % (package, version, extra)


# -- traversal and absolute names ---------------------------------------------------

@kind("'..'")
def dotdot_after_data(where):
    return archive(manifest(), member("DATA/../../outside/pwned", "x"))


@kind("'..'")
def dotdot_at_the_start(where):
    return archive(manifest(), member("../outside/pwned", "x"))


@kind("'..'")
def dotdot_in_the_middle(where):
    return archive(manifest(), member("DATA/usr/../../../outside/pwned", "x"))


@kind("'..'")
def dotdot_after_dot_slash(where):
    return archive(manifest(), member("./DATA/../../outside/pwned", "x"))


@kind("'..'")
def dotdot_as_a_directory_entry(where):
    return archive(manifest(), directory("DATA/.."), member("DATA/../pwned", "x"))


@kind("'..'")
def dotdot_in_a_ustar_prefix(where):
    return archive(manifest(), member("outside/pwned", "x", prefix="DATA/../.."))


@kind("absolute member name")
def absolute_member_name(where):
    return archive(manifest(), member(str(where.outside / "pwned"), "x"))


@kind("absolute member name")
def absolute_data_member_name(where):
    return archive(manifest(), member("/DATA/etc/pwned", "x"))


@kind("absolute member name")
def absolute_control_member_name(where):
    return archive(member("/CONTROL/manifest", lua()))


# -- symbolic links -----------------------------------------------------------------

@kind("points outside the root")
def symlink_with_a_relative_target_escaping(where):
    return archive(manifest(), symlink("DATA/etc/escape", "../../outside"))


@kind("points outside the root")
def symlink_with_an_absolute_target_escaping(where):
    return archive(manifest(), symlink("DATA/escape", "/../outside"))


@kind("has '..' after a name")
def symlink_escaping_through_another_symlink_of_the_archive(where):
    # lexically "a/up/.." is "a"; but a/up is a link to "..", so the kernel reaches root/..
    return archive(manifest(), directory("DATA/a"), symlink("DATA/a/up", ".."),
                   symlink("DATA/escape", "a/up/../outside"))


@kind("has no target")
def symlink_with_an_empty_target(where):
    return archive(manifest(), symlink("DATA/empty", ""))


@kind("passes through the symbolic link")
def member_written_through_a_symlink_of_the_archive(where):
    return archive(manifest(), symlink("DATA/etc", "/tmp"), member("DATA/etc/pwned", "x"))


@kind("passes through the symbolic link")
def member_written_through_a_symlink_listed_after_it(where):
    return archive(manifest(), member("DATA/etc/pwned", "x"), symlink("DATA/etc", "/tmp"))


@kind("passes through the symbolic link")
def directory_created_through_a_symlink_of_the_archive(where):
    return archive(manifest(), directory("DATA/real"), symlink("DATA/alias", "real"),
                   directory("DATA/alias/sub"))


def symlink_in_root(root, outside):
    (root / "srv").symlink_to("../outside")


def absolute_symlink_in_root(root, outside):
    (root / "opt").mkdir()
    (root / "opt/app").symlink_to(outside)


@kind("is a symbolic link in the root", prepare=symlink_in_root)
def member_written_through_a_symlink_already_in_the_root(where):
    return archive(manifest(), member("DATA/srv/pwned", "x"))


@kind("is a symbolic link in the root", prepare=absolute_symlink_in_root)
def member_written_through_an_absolute_symlink_already_in_the_root(where):
    return archive(manifest(), member("DATA/opt/app/bin/pwned", "x"))


@kind("is a symbolic link in the root", prepare=symlink_in_root)
def directory_created_through_a_symlink_already_in_the_root(where):
    return archive(manifest(), directory("DATA/srv"), directory("DATA/srv/pwned"))


# -- hard links, devices, FIFOs, setuid -----------------------------------------------

@kind("is a hard link")
def hard_link_inside_the_package(where):
    return archive(manifest(), member("DATA/a", "x"), hard_link("DATA/b", "DATA/a"))


@kind("is a hard link")
def hard_link_escaping_the_root(where):
    return archive(manifest(), hard_link("DATA/passwd", "../../outside/secret"))


@kind("is a hard link")
def hard_link_to_an_absolute_path(where):
    return archive(manifest(), hard_link("DATA/shadow", str(where.outside / "secret")))


@kind("is a character device")
def character_device(where):
    return archive(manifest(), member("DATA/dev/mem", kind=CHAR_DEVICE, device=(1, 1)))


@kind("is a block device")
def block_device(where):
    return archive(manifest(), member("DATA/dev/sda", kind=BLOCK_DEVICE, device=(8, 0)))


@kind("is a FIFO")
def fifo(where):
    return archive(manifest(), member("DATA/run/pipe", kind=FIFO))


@kind("is a character device")
def character_device_in_control(where):
    return archive(manifest(), member("CONTROL/api-pre-install", kind=CHAR_DEVICE, device=(1, 3)))


@kind("setuid or setgid")
def setuid_file(where):
    return archive(manifest(), member("DATA/usr/bin/su", "x", mode=0o4755))


@kind("setuid or setgid")
def setgid_file(where):
    return archive(manifest(), member("DATA/usr/bin/wall", "x", mode=0o2755))


@kind("setuid or setgid")
def setgid_directory(where):
    return archive(manifest(), directory("DATA/srv/shared", mode=0o2775))


# -- duplicates -----------------------------------------------------------------------

@kind("duplicate member")
def duplicate_member_with_the_same_name(where):
    return archive(manifest(), member("DATA/etc/motd", "first"), member("DATA/etc/motd", "second"))


@kind("duplicate member")
def duplicate_member_with_and_without_dot_slash(where):
    return archive(manifest(), member("./DATA/etc/motd", "first"), member("DATA/etc/motd", "second"))


@kind("duplicate member")
def duplicate_member_as_file_and_directory(where):
    return archive(manifest(), member("DATA/etc/motd", "first"), directory("DATA/etc/motd/"))


@kind("duplicate member")
def duplicate_manifest(where):
    return archive(manifest(), manifest(lua(package='"other"')))


@kind("duplicate member")
def duplicate_member_through_a_pax_path(where):
    return archive(manifest(), member("DATA/etc/motd", "first"), pax(path="DATA/etc/motd"),
                   member("DATA/etc/harmless", "second"))


# -- control characters and encodings ----------------------------------------------------

@kind("control character")
def newline_in_a_name(where):
    return archive(manifest(), member("DATA/etc/mo\ntd", "x"))


@kind("control character")
def escape_in_a_name(where):
    return archive(manifest(), member("DATA/etc/\x1b[2Jmotd", "x"))


@kind("control character")
def delete_in_a_name(where):
    return archive(manifest(), member("DATA/etc/mo\x7ftd", "x"))


@kind("control character")
def c1_control_in_a_name(where):
    return archive(manifest(), member("DATA/etc/\u009b2Jmotd", "x"))


@kind("control character")
def nul_in_a_pax_path(where):
    return archive(manifest(), pax(path=b"DATA/etc/motd\0/../../../outside/pwned"), member("DATA/x", "x"))


@kind("control character")
def newline_in_a_link_target(where):
    return archive(manifest(), symlink("DATA/etc/link", "motd\nfake"))


@kind("control character")
def escape_in_a_link_target(where):
    return archive(manifest(), symlink("DATA/etc/link", "\x1b]0;pwned\x07"))


@kind("control character")
def delete_in_a_link_target(where):
    return archive(manifest(), symlink("DATA/etc/link", "mo\x7ftd"))


@kind("not UTF-8")
def non_utf8_name(where):
    return archive(manifest(), member(b"DATA/etc/\xff\xfe", "x"))


@kind("not UTF-8")
def non_utf8_link_target(where):
    return archive(manifest(), symlink("DATA/etc/link", b"\xc0\xaf\xc0\xaf"))


@kind("not UTF-8")
def non_utf8_gnu_long_name(where):
    return archive(manifest(), gnu_long_name(b"DATA/" + b"\xe9" * 120), member("DATA/x", "x"))


# -- pax and GNU extended headers ----------------------------------------------------

@kind("'..'")
def pax_path_with_traversal(where):
    return archive(manifest(), pax(path="DATA/../../outside/pwned"), member("DATA/harmless", "x"))


@kind("absolute member name")
def pax_path_absolute(where):
    return archive(manifest(), pax(path=str(where.outside / "pwned")), member("DATA/harmless", "x"))


@kind("points outside the root")
def pax_linkpath_escaping(where):
    return archive(manifest(), pax(linkpath="../../../outside"), symlink("DATA/etc/link", "motd"))


@kind("'..'")
def gnu_long_name_with_traversal(where):
    name = "DATA/" + "a/" * 60 + "../" * 62 + "outside/pwned"
    return archive(manifest(), gnu_long_name(name), member("DATA/harmless", "x"))


@kind("points outside the root")
def gnu_long_link_escaping(where):
    return archive(manifest(), gnu_long_link("../" * 40 + "outside"), symlink("DATA/etc/link", "motd"))


@kind("oversized extended header")
def oversized_pax_header(where):
    size = pm_module.MAX_EXTENDED_HEADER + 1
    return header("././@PaxHeader", b"x", size) + bytes(size + (-size % 512)) + archive(manifest())


@kind("modification time past the year 2242")
def pax_mtime_past_any_representable_time(where):
    return archive(manifest(), pax(mtime="99999999999999999999999999999"), member("DATA/x", "x"))


@kind("modification time past the year 2242")
def gnu_base_256_mtime_past_any_representable_time(where):
    block = bytearray(header("DATA/x", size=1))
    block[136:148] = b"\x80" + (2 ** 80).to_bytes(11, "big")
    return archive(manifest(), with_checksum(bytes(block)) + padded(b"x"))


@kind("extended header without an entry")
def pax_header_without_an_entry(where):
    return archive(manifest(), pax(path="DATA/x"))


@kind("bad pax header")
def malformed_pax_record(where):
    return archive(manifest(), member("././@PaxHeader", b"999 path=DATA/x\n", kind=b"x"),
                   member("DATA/x", "x"))


# -- manifests ----------------------------------------------------------------------

@kind("no CONTROL/manifest")
def missing_manifest(where):
    return archive(member("DATA/usr/bin/base", "x"))


@kind("no CONTROL/manifest")
def empty_archive(where):
    return END


@kind("CONTROL/manifest is not a regular file")
def manifest_that_is_a_directory(where):
    return archive(directory("CONTROL/manifest"))


@kind("symbolic link manifest -> ../../outside/manifest points outside the root")
def manifest_that_is_a_symlink(where):
    return archive(symlink("CONTROL/manifest", "../../outside/manifest"))


@kind("larger than %d bytes" % pm_module.MAX_MANIFEST_BYTES)
def oversized_manifest(where):
    return archive(manifest(lua() + "-- " + "x" * pm_module.MAX_MANIFEST_BYTES))


@kind("nested too deeply")
def deeply_nested_lua_manifest(where):
    return archive(manifest(lua("x = " + "{" * 10_000 + "}" * 10_000)))


@kind("nested too deeply")
def deeply_nested_json_manifest(where):
    return archive(manifest('{"package": "base", "version": "2.0", "x": %s%s}' % ("[" * 100_000, "]" * 100_000)))


@kind("nested too deeply")
def json_manifest_one_level_too_deep(where):
    depth = pm_module.MAX_MANIFEST_DEPTH
    return archive(manifest('{"package": "base", "version": "2.0", "x": %s%s}' % ("[" * depth, "]" * depth)))


@kind("too many values")
def manifest_with_too_many_values(where):
    return archive(manifest(lua("x = {%s}" % ("1," * pm_module.MAX_MANIFEST_ITEMS))))


@kind("string too long")
def manifest_with_an_oversized_string(where):
    return archive(manifest(lua('note = "%s"' % ("x" * (pm_module.MAX_MANIFEST_STRING + 1)))))


@kind("not UTF-8")
def manifest_that_is_not_utf8(where):
    return archive(manifest(b'{ package = "base\xff", version = "2.0" }'))


@kind("integer out of the 64-bit range")
def lua_manifest_with_an_integer_past_64_bits(where):
    return archive(manifest(lua("x = 0x10000000000000000")))


@kind("integer out of the 64-bit range")
def json_manifest_with_an_integer_past_64_bits(where):
    return archive(manifest('{"package": "base", "version": "2.0", "x": %d}' % 2 ** 64))


@kind("lone surrogate")
def json_manifest_with_a_lone_surrogate(where):
    return archive(manifest('{"package": "base", "version": "2.0", "description": "\\ud800"}'))


@kind("Lua code is not allowed in a manifest (found 'os')")
def lua_code_os_execute_as_a_value(where):
    return archive(manifest(lua('post = os.execute("touch ../outside/pwned")')))


@kind("Lua code is not allowed in a manifest (found 'os')")
def lua_code_instead_of_a_table(where):
    return archive(manifest('os.execute("touch ../outside/pwned")'))


@kind("Lua code is not allowed in a manifest (found 'tostring')")
def lua_code_function_call(where):
    return archive(manifest(lua(package='tostring("base")')))


@kind("expected ',' or '}'")
def lua_code_concatenation(where):
    return archive(manifest(lua(package='"ba" .. "se"')))


@kind("Lua code is not allowed in a manifest (found 'function')")
def lua_code_function_definition(where):
    return archive(manifest(lua('install = function() os.execute("id") end')))


@kind("Lua code is not allowed in a manifest (found 'return')")
def lua_code_return_statement(where):
    return archive(manifest("return " + lua()))


@kind("unexpected '('")
def lua_code_method_call(where):
    return archive(manifest(lua(version='("2.0"):rep(100000000)')))


@kind("Lua code is not allowed in a manifest (found 'os')")
def lua_code_in_a_table_key(where):
    return archive(manifest(lua('[os.getenv("HOME")] = 1')))


@kind("unexpected text after the table")
def lua_code_after_the_table(where):
    return archive(manifest(lua() + '\nos.execute("touch ../outside/pwned")'))


@kind("bad package name '../evil'")
def package_name_with_dotdot(where):
    return archive(manifest(lua(package='"../evil"')))


@kind("bad package name ''")
def empty_package_name(where):
    return archive(manifest(lua(package='""')))


@kind("bad package name 'usr/evil'")
def package_name_with_a_slash(where):
    return archive(manifest(lua(package='"usr/evil"')))


@kind("bad package name 'evil\\n'")
def package_name_with_a_newline(where):
    return archive(manifest(lua(package='"evil\\n"')))


@kind("bad version")
def malformed_version(where):
    return archive(manifest(lua(version='"2.0.0.0"')))


@kind("malformed version constraint '>=>1' for libfoo")
def malformed_dependency_constraint(where):
    return archive(manifest(lua('dependencies = { libfoo = ">=>1" }')))


@kind("bad config file path '/etc/../../x'")
def config_path_with_dotdot(where):
    return archive(manifest(lua('configFiles = { "/etc/../../x" }')))


@kind("bad config file path 'etc/x'")
def relative_config_path(where):
    return archive(manifest(lua('configFiles = { "etc/x" }')))


@kind("bad config file path '/../outside/'")
def config_directory_above_the_root(where):
    return archive(manifest(lua('configFiles = { "/../outside/" }')))


# -- member places -------------------------------------------------------------------

@kind("unexpected member etc/passwd")
def member_outside_control_and_data(where):
    return archive(manifest(), member("etc/passwd", "x"))


@kind("unexpected member CONTROL/scripts/x")
def member_below_control(where):
    return archive(manifest(), member("CONTROL/scripts/x", "x"))


@kind("DATA must be a directory")
def data_that_is_a_file(where):
    return archive(manifest(), member("DATA", "x"))


@kind("reserved prefix")
def member_with_the_staging_prefix(where):
    return archive(manifest(), member("DATA/usr/bin/.~pm.0123.1", "x"))


@kind("reserved prefix")
def directory_with_the_staging_prefix(where):
    return archive(manifest(), member("DATA/usr/.~pm.0123.1/x", "x"))


@kind("is below the file")
def member_below_a_file_member(where):
    return archive(manifest(), member("DATA/etc/motd", "x"), member("DATA/etc/motd/x", "y"))


@kind("component too long")
def name_component_too_long(where):
    return archive(manifest(), pax(path="DATA/" + "x" * 256), member("DATA/x", "x"))


@kind("component too long")
def name_component_too_long_in_bytes_but_short_in_characters(where):
    return archive(manifest(), pax(path="DATA/" + "\U0001F600" * 64), member("DATA/x", "x"))   # 256 bytes


@kind("member name too long")
def name_too_long(where):
    return archive(manifest(), pax(path="DATA/" + "d/" * 2100 + "x"), member("DATA/x", "x"))


@kind("unsupported member type 'S'")
def gnu_sparse_member(where):
    return archive(manifest(), member("DATA/sparse", kind=b"S"))


@kind("has data but is not a file")
def directory_with_data(where):
    return archive(manifest(), header("DATA/etc", b"5", 512) + bytes(512))


@kind("is larger than %d bytes" % pm_module.MAX_MEMBER_BYTES)
def member_declaring_a_size_past_the_bound(where):
    size = b"\x80" + (pm_module.MAX_MEMBER_BYTES + 1).to_bytes(11, "big")
    return archive(manifest(), header("DATA/huge", size_field=size))


# -- truncated and corrupt archives -----------------------------------------------------

def valid_tar():
    return archive(manifest(), member("DATA/usr/bin/base", bytes(range(256)) * 40))


@kind("truncated archive")
def truncated_in_a_member(where):
    return valid_tar()[:512 * 4 + 100]


@kind("truncated archive")
def truncated_in_a_large_member_that_is_skipped_by_seeking(where):
    large = bytes(range(256)) * (pm_module.COPY_CHUNK // 128)      # two chunks: skipped, not read
    return archive(manifest(), member("DATA/usr/bin/base", large))[:512 * 4 + pm_module.COPY_CHUNK]


@kind("truncated archive")
def truncated_in_a_header(where):
    return valid_tar()[:512 * 2 + 200]


@kind("no end-of-archive block")
def without_an_end_of_archive_block(where):
    return valid_tar()[:-len(END)]


@kind("truncated")
def gzip_truncated_in_the_data(where):
    data = gzip.compress(valid_tar())
    return data[:len(data) // 2]


@kind("truncated")
def gzip_without_its_trailer(where):
    return gzip.compress(valid_tar())[:-8]


@kind("corrupt compressed data")
def gzip_with_a_bad_checksum(where):
    data = bytearray(gzip.compress(valid_tar()))
    data[-8] ^= 0xFF
    return bytes(data)


@kind("truncated")
def zstd_truncated_in_the_data(where):
    import zstandard
    data = zstandard.ZstdCompressor().compress(valid_tar())
    return data[:len(data) // 2]


@kind("truncated")
def zstd_without_its_checksum(where):
    import zstandard
    return zstandard.ZstdCompressor(write_checksum=True, write_content_size=False).compress(valid_tar())[:-4]


@kind("bad tar header checksum")
def bad_header_checksum(where):
    return archive(manifest(), header("DATA/x", checksum=1234) + bytes(512))


@kind("corrupt archive")
def garbage_bytes(where):
    import random
    return random.Random(15).randbytes(8192)


@kind("bad size field")
def non_octal_size_field(where):
    return archive(manifest(), header("DATA/x", size_field=b"0000000009x\0") + bytes(512))


@kind("truncated archive")
def empty_file(where):
    return b""


@kind("not supported")
def bzip2_package(where):
    import bz2
    return bz2.compress(valid_tar())


# -- compression bombs ------------------------------------------------------------------

def bomb(where, name, compressor):
    """A valid package whose one file is zeros expanding well past pm's bound; written
    streaming and cached for the session."""
    path = where.cache / name
    if not path.exists():
        size = pm_module.EXPANSION_ALLOWANCE + (16 << 20)
        zeros = bytes(1 << 20)
        with open(str(path) + ".part", "wb") as f:
            f.write(compressor.compress(manifest() + header("DATA/zeros", size=size)))
            for _ in range(size >> 20):
                f.write(compressor.compress(zeros))
            f.write(compressor.compress(END))
            f.write(compressor.flush())
        os.rename(str(path) + ".part", path)
        assert path.stat().st_size * pm_module.MAX_EXPANSION_RATIO * 4 < size
    return path


@kind("expands past its bound")
def gzip_bomb(where):
    return bomb(where, "bomb.tar.gz", zlib.compressobj(9, zlib.DEFLATED, 31))


@kind("expands past its bound")
def zstd_bomb(where):
    import zstandard
    return bomb(where, "bomb.tar.zst", zstandard.ZstdCompressor(level=3).compressobj())


# -- pm's own state and cache directories (as dpkg refuses its admin directory) --------

@kind("pm's own directory /var/lib/pm")
def file_replacing_the_journal(where):
    return archive(manifest(), member("DATA/var/lib/pm/journal", "planted journal"))


@kind("pm's own directory /var/lib/pm")
def file_replacing_the_status(where):
    return archive(manifest(), member("DATA/var/lib/pm/status", "planted status"))


@kind("pm's own directory /var/lib/pm")
def file_in_the_file_lists(where):
    return archive(manifest(), member("DATA/var/lib/pm/files/base.0123456789ab", "planted list"))


@kind("pm's own directory /var/lib/pm")
def another_packages_kept_script(where):
    return archive(manifest(), member("DATA/var/lib/pm/scripts/other/api-pre-uninstall", "#!/bin/sh\n", mode=0o755))


@kind("pm's own directory /var/lib/pm")
def the_state_directory_itself(where):
    return archive(manifest(), directory("DATA/var/lib/pm"))


@kind("pm's own directory /var/lib/pm")
def the_oda_file(where):
    return archive(manifest(), member("DATA/var/lib/pm/oda.sqlite", "planted"))


@kind("pm's own directory /var/cache/pm")
def file_in_the_package_cache(where):
    return archive(manifest(), member("DATA/var/cache/pm/packages/src/other-1.0.tar", "planted"))


@kind("pm's own directory /var/lib/pm")
def symlink_in_the_state_directory(where):
    return archive(manifest(), symlink("DATA/var/lib/pm/lock", "../../../outside/secret"))


# -- a member where pm keeps the packaged version of a config file ---------------------

@kind("keeps the packaged version of the config file /etc/x.conf")
def member_named_like_a_kept_config_file(where):
    return archive(manifest('{ package = "base", version = "2.0", configFiles = { "/etc/x.conf" } }'),
                   member("DATA/etc/x.conf", "packaged"), member("DATA/etc/x.conf.pm-new", "another member"))


# -- not a regular file ---------------------------------------------------------------

@kind("is not a regular file")
def package_that_is_a_fifo(where):
    path = where.packages / "fifo.tar"
    os.mkfifo(path)
    return path


@kind("is not a regular file")
def package_that_is_a_directory(where):
    path = where.packages / "directory.tar"
    path.mkdir()
    return path


@kind("is not a regular file")
def package_that_is_a_character_device(where):
    return "/dev/zero"


# -- the tests --------------------------------------------------------------------------

BASE_FILES = {"/usr/bin/base": "base 1.0", "/etc/base.conf": "setting = 1", "/var/base": Dir(),
              "/usr/share/base/doc": "doc", "/usr/lib64": Link("lib"), "/usr/lib/libbase.so": "so"}


@pytest.fixture(scope="session")
def installed_root(tmp_path_factory):
    """A root with the package ``base`` 1.0 installed by pm, to copy for each test."""
    top = tmp_path_factory.mktemp("installed")
    root = top / "root"
    root.mkdir()
    package = PackageBuilder(top / "packages").build("base", "1.0", BASE_FILES, config=["/etc/base.conf"])
    result = run_pm(root, "install", package)
    assert result.code == 0, result
    return root


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("hostile-cache")


@pytest.fixture(params=["empty-root", "installed-root"])
def where(request, tmp_path, installed_root, cache):
    root, outside, packages = tmp_path / "root", tmp_path / "outside", tmp_path / "packages"
    if request.param == "empty-root":
        root.mkdir()
    else:
        shutil.copytree(installed_root, root, symlinks=True)
    outside.mkdir()
    (outside / "secret").write_text("secret")
    packages.mkdir()
    return Where(packages, root, outside, cache)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_a_hostile_package_is_refused_with_one_line_and_nothing_written(name, where, tmp_path):
    build, expect, prepare = KINDS[name]
    if prepare:
        prepare(where.root, where.outside)
    package = build(where)
    if isinstance(package, bytes):
        path = where.packages / (name + ".tar")
        path.write_bytes(package)
        package = path
    before = tree(tmp_path)
    result = run_pm(where.root, "install", package, timeout=60)
    assert result.code == 3, result
    assert result.out == ""
    lines = result.err.split("\n")
    assert len(lines) == 2 and lines[1] == "", result
    assert lines[0].startswith("pm: error: "), result
    assert expect in lines[0], result
    assert not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in lines[0]), result
    assert tree(tmp_path) == before


def test_the_corpus_has_at_least_thirty_kinds():
    assert len(KINDS) >= 30


def test_allow_setuid_accepts_setuid_and_setgid_members(pm, root, tmp_path):
    package = tmp_path / "setuid.tar"
    package.write_bytes(archive(manifest(), member("DATA/usr/bin/su", "su", mode=0o4755),
                                member("DATA/usr/bin/wall", "wall", mode=0o2755),
                                directory("DATA/srv/shared", mode=0o2775)))
    pm("install", package, expect=3)
    pm("install", "--allow-setuid", package)
    assert stat.S_IMODE(os.lstat(root / "usr/bin/su").st_mode) == 0o4755
    assert stat.S_IMODE(os.lstat(root / "usr/bin/wall").st_mode) == 0o2755
    assert stat.S_IMODE(os.lstat(root / "srv/shared").st_mode) == 0o2775
    pm("verify")


def test_a_file_replaces_a_symlink_already_in_the_root_without_writing_through_it(pm, build, root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "motd").write_text("outside")
    (root / "etc").mkdir()
    (root / "etc/motd").symlink_to("../../outside/motd")
    package = build("base", "1.0", {"/etc/motd": "packaged"})
    pm("install", package, expect=1)                        # exists on disk, owned by nobody
    pm("install", "--force-overwrite", package)
    assert not (root / "etc/motd").is_symlink()
    assert (root / "etc/motd").read_text() == "packaged"
    assert (outside / "motd").read_text() == "outside"


@pytest.mark.parametrize("entry", [Link("/opt"), File("x")], ids=["symlink", "file"])
@pytest.mark.parametrize("below", [File("x"), Dir()], ids=["file", "directory"])
def test_a_member_below_another_packages_symlink_or_file_of_the_same_command_is_refused(
        pm, build, root, tmp_path, entry, below):
    first = build("alias", "1.0", {"/srv": entry})
    second = build("payload", "1.0", {"/srv/sub": below})
    result = pm("install", first, second, expect=1)
    assert "needs a directory at /srv, where alias has a file or symbolic link" in result.err
    assert payload(root) == {}


def test_a_directory_where_another_package_of_the_same_command_has_a_symlink_is_refused(pm, build, root, tmp_path):
    first = build("alias", "1.0", {"/srv": Link("/opt")})
    second = build("payload", "1.0", {"/srv": Dir()})
    pm("install", first, second, expect=1)
    assert payload(root) == {}


def zstd_streamed(data):
    """As ``tar c | zstd`` writes it: no content size in the frame, a checksum."""
    import zstandard
    compressor = zstandard.ZstdCompressor(write_checksum=True).compressobj()
    return compressor.compress(data) + compressor.flush()


def zstd_frames(data):
    """As pzstd writes it: several frames, one after the other."""
    import zstandard
    half = len(data) // 2
    return zstandard.ZstdCompressor().compress(data[:half]) + zstandard.ZstdCompressor().compress(data[half:])


def zstd_with_a_skippable_frame(data):
    import zstandard
    return b"\x50\x2a\x4d\x18" + (4).to_bytes(4, "little") + b"note" + zstandard.ZstdCompressor().compress(data)


@pytest.mark.parametrize("container", [None, gzip.compress, zstd_streamed, zstd_frames, zstd_with_a_skippable_frame],
                         ids=["plain", "gzip", "zstd-streamed", "zstd-frames", "zstd-skippable-frame"])
def test_legitimate_packages_in_every_container_still_install(pm, build, root, container):
    path = build("base", "1.0", BASE_FILES, config=["/etc/base.conf"])
    if container:
        path.write_bytes(container(path.read_bytes()))
    pm("install", path)
    assert (root / "usr/bin/base").read_text() == "base 1.0"
    assert os.readlink(root / "usr/lib64") == "lib"


def test_an_archive_that_changes_between_the_check_and_the_install_is_refused(build):
    large = "x" * 300000       # past the read buffer: the second pass reads the file again
    checked = build("base", "1.0", {"/usr/a": large, "/usr/z": "first"})
    other = build("base", "1.0", {"/usr/a": large, "/usr/y": "other"})
    package = pm_module.Package(str(checked))
    try:
        with open(checked, "r+b") as f:         # the same file, rewritten in place
            f.write(other.read_bytes())
            f.truncate()
        with pytest.raises(pm_module.InvalidInput, match="changed while it was being installed"):
            for member, chunks in package.stream():
                for _ in chunks:
                    pass
    finally:
        package.close()


@pytest.mark.parametrize("compress", [None, "gz", "zst"])
def test_an_archive_read_twice_unchanged_streams_every_member_with_its_data(build, compress):
    long_name = "/usr/share/" + "n" * 150 + "/file"        # GNU long-name headers before it
    path = build("base", "1.0", {"/usr/a": "first", "/usr/lib/b": "b" * 70000, long_name: "long",
                                 "/usr/c": Link("a")}, compress=compress)
    package = pm_module.Package(str(path))
    try:
        streamed = [(m.path, m.kind, b"".join(chunks)) for m, chunks in package.stream()]
    finally:
        package.close()
    files = {p: data for p, kind, data in streamed if kind == "f"}
    assert files == {"/usr/a": b"first", "/usr/lib/b": b"b" * 70000, long_name: b"long"}
    assert [p for p, kind, _ in streamed if kind == "l"] == ["/usr/c"]
