"""SPEC §15 as properties: valid packages mutated at random (bytes flipped, headers
rewritten with valid checksums, blocks moved, cut, compressed before or after) are read
by pm.Package with only InvalidInput or success — never another exception, never a
write — and installing one gives exit 0 with a verified root, or exit 3 with nothing
written."""

import contextlib
import gzip
import io
import os
import tarfile
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

import pm
from conftest import exact_snapshot
from rawtar import with_checksum


def base_archive(tar_format, syntax):
    """A valid package using much of the format: a manifest in either syntax with a config
    file, a script, directories, files, a symlink, names long enough for extended headers."""
    manifest = ('{"package": "base", "version": "1.0", "configFiles": ["/etc/base.conf"]}' if syntax == "json" else
                '{ package = "base", version = "1.0", configFiles = { "/etc/base.conf" } }')
    long_dir = "DATA/usr/share/" + "long-directory-name-" * 4
    members = [("CONTROL/manifest", manifest.encode(), 0o644), ("CONTROL/api-post-install", b"#!/bin/sh\n", 0o755),
               ("DATA/etc/", None, 0o755), ("DATA/etc/base.conf", b"setting = 1\n", 0o644),
               ("DATA/usr/bin/base", bytes(range(256)) * 3, 0o755), (long_dir + "/", None, 0o755),
               (long_dir + "/" + "file-with-a-long-name-" * 3, b"x" * 700, 0o644),
               ("DATA/usr/bin/alias", "base", 0o777), ("DATA/usr/lib/libbase.so.1", b"\x7fELF" + bytes(600), 0o644)]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tar_format) as tar:
        for name, content, mode in members:
            info = tarfile.TarInfo(name.rstrip("/"))
            info.mode, info.mtime = mode, 1_700_000_000
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return raw.getvalue()


BASES = {(f, s): base_archive(f, s) for f in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT)
         for s in ("lua", "json")}


def header_offsets(data):
    """Offsets of the header blocks of a tar (extended headers included)."""
    offsets, pos = [], 0
    while pos + 512 <= len(data) and data[pos:pos + 512] != bytes(512):
        offsets.append(pos)
        try:
            size = int(data[pos + 124:pos + 136].split(b"\0")[0].strip() or b"0", 8)
        except ValueError:                  # an earlier edit broke it: later headers are unknown
            break
        pos += 512 + -(-size // 512) * 512
    return offsets


FIELDS = {"name": (0, 100), "mode": (100, 8), "size": (124, 12), "mtime": (136, 12), "type": (156, 1),
          "linkname": (157, 100), "magic": (257, 8), "prefix": (345, 155)}
FIELD_VALUES = st.one_of(
    st.binary(max_size=12),
    st.sampled_from([b"../", b"/", b"DATA/", b"DATA/../x", b"CONTROL/manifest", b"DATA/.~pm.x", b"\0", b"0", b"1",
                     b"2", b"3", b"5", b"6", b"7", b"L", b"K", b"x", b"g", b"S", b"00000000777\0", b"0004755\0",
                     b"77777777777\0", b"\x80\x00\x00\x00\x00\x00\x10\x00\x00\x00\x00\x00", b"ustar\x0000",
                     b"ustar  \0", b"\xff" * 8, b"DATA/usr/bin/base", b"../../outside", b"DATA/etc/base.conf/x"]))


@st.composite
def mutations(draw, data):
    """One edit of ``data``: a byte, a range, a block, or a header field (checksum fixed)."""
    kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "field", "field", "field",
                                 "copy-block", "swap-blocks"]))
    n = max(len(data), 1)
    pos = draw(st.integers(0, n - 1))
    if kind == "flip":
        return data[:pos] + bytes([data[pos] ^ (1 << draw(st.integers(0, 7)))]) + data[pos + 1:] if data else data
    if kind == "set":
        return data[:pos] + bytes([draw(st.integers(0, 255))]) + data[pos + 1:]
    if kind == "truncate":
        return data[:pos]
    if kind == "insert":
        return data[:pos] + draw(st.one_of(st.binary(min_size=1, max_size=64), st.just(bytes(512)))) + data[pos:]
    if kind == "delete":
        return data[:pos] + data[pos + draw(st.integers(1, 1024)):]
    blocks = len(data) // 512
    if kind in ("copy-block", "swap-blocks") and blocks >= 2:
        i, j = draw(st.integers(0, blocks - 1)), draw(st.integers(0, blocks - 1))
        a, b = data[i * 512:(i + 1) * 512], data[j * 512:(j + 1) * 512]
        if kind == "copy-block":
            return data[:j * 512] + a + data[j * 512:]
        data = data[:i * 512] + b + data[(i + 1) * 512:]
        return data[:j * 512] + a + data[(j + 1) * 512:]
    offsets = header_offsets(data)
    if not offsets:
        return data
    offset = draw(st.sampled_from(offsets))
    start, width = FIELDS[draw(st.sampled_from(sorted(FIELDS)))]
    value = draw(FIELD_VALUES)[:width].ljust(width, b"\0") if draw(st.booleans()) else \
        (draw(FIELD_VALUES) + data[offset + start:offset + start + width])[:width]
    data = data[:offset + start] + value + data[offset + start + width:]
    return data[:offset] + with_checksum(data[offset:offset + 512]) + data[offset + 512:]


def zstd_compress(data):
    import zstandard
    return zstandard.ZstdCompressor(write_checksum=True).compress(data)


CONTAINERS = {"plain": lambda d: d, "gzip": lambda d: gzip.compress(d, mtime=0), "zstd": zstd_compress}


@st.composite
def mutated_packages(draw):
    """A base archive, edited one to four times, compressed before or after the edits."""
    data = draw(st.sampled_from(sorted(BASES, key=str)).map(BASES.get))
    container = draw(st.sampled_from(sorted(CONTAINERS)))
    compress_first = container != "plain" and draw(st.integers(0, 3)) == 0
    if compress_first:
        data = CONTAINERS[container](data)
    for _ in range(draw(st.integers(1, 4))):
        data = draw(mutations(data))
    return data if compress_first else CONTAINERS[container](data)


def read_package(path):
    """Read a package as install does: the checking pass, then the writing pass."""
    package = pm.Package(str(path))
    try:
        for _member, chunks in package.stream():
            for _chunk in chunks:
                pass
    finally:
        package.close()


@given(mutated_packages())
def test_a_mutated_package_is_read_or_refused_as_invalid_input_and_nothing_is_written(data):
    with tempfile.TemporaryDirectory() as top:
        path = Path(top) / "package.tar"
        path.write_bytes(data)
        before = exact_snapshot(top)
        try:
            read_package(path)
        except pm.InvalidInput as e:
            assert "\n" not in e.message
        assert exact_snapshot(top) == before


def run_main(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = pm.main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


@settings(max_examples=max(10, settings.default.max_examples // 4))
@given(mutated_packages())
def test_installing_a_mutated_package_succeeds_verified_or_fails_with_nothing_written(data):
    with tempfile.TemporaryDirectory() as top:
        root, outside, path = Path(top) / "root", Path(top) / "outside", Path(top) / "package.tar"
        root.mkdir()
        outside.mkdir()
        (outside / "secret").write_text("secret")
        path.write_bytes(data)
        before = exact_snapshot(top)
        code, out, err = run_main("--root", root, "install", "--no-scripts", path)
        if code == 0:
            assert run_main("--root", root, "verify")[0] == 0
            assert {k: v for k, v in exact_snapshot(top).items() if not k.startswith("root")} == \
                {k: v for k, v in before.items() if not k.startswith("root")}
        else:
            assert code == 3, (code, err)
            assert err.count("\n") == 1 and err.startswith("pm: error: "), err
            assert exact_snapshot(top) == before


def test_the_base_packages_install(tmp_path):
    for (tar_format, syntax), data in BASES.items():
        for name, compress in CONTAINERS.items():
            root = tmp_path / ("%s-%s-%s" % (tar_format, syntax, name))
            root.mkdir()
            path = tmp_path / "package.tar"
            path.write_bytes(compress(data))
            assert run_main("--root", root, "install", "--no-scripts", path)[0] == 0
            assert os.readlink(root / "usr/bin/alias") == "base"
