#!/usr/bin/env python3
"""repoPackager: build reproducible pm packages and the indexes of a repository.

usage: repoPackager.py [-d DEST] [-p PROGRAMS_CFG] [-z] [--openos [--warn]] [--sign KEY.sec]
                       [--valid-for DAYS] [SOURCE ...]
       repoPackager.py --generate-key BASENAME

Each SOURCE is one of:
  * a package source tree: a directory holding `manifest` (JSON or an OpenOS Lua table),
    `DATA/` (the files, as they go under the target root /) and optionally `CONTROL/`
    (package scripts such as api-post-install);
  * an OpenOS project directory: `NAME.manifest` (Lua) beside `NAME.files.json`, whose
    "files" and "config" lists are [source, destination directory] pairs — a source
    directory is copied with everything below it, a source file goes into the
    destination directory; "config" ones are also listed in the manifest's configFiles;
  * an oppm `programs.cfg` (also with -p): for every package, each "files" key is
    BRANCH/PATH in the checkout beside programs.cfg, a leading `:` marks a directory
    (everything below it is copied), a leading `?` a config file; a destination starting
    with // is absolute, any other is below /usr (oppm's default path); dependencies
    become unversioned ("oppm") dependencies; a missing "version" is "oppm";
  * a package file (.tar, .tar.gz, .tar.zst): checked and added as it is;
  * a repository directory (one holding index.json or index.msgpack.zst, as this tool
    writes): the package files its index lists (all of its package files when it has
    no index.json), added as they are;
  * a folder of any of these, searched below (hidden folders and DEST are skipped).
With no SOURCE and no -p, the current directory is the SOURCE.

Output, in DEST (default ./packages, created when missing):
  * NAME-VERSION.tar, or NAME-VERSION.tar.zst with -z (NAME.tar with --openos);
  * index.msgpack.zst: the index pm reads (zstd-compressed msgpack);
  * index.json: the same index for people;
  * manifest: the OpenOS Lua index (as OpenOS pm-get reads it: each package's manifest
    with its archiveName; the newest version of each package the original can read);
  every index entry carries the package file's size and sha256.  index.msgpack.zst and
  index.json are a map: "format" (1), "packages" (the entries: filename, size, sha256,
  manifest), "serial" (an integer, one more than the serial of the index replaced in
  DEST) and, with --sign or --valid-for, "valid_until" (UTC, YYYY-MM-DDTHH:MM:SSZ;
  --valid-for DAYS from now, default 30): pm refuses an index older than one it
  already trusted (a replay) and warns about, or with require_fresh refuses, an expired one;
  * with --sign KEY.sec: index.msgpack.zst.sig and index.json.sig, detached signify/usign
    signatures (ed25519) that `signify -V -p KEY.pub -m index.json` checks too; the
    OpenOS manifest stays unsigned (OpenOS cannot check signatures).
--generate-key BASENAME writes BASENAME.pub and BASENAME.sec (mode 0600, unencrypted, in
signify's format, so `signify -S` can use it) and exits.  Signing uses the Python
package cryptography, or the signify command where it is missing.
Packages already in DEST's index are kept: a build adds packages or replaces the same
name and version.  Every file is written under a temporary name and renamed into place;
when any SOURCE fails, nothing is written.

Packages are reproducible: identical input gives byte-identical files.  Members are
sorted, named without ./, with ustar headers (a GNU ././@LongLink record before a GNU
header for a name or link target over 100 bytes; never the ustar prefix field, never
pax), owner and group 0 with empty names, mtime SOURCE_DATE_EPOCH (default 0), modes
normalised (directories 0755, files 0755 when any execute bit is set, else 0644).
CONTROL/manifest is always written as a Lua table literal (keys sorted; a key that is
not a plain name, or is a Lua keyword, as ["key"]) that Lua 5.2/5.3's
load("return " .. text) accepts, whether the source manifest is JSON or Lua; a leading
UTF-8 byte-order mark of a source manifest is dropped.

OpenOS: the Lua `manifest` index leaves out, with a note on stderr, every package the
original OpenOS pm or pm-get cannot read as pm does: compressed ones (-z), ones with
symbolic links (the original drops them), ones depending with a constraint other than
oppm, =X, >=X or a bare X.  With --openos (a repository for OpenOS) any of these refuses
the build (--warn: only warns), and packages are named NAME.tar as the upstream's
installer expects (packages/pm.tar, pm_get.tar, libtar.tar): one version of each.

Exit status: 0 done, 1 a SOURCE could not be built, 2 usage, 3 invalid input (a
manifest or package that pm would refuse).
"""

import json
import os
import stat
import sys
import tarfile
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import pm  # noqa: E402  (pm.py of this repository: manifest parsing and checks)

DEFAULT_DEST = "packages"
ZSTD_LEVEL = 19                 # fixed: the compressed bytes depend on it
TAR_RECORD = 10240              # tar pads archives to whole records, as GNU tar does
INDEX_NAMES = (pm.INDEX_MSGPACK, pm.INDEX_JSON, pm.INDEX_LUA)


class BuildError(pm.Refused):
    """A SOURCE cannot be built (exit 1)."""


# -- what goes into a package ------------------------------------------------------------

class Entry:
    """One member of a package: ``name`` in the archive, ``kind`` (f, d, l), normalised
    ``mode``, and where the data comes from (``path`` on disk or ``data`` bytes) or the
    ``link`` target."""

    __slots__ = ("name", "kind", "mode", "path", "data", "link", "size")

    def __init__(self, name, kind, mode, path=None, data=None, link=None, size=0):
        self.name, self.kind, self.mode = name, kind, mode
        self.path, self.data, self.link, self.size = path, data, link, size


class Content:
    """A package to build: its manifest (parsed), the bytes of CONTROL/manifest, and
    the members below CONTROL/ and DATA/ by archive name."""

    def __init__(self, origin, manifest, manifest_bytes):
        self.origin = origin
        self.manifest = manifest
        self.entries = {}
        self.add_dir("CONTROL")
        self.add_dir("DATA")
        self.add(Entry("CONTROL/manifest", "f", 0o644, data=manifest_bytes, size=len(manifest_bytes)))

    def add_dir(self, name):
        existing = self.entries.get(name)
        if existing is not None and existing.kind != "d":
            raise BuildError("%s: %s is both a file and a directory" % (self.origin, name))
        if existing is None:
            if "/" in name:
                self.add_dir(name.rsplit("/", 1)[0])
            self.entries[name] = Entry(name, "d", 0o755)

    def add(self, entry):
        if entry.name in self.entries:
            raise BuildError("%s: two sources go to %s" % (self.origin, entry.name))
        self.add_dir(entry.name.rsplit("/", 1)[0])
        self.entries[entry.name] = entry

    def add_path(self, path, name):
        """Add the file, symlink or directory tree at ``path`` as ``name``."""
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            self.add_dir(name)
            for child in sorted(os.listdir(path)):
                self.add_path(os.path.join(path, child), name + "/" + child)
        elif stat.S_ISLNK(st.st_mode):
            self.add(Entry(name, "l", 0o777, link=os.readlink(path)))
        elif stat.S_ISREG(st.st_mode):
            mode = 0o755 if st.st_mode & 0o111 else 0o644
            self.add(Entry(name, "f", mode, path=path, size=st.st_size))
        else:
            raise BuildError("%s: %s is not a file, directory or symbolic link" % (self.origin, path))

    @property
    def name(self):
        return self.manifest["package"]

    @property
    def version(self):
        return self.manifest["version"]


def data_name(destination, origin):
    """The archive name below DATA/ of an absolute destination path."""
    parts = [p for p in destination.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BuildError("%s: destination %r leaves the root" % (origin, destination))
    return "/".join(["DATA"] + parts)


def inside(base, relative, origin):
    """``relative`` below the directory ``base``, refusing absolute paths and '..'."""
    parts = relative.replace("\\", "/").split("/")
    if relative.startswith("/") or ".." in parts:
        raise BuildError("%s: %r is not a path inside %s" % (origin, relative, base))
    path = os.path.join(base, *[p for p in parts if p not in ("", ".")])
    if not os.path.lexists(path):
        raise BuildError("%s: %s does not exist" % (origin, path))
    return path


# -- reading the source layouts ------------------------------------------------------------

def read_tree(directory):
    """A package source tree: manifest, DATA/, CONTROL/."""
    origin = directory
    manifest_path = os.path.join(directory, "manifest")
    control = os.path.join(directory, "CONTROL")
    if os.path.isfile(os.path.join(control, "manifest")):
        if os.path.lexists(manifest_path):
            raise BuildError("%s: both manifest and CONTROL/manifest; keep one" % origin)
        manifest_path = os.path.join(control, "manifest")
    with open(manifest_path, "rb") as f:
        data = f.read(pm.MAX_MANIFEST_BYTES + 1)
    manifest = checked_manifest(data, manifest_path)
    content = Content(origin, *manifest_text(manifest, manifest_path))
    if os.path.isdir(control):
        for name in sorted(os.listdir(control)):
            path = os.path.join(control, name)
            if name == "manifest":
                continue
            if not os.path.isfile(path) or os.path.islink(path):
                raise BuildError("%s: CONTROL/%s is not a regular file" % (origin, name))
            content.add(Entry("CONTROL/" + name, "f", 0o755, path=path, size=os.path.getsize(path)))
    elif os.path.lexists(control):
        raise BuildError("%s: CONTROL is not a directory" % origin)
    data_dir = os.path.join(directory, "DATA")
    if os.path.isdir(data_dir) and not os.path.islink(data_dir):
        for name in sorted(os.listdir(data_dir)):
            content.add_path(os.path.join(data_dir, name), "DATA/" + name)
    elif os.path.lexists(data_dir):
        raise BuildError("%s: DATA is not a directory" % origin)
    return content


BOM = b"\xef\xbb\xbf"


def manifest_text(manifest, where):
    """(manifest, bytes) of CONTROL/manifest: always a Lua table literal that Lua 5.2 and
    5.3 ``load("return " .. text)`` accept (the original OpenOS pm reads a manifest so),
    keys sorted, whatever the source's syntax; the manifest is the one those bytes read
    back as (Lua has one empty table for an empty list and an empty map)."""
    try:
        data = (lua_literal(manifest) + "\n").encode("utf-8")
    except ValueError as e:
        raise pm.InvalidInput("%s: %s" % (where, e)) from None
    return checked_manifest(data, where), data


def checked_manifest(data, where):
    if data.startswith(BOM):        # a source may have one; what repoPackager writes never does
        data = data[len(BOM):]
    try:
        return pm.parse_manifest(data)
    except pm.InvalidInput as e:
        raise pm.InvalidInput("%s: %s" % (where, e.message)) from None


def read_openos(manifest_path, files_json):
    """An OpenOS project: NAME.manifest (Lua) and NAME.files.json beside it."""
    directory = os.path.dirname(manifest_path)
    with open(manifest_path, "rb") as f:
        manifest = checked_manifest(f.read(pm.MAX_MANIFEST_BYTES + 1), manifest_path)
    try:
        with open(files_json, encoding="utf-8") as f:
            lists = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise pm.InvalidInput("%s: not JSON (%s)" % (files_json, e)) from None
    if not isinstance(lists, dict) or not all(k in ("files", "config") for k in lists):
        raise pm.InvalidInput('%s: expected {"files": [...], "config": [...]}' % files_json)
    placed, config = [], list(manifest.get("configFiles", []))
    for key in ("files", "config"):
        pairs = lists.get(key, [])
        if not isinstance(pairs, list) or not all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in pairs):
            raise pm.InvalidInput('%s: "%s" must be a list of [source, destination] pairs' % (files_json, key))
        for source, destination in pairs:
            path = inside(directory, source, files_json)
            target = data_name(destination, files_json)
            if os.path.isdir(path) and not os.path.islink(path):
                placed.append((path, target))
                if key == "config":
                    config.append("/" + target[len("DATA/"):] + "/")
            else:
                placed.append((path, target + "/" + os.path.basename(path)))
                if key == "config":
                    config.append("/" + target[len("DATA/"):] + "/" + os.path.basename(path))
    if config:
        manifest["configFiles"] = list(dict.fromkeys(config))
    content = Content(manifest_path, *manifest_text(manifest, manifest_path))
    for path, target in placed:
        add_into(content, path, target)
    return content


def add_into(content, path, target):
    """A directory's contents go into ``target``; a file becomes ``target``."""
    if os.path.isdir(path) and not os.path.islink(path):
        content.add_dir(target)
        for child in sorted(os.listdir(path)):
            content.add_path(os.path.join(path, child), target + "/" + child)
    else:
        content.add_path(path, target)


OPPM_FIELDS = ("name", "description", "authors", "note", "hidden", "repo")


def read_programs(programs_cfg):
    """Every package of an oppm programs.cfg, files taken from the checkout beside it."""
    base = os.path.dirname(os.path.abspath(programs_cfg))
    with open(programs_cfg, "rb") as f:
        text = f.read(pm.MAX_INDEX_BYTES + 1)
    try:
        table = pm.LuaIndexParser(text.decode("utf-8").lstrip("\ufeff")).parse()
    except (pm.InvalidInput, UnicodeDecodeError) as e:
        raise pm.InvalidInput("%s: %s" % (programs_cfg, getattr(e, "message", e))) from None
    contents = []
    for name in sorted(table):
        info = table[name]
        where = "%s: %s" % (programs_cfg, name)
        if not isinstance(info, dict):
            raise pm.InvalidInput("%s: not a table" % where)
        manifest = {"manifestVersion": "1.0", "package": name, "version": oppm_version(info.get("version"), where)}
        for field in OPPM_FIELDS:
            if field in info:
                manifest[field] = info[field]
        dependencies = info.get("dependencies", {})
        if not isinstance(dependencies, dict):
            raise pm.InvalidInput("%s: dependencies must be a table" % where)
        for dependency in dependencies:
            if "://" in str(dependency):
                raise BuildError("%s: depends on the URL %s; pm packages depend on packages" % (where, dependency))
        if dependencies:
            manifest["dependencies"] = {d: "oppm" for d in sorted(dependencies)}
        placed, config = [], []
        files = info.get("files", {})
        if not isinstance(files, dict):
            raise pm.InvalidInput("%s: files must be a table" % where)
        for key in sorted(files):
            destination = files[key]
            if not isinstance(key, str) or not isinstance(destination, str):
                raise pm.InvalidInput("%s: files must map paths to destinations" % where)
            marks = ""
            while key[:1] in (":", "?"):
                marks, key = marks + key[0], key[1:]
            if "://" in key:
                raise BuildError("%s: %s is a URL; repoPackager packages files of the checkout" % (where, key))
            branch_and_path = key.strip("/").split("/", 1)
            if len(branch_and_path) != 2:
                raise pm.InvalidInput("%s: %r is not BRANCH/PATH" % (where, key))
            path = inside(base, branch_and_path[1], where)
            absolute = destination[2:] if destination.startswith("//") else "/usr/" + destination.lstrip("/")
            target = data_name(absolute, where)
            if ":" in marks:
                placed.append((path, target))
                if "?" in marks:
                    config.append("/" + target[len("DATA/"):] + "/")
            else:
                placed.append((path, target + "/" + os.path.basename(path)))
                if "?" in marks:
                    config.append("/" + target[len("DATA/"):] + "/" + os.path.basename(path))
        if config:
            manifest["configFiles"] = sorted(set(config))
        content = Content(where, *manifest_text(manifest, where))
        for path, target in placed:
            add_into(content, path, target)
        contents.append(content)
    return contents


def oppm_version(value, where):
    if value is None:
        return "oppm"
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise pm.InvalidInput("%s: bad version %r" % (where, value))
    return value if isinstance(value, str) else repr(value)


def installed_size(package):
    """Bytes the package's files take once installed (the index's installed_size, which
    pm's summaries show before anything is downloaded, as apt's Installed-Size)."""
    return sum(member.size for member in package.members if member.kind == "f")


def read_package_file(path):
    """A ready-made package, checked by pm, added as it is."""
    package = pm.Package(path, allow_setuid=True)
    package.close()
    return package


# -- finding sources ---------------------------------------------------------------------------

def is_tree(directory, explicit):
    manifest = os.path.join(directory, "manifest")
    if os.path.isfile(os.path.join(directory, "CONTROL", "manifest")):
        return True
    if not os.path.isfile(manifest):
        return False
    if explicit or os.path.isdir(os.path.join(directory, "DATA")) or os.path.isdir(os.path.join(directory, "CONTROL")):
        return True
    try:                     # a lone `manifest` may be an OpenOS index rather than a package
        with open(manifest, "rb") as f:
            pm.parse_manifest(f.read(pm.MAX_MANIFEST_BYTES + 1))
        return True
    except pm.InvalidInput:
        return False


def is_repository(directory):
    """True for a repository directory: it holds an index pm reads (its ``manifest`` is
    then the OpenOS Lua index, not a package manifest)."""
    return any(os.path.isfile(os.path.join(directory, name)) for name in (pm.INDEX_JSON, pm.INDEX_MSGPACK))


def repository_packages(directory):
    """The package files of a repository directory: those its index.json lists, else
    every package file in it."""
    listing = os.path.join(directory, pm.INDEX_JSON)
    if not os.path.isfile(listing):
        return [os.path.join(directory, n) for n in sorted(os.listdir(directory))
                if n.endswith(pm.PACKAGE_SUFFIXES) and os.path.isfile(os.path.join(directory, n))]
    try:
        with open(listing, "rb") as f:
            index = json.loads(f.read(pm.MAX_INDEX_BYTES + 1))
        names = [entry["filename"] for entry in index["packages"]]
    except (ValueError, TypeError, KeyError) as e:
        raise pm.InvalidInput("%s: not a repository index (%s)" % (listing, e)) from None
    files = []
    for name in names:
        if not isinstance(name, str) or "/" in name or name.startswith(".") or not name.endswith(pm.PACKAGE_SUFFIXES):
            raise pm.InvalidInput("%s: bad package file name %r" % (listing, name))
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            raise BuildError("%s lists %s, which is missing" % (listing, name))
        files.append(path)
    return files


def discover(path, dest, found, explicit=True):
    """Append ("tree"|"openos"|"programs"|"file", ...) for every source at or below ``path``."""
    real = os.path.realpath(path)
    if real == dest:
        return
    if os.path.isfile(path):
        if path.endswith(".cfg"):
            found.append(("programs", path))
        else:
            found.append(("file", path))
        return
    if not os.path.isdir(path):
        raise BuildError("%s does not exist" % path)
    if is_repository(path):
        found.extend(("file", package) for package in repository_packages(path))
        return
    if is_tree(path, explicit):
        found.append(("tree", path))
        return
    names = sorted(os.listdir(path))
    for name in names:
        if name.endswith(".manifest") and os.path.isfile(os.path.join(path, name)):
            files_json = os.path.join(path, name[:-len(".manifest")] + ".files.json")
            if os.path.isfile(files_json):
                found.append(("openos", os.path.join(path, name), files_json))
            else:
                sys.stderr.write("repoPackager: note: %s has no %s beside it; skipped\n"
                                 % (os.path.join(path, name), os.path.basename(files_json)))
    if "programs.cfg" in names:
        found.append(("programs", os.path.join(path, "programs.cfg")))
    for name in names:
        child = os.path.join(path, name)
        if not name.startswith(".") and os.path.isdir(child) and not os.path.islink(child):
            discover(child, dest, found, explicit=False)


# -- writing -----------------------------------------------------------------------------------

def source_date_epoch():
    text = os.environ.get("SOURCE_DATE_EPOCH", "0")
    if not text.isdigit():
        raise pm.UsageError("SOURCE_DATE_EPOCH must be a number of seconds, not %r" % text)
    return int(text)


def add_sums(content):
    """Record CONTROL/sums (pm.SUMS): ``SHA256 MODE SIZE /path`` for every regular file of
    DATA/, in archive order; an upgrade leaves alone a file whose line did not change.
    Returns {archive name: sha256}, which write_tar checks what it copies against."""
    digests, lines = {}, []
    for name in sorted(content.entries, key=lambda n: n.split("/")):
        entry = content.entries[name]
        if entry.kind != "f" or not name.startswith("DATA/"):
            continue
        if entry.data is not None:
            digest = pm.sha256_bytes(entry.data)
        else:
            with open(entry.path, "rb") as f:
                digest = pm.sha256_fd(f.fileno())
        digests[name] = digest
        lines.append("%s %04o %d /%s\n" % (digest.hex(), entry.mode, entry.size, name[len("DATA/"):]))
    data = "".join(lines).encode("utf-8")
    name = "CONTROL/" + pm.SUMS
    content.entries[name] = Entry(name, "f", 0o644, data=data, size=len(data))
    return digests


def write_tar(out, content, mtime, digests=None):
    """Write the package as a reproducible tar stream to the binary file ``out``; a file
    whose bytes are not those of ``digests`` (add_sums) changed while it was packaged."""
    written = 0
    for name in sorted(content.entries, key=lambda n: n.split("/")):
        entry = content.entries[name]
        info = tarfile.TarInfo(name)
        info.mtime, info.uid, info.gid, info.uname, info.gname = mtime, 0, 0, "", ""
        info.mode = entry.mode
        if entry.kind == "d":
            info.type = tarfile.DIRTYPE
        elif entry.kind == "l":
            info.type, info.linkname = tarfile.SYMTYPE, entry.link
        else:
            info.type, info.size = tarfile.REGTYPE, entry.size
        header = tar_header(info)
        out.write(header)
        written += len(header)
        if entry.kind == "f":
            copied = 0
            h = pm.new_sha256()
            if entry.data is not None:
                out.write(entry.data)
                h.update(entry.data)
                copied = len(entry.data)
            else:
                with open(entry.path, "rb") as f:
                    while copied <= entry.size:
                        chunk = f.read(pm.COPY_CHUNK)
                        if not chunk:
                            break
                        out.write(chunk)
                        h.update(chunk)
                        copied += len(chunk)
            if copied != entry.size or (digests and name in digests and h.digest() != digests[name]):
                raise BuildError("%s changed while it was being packaged" % (entry.path or name))
            padding = -copied % 512
            out.write(b"\0" * padding)
            written += copied + padding
    end = 1024 + (-(written + 1024) % TAR_RECORD)
    out.write(b"\0" * end)


def tar_header(info):
    """The header blocks of one member, as the original OpenOS tar reader reads them: a
    name (or link target) that fits the 100-byte name field goes there in a ustar header;
    a longer one in a GNU ././@LongLink record (type L, or K for a link target) before a
    GNU header.  Never the ustar prefix field nor a pax header: that reader uses neither."""
    name = info.name + ("/" if info.type == tarfile.DIRTYPE and not info.name.endswith("/") else "")
    if len(name.encode("utf-8")) <= tarfile.LENGTH_NAME and len(info.linkname.encode("utf-8")) <= tarfile.LENGTH_LINK:
        try:
            return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")
        except ValueError:          # a number too large for ustar: GNU's base-256 holds it
            pass
    return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "strict")


def temporary(dest, name):
    """A new temporary file in ``dest`` (binary, open for writing) for ``name``."""
    fd, path = tempfile.mkstemp(dir=dest, prefix="." + name + ".", suffix=".tmp")
    os.fchmod(fd, 0o644)
    return os.fdopen(fd, "w+b"), path


def package_filename(name, version, suffix, openos):
    """NAME-VERSION.tar, or with --openos the upstream's NAME.tar (its installer fetches
    packages/pm.tar, pm_get.tar and libtar.tar)."""
    return "%s%s" % (name, suffix) if openos else "%s-%s%s" % (name, version, suffix)


def build(content, dest, compress, mtime, openos=False):
    """Write the package into a temporary file in ``dest``; returns (file name,
    temporary path, size, sha256), checked by pm as a node would check it."""
    filename = package_filename(content.name, content.version, ".tar.zst" if compress else ".tar", openos)
    if not pm._matches(pm.FILENAME_PATTERN, filename):
        raise BuildError("%s: %s is not a usable file name" % (content.origin, filename))
    digests = add_sums(content)
    out, path = temporary(dest, filename)
    try:
        with out:
            if compress:
                zstd = pm.lazy_import("zstandard", "writing .tar.zst packages (-z)")
                with tempfile.TemporaryFile(dir=dest) as plain:
                    write_tar(plain, content, mtime, digests)
                    size = plain.tell()
                    plain.seek(0)
                    compressor = zstd.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True,
                                                     write_content_size=True, threads=0)
                    compressor.copy_stream(plain, out, size=size)
            else:
                write_tar(out, content, mtime, digests)
            out.flush()
            os.fsync(out.fileno())
        size, digest = file_digest(path)
        package = pm.Package(path, allow_setuid=True)
        package.close()
        if (package.name, package.version.text) != (content.name, content.version):
            raise BuildError("%s: the package reads back as %s %s" % (content.origin, package.name, package.version))
        return filename, path, size, digest
    except BaseException:
        os.unlink(path)
        raise


def file_digest(path):
    with open(path, "rb") as f:
        return os.fstat(f.fileno()).st_size, pm.sha256_fd(f.fileno()).hex()


def lua_literal(value, indent=""):
    """``value`` as a Lua table literal (OpenOS serialization syntax), keys sorted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            raise ValueError("NaN cannot be written in a Lua table literal")
        if value in (float("inf"), float("-inf")):
            return "1e999" if value > 0 else "-1e999"     # Lua reads an overflowing number as inf
        return repr(value)
    if isinstance(value, str):
        return lua_string(value)
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v, indent) for v in value) + "}"
    if isinstance(value, dict):
        if not value:
            return "{}"
        inner = indent + "  "
        lines = ["%s%s = %s," % (inner, lua_key(k), lua_literal(value[k], inner)) for k in sorted(value)]
        return "{\n" + "\n".join(lines) + "\n" + indent + "}"
    raise TypeError("cannot write %r as Lua" % (value,))


LUA_KEYWORDS = pm.LUA_KEYWORDS


def lua_key(key):
    if key.isidentifier() and key.isascii() and key not in LUA_KEYWORDS:
        return key
    return "[%s]" % lua_string(key)


def lua_string(text):
    out = ['"']
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif ord(c) < 32 or ord(c) == 127:
            out.append("\\%03d" % ord(c))
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def write_atomically(dest, name, data):
    out, path = temporary(dest, name)
    try:
        with out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(path, os.path.join(dest, name))
    except BaseException:
        if os.path.exists(path):
            os.unlink(path)
        raise


# -- what the original OpenOS pm and pm-get can read ---------------------------------------------
#
# Facts of the original (AR2000AR/openComputers_codes, pm 1.x and pm-get 1.5): its tar
# reader takes a member's name from the 100-byte name field or from a preceding GNU
# ././@LongLink record (type L), never from the ustar prefix field; it checks a header's
# checksum over bytes 0-147 and 156-499; it extracts types 0, NUL and 5 only (a symbolic
# link is neither extracted nor listed, a pax header is taken for a member); it reads
# plain tar only; it loads CONTROL/manifest with load("return " .. text).  pm reads a
# dependency's constraint as its first [<>=] character (none meaning >=) and the digits
# after it; pm-get knows "oppm", "" and constraints starting with > or = and raises an
# error on anything else.

def openos_constraint(text):
    """Whether the original pm and pm-get read the constraint as pm does: oppm, =X, >=X, X."""
    if text == pm.UNVERSIONED:
        return True
    version = text[2:] if text.startswith(">=") else text[1:] if text.startswith("=") else text
    if not version[:1].isdigit() or version != version.strip():
        return False
    try:
        pm.Version.parse(version)
    except pm.InvalidInput:
        return False
    return True


def openos_problems(path, manifest):
    """What keeps the original OpenOS pm or pm-get from reading the package file at
    ``path`` (with that manifest) as pm reads it: a list of reasons, empty when none."""
    problems = ["it depends on %s %r (the original knows oppm, =X, >=X and X)" % (name, constraint)
                for name, constraint in sorted(manifest.get("dependencies", {}).items())
                if not openos_constraint(constraint)]
    with open(path, "rb") as f:
        magic = f.read(4)
        if magic[:2] == b"\x1f\x8b" or magic == b"\x28\xb5\x2f\xfd":
            return problems + ["it is %s-compressed (the original reads plain tar)"
                               % ("gzip" if magic[:2] == b"\x1f\x8b" else "zstd")]
        f.seek(0)
        long_name, manifest_text_seen = None, None
        while True:
            block = f.read(512)
            if len(block) < 512:
                break
            if sum(block[:148]) + sum(block[156:500]) + 256 <= 256:
                continue                          # the original skips empty blocks
            size = pm._tar_number(block[124:136], "size")
            data_size = size + (-size % 512)
            kind = block[156:157]
            if kind in (b"L", b"K"):
                long_name = f.read(data_size)[:size].split(b"\0", 1)[0]
                continue
            name = long_name if long_name is not None else block[:100].split(b"\0", 1)[0]
            long_name = None
            shown = name.decode("utf-8", "replace")
            stored = pm._tar_number(block[148:156], "checksum")
            if stored != sum(block[:148]) + 256 + sum(block[156:500]):
                problems.append("the header of %s has a checksum the original computes otherwise" % shown)
            if kind in (b"x", b"g"):
                problems.append("it has a pax header (the original takes it for a member)")
            elif kind == b"2":
                problems.append("%s is a symbolic link (the original neither extracts nor lists one)" % shown)
            elif kind not in (b"0", b"\0", b"5"):
                problems.append("%s has tar type %r (the original reads types 0 and 5)"
                                % (shown, kind.decode("latin-1")))
            elif block[257:263] == b"ustar\0" and block[345:500].strip(b"\0"):
                problems.append("%s is named with the ustar prefix field (the original reads it as %s)"
                                % ((block[345:500].split(b"\0", 1)[0] + b"/" + name).decode("utf-8", "replace"), shown))
            if name == b"CONTROL/manifest" and kind in (b"0", b"\0") and size <= pm.MAX_MANIFEST_BYTES:
                manifest_text_seen = f.read(data_size)[:size]
            else:
                f.seek(data_size, 1)
    if manifest_text_seen is None:
        problems.append("the original finds no CONTROL/manifest in it")
    elif not lua_loads(manifest_text_seen):
        problems.append("its CONTROL/manifest is not a Lua table literal (the original loads it with Lua)")
    return problems


def lua_loads(data):
    """Whether Lua's load("return " .. text) gives a table for these bytes, as far as pm's
    Lua-literal parser (which refuses whatever Lua refuses) tells."""
    try:
        pm.LuaLiteralParser(data.decode("utf-8")).parse()
    except (pm.InvalidInput, UnicodeDecodeError):
        return False
    return True


# -- the repository index --------------------------------------------------------------------

class Quiet(pm.Output):
    def __init__(self):
        super().__init__(verbosity=-1)


def existing_entries(dest):
    """The entries of DEST's current index (pm's, or the JSON one, or an OpenOS Lua
    index), each checked against its file: kept when it matches, re-read from the
    package when the file changed, dropped (with a note) when the file is gone."""
    source = pm.Source(dest, trusted=True)
    for kind in (pm.INDEX_MSGPACK, pm.INDEX_JSON, pm.INDEX_LUA):
        path = os.path.join(dest, kind)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                entries = pm.parse_index(f.read(pm.MAX_INDEX_BYTES + 1), kind, source, Quiet())
            break
    else:
        return []
    kept = []
    for entry in entries:
        path = os.path.join(dest, entry["filename"])
        if not os.path.isfile(path):
            sys.stderr.write("repoPackager: note: %s is gone; dropped from the index\n" % entry["filename"])
            continue
        size, digest = file_digest(path)
        if (size, digest) != (entry["size"], entry["sha256"]):
            package = read_package_file(path)
            entry = {"filename": entry["filename"], "size": size, "sha256": digest, "manifest": package.manifest,
                     "installed_size": installed_size(package)}
        kept.append(entry)
    return kept


def index_documents(entries, meta=None, unreadable=None):
    """(index.msgpack.zst, index.json, manifest) bytes for the entries; ``meta`` (serial,
    valid_until) goes into the first two.  The Lua ``manifest`` lists the newest version
    of each package among those the original OpenOS pm can read: ``unreadable`` maps the
    file name of each other one to its reasons, and each one left out is told on stderr."""
    unreadable = unreadable or {}
    entries = sorted(entries, key=lambda e: (e["manifest"]["package"], pm.Version.parse(e["manifest"]["version"]).key,
                                             e["filename"]))
    document = dict(meta or {}, format=pm.INDEX_FORMAT, packages=entries)
    text = json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    zstd = pm.lazy_import("zstandard", "writing the repository index")
    packed = pm._msgpack().packb(document, use_bin_type=True)
    compressed = zstd.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True, threads=0).compress(packed)
    newest = {}
    for entry in entries:                      # sorted: the last of a name is its newest
        reasons = unreadable.get(entry["filename"])
        if reasons:
            sys.stderr.write("repoPackager: note: the OpenOS index (%s) leaves out %s: %s\n"
                             % (pm.INDEX_LUA, entry["filename"], "; ".join(reasons)))
            continue
        version = pm.Version.parse(entry["manifest"]["version"])
        name = entry["manifest"]["package"]
        if name not in newest or not version.prerelease or pm.Version.parse(
                newest[name]["manifest"]["version"]).prerelease:
            newest[name] = entry
    lua = {}
    for name, entry in newest.items():
        lua[name] = dict(entry["manifest"], archiveName=entry["filename"], size=entry["size"],
                         sha256=entry["sha256"])
    return compressed, text.encode("utf-8"), (lua_literal(lua) + "\n").encode("utf-8")


# -- signing (signify/usign format, ed25519) ---------------------------------------------------

SECRET_KEY_BYTES = 2 + 2 + 4 + 16 + 8 + 8 + 64   # Ed, BK, rounds, salt, checksum, keynum, key
DEFAULT_VALID_DAYS = 30


def _ed25519():
    """cryptography's ed25519 module, or None when the package is missing."""
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        return None
    return ed25519


def _signify_tool():
    import shutil
    for name in ("signify", "signify-openbsd"):
        found = shutil.which(name)
        if found:
            return found
    raise BuildError("signing needs the Python package 'cryptography' (pip install cryptography) "
                     "or the signify command")


def _run_signify(command):
    import subprocess
    proc = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    if proc.returncode != 0:
        raise BuildError("%s failed: %s" % (os.path.basename(command[0]),
                                            (proc.stderr.strip() or "exit %d" % proc.returncode).splitlines()[-1]))


def generate_key(basename):
    """Write BASENAME.pub and BASENAME.sec (mode 0600, unencrypted, signify's format)."""
    import hashlib
    public_path, secret_path = basename + ".pub", basename + ".sec"
    for path in (public_path, secret_path):
        if os.path.lexists(path):
            raise BuildError("%s already exists; not overwriting a key" % path)
    comment = "pm repository key %s" % os.path.basename(basename)
    ed25519 = _ed25519()
    if ed25519 is None:
        _run_signify([_signify_tool(), "-G", "-n", "-c", comment, "-p", public_path, "-s", secret_path])
        return public_path, secret_path
    from cryptography.hazmat.primitives import serialization
    private = ed25519.Ed25519PrivateKey.generate()
    seed = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
    public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    keynum = os.urandom(8)
    secret = seed + public
    checksum = hashlib.sha512(secret).digest()[:8]
    secret_raw = pm.SIGNIFY_ALGORITHM + b"BK" + (0).to_bytes(4, "big") + os.urandom(16) + checksum + keynum + secret
    fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pm.signify_text(comment + " secret key", secret_raw))
    os.chmod(secret_path, 0o600)
    fd = os.open(public_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(pm.signify_text(comment + " public key", pm.SIGNIFY_ALGORITHM + keynum + public))
    return public_path, secret_path


class SecretKey:
    """An unencrypted signify secret key: ``keynum``, ``secret`` (seed + public key) and
    the ``path`` it came from."""

    def __init__(self, path):
        import hashlib
        try:
            with open(path, "rb") as f:
                data = f.read(pm.MAX_SIGNIFY_FILE + 1)
        except OSError as e:
            raise BuildError("cannot read the secret key %s: %s" % (path, e.strerror or e)) from None
        _, raw = pm.parse_signify(data, "the secret key " + path, SECRET_KEY_BYTES)
        if raw[2:4] != b"BK":
            raise pm.InvalidInput("the secret key %s uses an unknown key derivation %r" % (path, raw[2:4]))
        if int.from_bytes(raw[4:8], "big") != 0:
            raise BuildError("the secret key %s is protected by a passphrase; repoPackager needs an unencrypted "
                             "one (--generate-key, or signify -G -n)" % path)
        self.path, self.keynum, self.secret = path, raw[32:40], raw[40:]
        if hashlib.sha512(self.secret).digest()[:8] != raw[24:32]:
            raise pm.InvalidInput("the secret key %s is damaged (its checksum does not match)" % path)

    def sign(self, data):
        """The signature file (signify's format) of ``data``."""
        ed25519 = _ed25519()
        public_name = os.path.basename(self.path[:-4] if self.path.endswith(".sec") else self.path) + ".pub"
        comment = "verify with %s" % public_name
        if ed25519 is None:
            return self._sign_with_tool(data, comment)
        signature = ed25519.Ed25519PrivateKey.from_private_bytes(self.secret[:32]).sign(data)
        return pm.signify_text(comment, pm.SIGNIFY_ALGORITHM + self.keynum + signature)

    def _sign_with_tool(self, data, comment):
        with tempfile.TemporaryDirectory(prefix="repoPackager-sign-") as work:
            message = os.path.join(work, "index")
            with open(message, "wb") as f:
                f.write(data)
            _run_signify([_signify_tool(), "-S", "-s", self.path, "-m", message, "-x", message + ".sig"])
            with open(message + ".sig", "rb") as f:
                _, raw = pm.parse_signify(f.read(pm.MAX_SIGNIFY_FILE + 1), "the signature signify wrote", 74)
        return pm.signify_text(comment, raw)


def previous_serial(dest):
    """The serial of the index DEST holds now (0 when it has none)."""
    source = pm.Source(dest, trusted=True)
    for kind in (pm.INDEX_MSGPACK, pm.INDEX_JSON):
        path = os.path.join(dest, kind)
        if os.path.isfile(path):
            meta = {}
            with open(path, "rb") as f:
                pm.parse_index(f.read(pm.MAX_INDEX_BYTES + 1), kind, source, Quiet(), meta)
            serial = meta.get("serial", 0)
            if not isinstance(serial, int) or isinstance(serial, bool) or not 0 <= serial < pm.MAX_SERIAL:
                raise pm.InvalidInput("%s has a bad serial %r" % (path, serial))
            return serial
    return 0


def index_metadata(dest, valid_days):
    """The serial (one more than the index replaced) and, when ``valid_days`` is not
    None, the valid_until of the index about to be written."""
    import time
    meta = {"serial": previous_serial(dest) + 1}
    if valid_days is not None:
        meta["valid_until"] = time.strftime(pm.VALID_UNTIL_FORMAT, time.gmtime(time.time() + valid_days * 86400))
    return meta


# -- the command ---------------------------------------------------------------------------------

def parse_arguments(argv):
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message):
            raise pm.UsageError(message)

    parser = Parser(prog="repoPackager.py", description=__doc__.split("\n\n", 2)[2],
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", "--destination", default=DEFAULT_DEST, metavar="DEST",
                        help="the repository directory to write (default: ./packages)")
    parser.add_argument("-p", "--programs", action="append", default=[], metavar="PROGRAMS_CFG",
                        help="an oppm programs.cfg whose packages to build (repeatable)")
    parser.add_argument("-z", "--zstd", action="store_true",
                        help="write .tar.zst packages (zstd-compressed) instead of .tar")
    parser.add_argument("--generate-key", metavar="BASENAME",
                        help="write a new signing key, BASENAME.pub and BASENAME.sec (mode 0600, unencrypted, "
                             "signify's format), and exit")
    parser.add_argument("--sign", metavar="BASENAME.sec",
                        help="sign the indexes written with this secret key: INDEX.sig beside index.msgpack.zst "
                             "and index.json (the OpenOS manifest stays unsigned)")
    parser.add_argument("--valid-for", type=int, metavar="DAYS",
                        help="the index's valid_until is this many days from now (default with --sign: %d)"
                             % DEFAULT_VALID_DAYS)
    parser.add_argument("--openos", action="store_true",
                        help="an OpenOS repository: packages are named NAME.tar, as the upstream's installer "
                             "expects, and what the original OpenOS pm or pm-get cannot read (symbolic links, "
                             "constraints other than oppm, =X, >=X or X, compressed packages) is refused")
    parser.add_argument("--warn", action="store_true",
                        help="with --openos: only warn about what the original cannot read")
    parser.add_argument("sources", nargs="*", metavar="SOURCE",
                        help="package source trees, OpenOS projects, programs.cfg files, package files, "
                             "or folders of them (default: the current directory)")
    return parser.parse_args(argv)


def main(argv=None):
    try:
        return run(parse_arguments(sys.argv[1:] if argv is None else argv))
    except pm.PmError as e:
        sys.stderr.write("repoPackager: error: %s\n" % e.message)
        return e.exit_code
    except OSError as e:
        sys.stderr.write("repoPackager: error: %s%s\n" % (e.strerror or e, ": " + str(e.filename) if e.filename else ""))
        return pm.EXIT_FAILED


def run(args):
    if args.warn and not args.openos:
        raise pm.UsageError("--warn goes with --openos")
    if args.generate_key:
        if args.sign or args.sources or args.programs:
            raise pm.UsageError("--generate-key writes a key and exits: give it alone")
        public, secret = generate_key(args.generate_key)
        print(public)
        print(secret)
        return pm.EXIT_OK
    if args.valid_for is not None and not 1 <= args.valid_for <= 100 * 366:
        raise pm.UsageError("--valid-for takes a number of days from 1 to 36600")
    signing_key = SecretKey(args.sign) if args.sign else None
    mtime = source_date_epoch()
    dest = os.path.abspath(args.destination)
    os.makedirs(dest, exist_ok=True)
    found = []
    sources = args.sources or ([] if args.programs else ["."])
    for source in sources:
        discover(source, os.path.realpath(dest), found)
    for programs in args.programs:
        found.append(("programs", programs))
    seen, unique = set(), []
    for item in found:
        key = (item[0],) + tuple(os.path.realpath(p) for p in item[1:])
        if key not in seen:
            seen.add(key)
            unique.append(item)
    if not unique:
        raise BuildError("no package sources in %s" % ", ".join(sources + args.programs))
    contents, files = [], []
    for item in unique:
        if item[0] == "tree":
            contents.append(read_tree(item[1]))
        elif item[0] == "openos":
            contents.append(read_openos(item[1], item[2]))
        elif item[0] == "programs":
            contents.extend(read_programs(item[1]))
        else:
            files.append(item[1])
    built, new_entries, names, unreadable = [], [], {}, {}
    try:
        for content in contents:
            key = (content.name, pm.Version.parse(content.version).key)
            if key in names:
                raise BuildError("%s %s comes from both %s and %s" % (content.name, content.version,
                                                                     names[key], content.origin))
            names[key] = content.origin
            filename, path, size, digest = build(content, dest, args.zstd, mtime, args.openos)
            built.append((path, filename))
            unreadable[filename] = openos_check(args, path, content.manifest, content.origin)
            new_entries.append({"filename": filename, "size": size, "sha256": digest, "manifest": content.manifest,
                                "installed_size": installed_size(read_package_file(path))})
        for path in files:
            package = read_package_file(path)
            filename = package_filename(package.name, package.version, package_suffix(path), args.openos)
            out, temporary_path = temporary(dest, filename)
            with out, open(path, "rb") as f:
                while True:
                    chunk = f.read(pm.COPY_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
            built.append((temporary_path, filename))
            unreadable[filename] = openos_check(args, temporary_path, package.manifest, path)
            size, digest = file_digest(temporary_path)
            new_entries.append({"filename": filename, "size": size, "sha256": digest, "manifest": package.manifest,
                                "installed_size": installed_size(package)})
        new_files = {}
        for entry in new_entries:
            if entry["filename"] in new_files:      # --openos: one file name for every version
                raise BuildError("%s %s and %s %s would both be written as %s" % (
                    new_files[entry["filename"]]["manifest"]["package"], new_files[entry["filename"]]["manifest"][
                        "version"], entry["manifest"]["package"], entry["manifest"]["version"], entry["filename"]))
            new_files[entry["filename"]] = entry
        replaced = {(e["manifest"]["package"], pm.Version.parse(e["manifest"]["version"]).key) for e in new_entries}
        kept = [e for e in existing_entries(dest) if (e["manifest"]["package"], pm.Version.parse(
            e["manifest"]["version"]).key) not in replaced and e["filename"] not in new_files]
        for entry in kept:
            unreadable[entry["filename"]] = openos_problems(os.path.join(dest, entry["filename"]), entry["manifest"])
        entries = kept + new_entries
        meta = index_metadata(dest, args.valid_for if args.valid_for is not None else
                              DEFAULT_VALID_DAYS if signing_key else None)
        documents = index_documents(entries, meta, unreadable)
        signatures = [signing_key.sign(data) if signing_key else None for data in documents[:2]]
    except BaseException:
        for path, _ in built:
            if os.path.exists(path):
                os.unlink(path)
        raise
    for path, filename in built:
        os.replace(path, os.path.join(dest, filename))
        print(os.path.join(args.destination, filename))
    for name, data in zip(INDEX_NAMES, documents):
        write_atomically(dest, name, data)
    for name, signature in zip(INDEX_NAMES, signatures):
        if signature is not None:
            write_atomically(dest, name + pm.SIGNATURE_SUFFIX, signature)
        elif os.path.lexists(os.path.join(dest, name + pm.SIGNATURE_SUFFIX)):
            os.unlink(os.path.join(dest, name + pm.SIGNATURE_SUFFIX))   # it signs an index no longer there
    if signing_key:
        sys.stderr.write("repoPackager: signed the indexes with key %s (serial %d, valid until %s)\n"
                         % (signing_key.keynum.hex(), meta["serial"], meta["valid_until"]))
    sys.stderr.write("repoPackager: %d package%s built or added; the index of %s lists %d\n" % (
        len(new_entries), "" if len(new_entries) == 1 else "s", args.destination, len(entries)))
    return pm.EXIT_OK


def openos_check(args, path, manifest, origin):
    """The reasons the original OpenOS pm cannot read the package at ``path``; with
    --openos, any reason refuses it (BuildError), or with --warn is told on stderr."""
    problems = openos_problems(path, manifest)
    bare = sorted(n for n, c in manifest.get("dependencies", {}).items() if c[:1].isdigit())
    if bare and args.openos:       # read alike by the original pm (as >=X), but pm-get 1.5 raises on it
        sys.stderr.write("repoPackager: note: %s: pm-get 1.5 cannot compare a bare version (dependencies %s); "
                         ">=X means the same to pm and to the original pm\n" % (origin, ", ".join(bare)))
    if problems and args.openos:
        message = "%s: the original OpenOS pm cannot read %s %s: %s" % (
            origin, manifest["package"], manifest["version"], "; ".join(problems))
        if not args.warn:
            raise BuildError(message + " (--warn builds it anyway)")
        sys.stderr.write("repoPackager: warning: %s\n" % message)
    return problems


def package_suffix(path):
    with open(path, "rb") as f:
        magic = f.read(4)
    return ".tar.gz" if magic[:2] == b"\x1f\x8b" else ".tar.zst" if magic == b"\x28\xb5\x2f\xfd" else ".tar"


if __name__ == "__main__":
    sys.exit(main())
