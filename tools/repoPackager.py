#!/usr/bin/env python3
"""repoPackager: build reproducible pm packages and the indexes of a repository.

usage: repoPackager.py [-d DEST] [-p PROGRAMS_CFG] [-z] [SOURCE ...]

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
  * a folder of any of these, searched below (hidden folders and DEST are skipped).
With no SOURCE and no -p, the current directory is the SOURCE.

Output, in DEST (default ./packages, created when missing):
  * NAME-VERSION.tar, or NAME-VERSION.tar.zst with -z;
  * index.msgpack.zst: the index pm reads (zstd-compressed msgpack);
  * index.json: the same index for people;
  * manifest: the OpenOS Lua index (as OpenOS pm-get reads it: each package's manifest
    with its archiveName; the newest version of each package);
  every index entry carries the package file's size and sha256.
Packages already in DEST's index are kept: a build adds packages or replaces the same
name and version.  Every file is written under a temporary name and renamed into place;
when any SOURCE fails, nothing is written.

Packages are reproducible: identical input gives byte-identical files.  Members are
sorted, named without ./, with ustar headers (pax only for a path ustar cannot hold),
owner and group 0 with empty names, mtime SOURCE_DATE_EPOCH (default 0), modes
normalised (directories 0755, files 0755 when any execute bit is set, else 0644).

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
    content = Content(origin, manifest, data)
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


def checked_manifest(data, where):
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
    data = lua_literal(manifest).encode()
    content = Content(manifest_path, checked_manifest(data, manifest_path), data)
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
        manifest_bytes = lua_literal(manifest).encode()
        content = Content(where, checked_manifest(manifest_bytes, where), manifest_bytes)
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


def write_tar(out, content, mtime):
    """Write the package as a reproducible tar stream to the binary file ``out``."""
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
        try:
            header = info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")
        except ValueError:             # a path or link ustar cannot hold
            header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")
        out.write(header)
        written += len(header)
        if entry.kind == "f":
            copied = 0
            if entry.data is not None:
                out.write(entry.data)
                copied = len(entry.data)
            else:
                with open(entry.path, "rb") as f:
                    while copied <= entry.size:
                        chunk = f.read(pm.COPY_CHUNK)
                        if not chunk:
                            break
                        out.write(chunk)
                        copied += len(chunk)
            if copied != entry.size:
                raise BuildError("%s changed while it was being packaged" % (entry.path or name))
            padding = -copied % 512
            out.write(b"\0" * padding)
            written += copied + padding
    end = 1024 + (-(written + 1024) % TAR_RECORD)
    out.write(b"\0" * end)


def temporary(dest, name):
    """A new temporary file in ``dest`` (binary, open for writing) for ``name``."""
    fd, path = tempfile.mkstemp(dir=dest, prefix="." + name + ".", suffix=".tmp")
    os.fchmod(fd, 0o644)
    return os.fdopen(fd, "w+b"), path


def build(content, dest, compress, mtime):
    """Write the package into a temporary file in ``dest``; returns (file name,
    temporary path, size, sha256), checked by pm as a node would check it."""
    filename = "%s-%s.tar%s" % (content.name, content.version, ".zst" if compress else "")
    if not pm._matches(pm.FILENAME_PATTERN, filename):
        raise BuildError("%s: %s is not a usable file name" % (content.origin, filename))
    out, path = temporary(dest, filename)
    try:
        with out:
            if compress:
                zstd = pm.lazy_import("zstandard", "writing .tar.zst packages (-z)")
                with tempfile.TemporaryFile(dir=dest) as plain:
                    write_tar(plain, content, mtime)
                    size = plain.tell()
                    plain.seek(0)
                    compressor = zstd.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True,
                                                     write_content_size=True, threads=0)
                    compressor.copy_stream(plain, out, size=size)
            else:
                write_tar(out, content, mtime)
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


LUA_KEYWORDS = frozenset("and break do else elseif end false for function goto if in local nil not "
                         "or repeat return then true until while".split())


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


def index_documents(entries):
    """(index.msgpack.zst, index.json, manifest) bytes for the entries."""
    entries = sorted(entries, key=lambda e: (e["manifest"]["package"], pm.Version.parse(e["manifest"]["version"]).key,
                                             e["filename"]))
    document = {"format": pm.INDEX_FORMAT, "packages": entries}
    text = json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    zstd = pm.lazy_import("zstandard", "writing the repository index")
    packed = pm._msgpack().packb(document, use_bin_type=True)
    compressed = zstd.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True, threads=0).compress(packed)
    newest = {}
    for entry in entries:                      # sorted: the last of a name is its newest
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
    built, new_entries, names = [], [], {}
    try:
        for content in contents:
            key = (content.name, pm.Version.parse(content.version).key)
            if key in names:
                raise BuildError("%s %s comes from both %s and %s" % (content.name, content.version,
                                                                     names[key], content.origin))
            names[key] = content.origin
            filename, path, size, digest = build(content, dest, args.zstd, mtime)
            built.append((path, filename))
            new_entries.append({"filename": filename, "size": size, "sha256": digest, "manifest": content.manifest,
                                "installed_size": installed_size(read_package_file(path))})
        for path in files:
            package = read_package_file(path)
            filename = "%s-%s%s" % (package.name, package.version, package_suffix(path))
            out, temporary_path = temporary(dest, filename)
            with out, open(path, "rb") as f:
                while True:
                    chunk = f.read(pm.COPY_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
            built.append((temporary_path, filename))
            size, digest = file_digest(temporary_path)
            new_entries.append({"filename": filename, "size": size, "sha256": digest, "manifest": package.manifest,
                                "installed_size": installed_size(package)})
        replaced = {(e["manifest"]["package"], pm.Version.parse(e["manifest"]["version"]).key) for e in new_entries}
        entries = [e for e in existing_entries(dest) if (e["manifest"]["package"], pm.Version.parse(
            e["manifest"]["version"]).key) not in replaced] + new_entries
        documents = index_documents(entries)
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
    sys.stderr.write("repoPackager: %d package%s built or added; the index of %s lists %d\n" % (
        len(new_entries), "" if len(new_entries) == 1 else "s", args.destination, len(entries)))
    return pm.EXIT_OK


def package_suffix(path):
    with open(path, "rb") as f:
        magic = f.read(4)
    return ".tar.gz" if magic[:2] == b"\x1f\x8b" else ".tar.zst" if magic == b"\x28\xb5\x2f\xfd" else ".tar"


if __name__ == "__main__":
    sys.exit(main())
