"""Tar archives written byte by byte, for the hostile-package tests.

``tarfile`` refuses to write many of the things a hostile package holds (non-UTF-8
names, bad checksums, fields that disagree); these helpers write any header at all.
"""

BLOCK = 512
END = bytes(2 * BLOCK)

FILE, HARD_LINK, SYMLINK, CHAR_DEVICE, BLOCK_DEVICE, DIRECTORY, FIFO = b"0", b"1", b"2", b"3", b"4", b"5", b"6"


def as_bytes(value):
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def octal(value, width):
    return b"%0*o\0" % (width - 1, value)


def header(name, kind=FILE, size=0, mode=0o644, link=b"", mtime=0, prefix=b"",
           device=(0, 0), checksum=None, size_field=None, magic=b"ustar\x0000"):
    """One 512-byte ustar header; ``checksum`` overrides the computed one."""
    name, link, prefix = as_bytes(name), as_bytes(link), as_bytes(prefix)
    if len(name) > 100 or len(link) > 100 or len(prefix) > 155:
        raise ValueError("field too long for a ustar header")
    block = bytearray(BLOCK)
    block[0:len(name)] = name
    block[100:108] = octal(mode, 8)
    block[108:116] = octal(0, 8)
    block[116:124] = octal(0, 8)
    block[124:136] = size_field if size_field is not None else octal(size, 12)
    block[136:148] = octal(mtime, 12)
    block[148:156] = b" " * 8
    block[156:157] = kind
    block[157:157 + len(link)] = link
    block[257:265] = magic
    block[265:269] = block[297:301] = b"root"
    block[329:337] = octal(device[0], 8)
    block[337:345] = octal(device[1], 8)
    block[345:345 + len(prefix)] = prefix
    block[148:156] = b"%06o\0 " % (sum(block) if checksum is None else checksum)
    return bytes(block)


def with_checksum(block):
    """A header block with its checksum computed again after an edit."""
    block = bytearray(block)
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def padded(data):
    return data + bytes(-len(data) % BLOCK)


def member(name, data=b"", kind=FILE, **fields):
    """A header and its data, padded to whole blocks."""
    data = as_bytes(data)
    return header(name, kind, len(data), **fields) + padded(data)


def directory(name, mode=0o755):
    return member(name, kind=DIRECTORY, mode=mode)


def symlink(name, target):
    return member(name, kind=SYMLINK, link=target, mode=0o777)


def hard_link(name, target):
    return member(name, kind=HARD_LINK, link=target)


def pax_record(key, value):
    key, value = as_bytes(key), as_bytes(value)
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + 1
    while len(b"%d" % length) + len(body) != length:
        length = len(b"%d" % length) + len(body)
    return b"%d" % length + body


def pax(**records):
    """A pax extended header for the next member (keys: path, linkpath, size, mtime...)."""
    return member("././@PaxHeader", b"".join(pax_record(k, v) for k, v in records.items()), kind=b"x")


def gnu_long_name(name):
    return member("././@LongLink", as_bytes(name) + b"\0", kind=b"L")


def gnu_long_link(target):
    return member("././@LongLink", as_bytes(target) + b"\0", kind=b"K")


def archive(*members, end=True):
    return b"".join(members) + (END if end else b"")


def manifest(text='{ package = "base", version = "2.0" }'):
    return member("CONTROL/manifest", text)
