#!/usr/bin/env python3
"""install.py — install pm and packages from this offline medium into a root (SPEC §12).

    python3 MEDIUM/install.py --root TARGET [--role server|client|image] [--name NAME]
                              [--source URL] [PACKAGE ...]

1. Checks the medium against medium.json (every file's sha256) and the target (this
   Python can run the medium's pm, the root is writable, there is room for what will be
   installed).  A refusal is one line and nothing is written.
2. Installs the ``pm`` package from the medium's repository with the medium's pm.py and
   wheels, offline (or upgrades an older pm; a newer one is left alone).
3. Makes the root trust the medium's keys (``pm key add``, when it was made with --key),
   writes ``etc/opm.conf`` (role and name) when --role is given, and points
   ``etc/pm/sources.list`` at the medium's repository (or at --source URL).
4. Installs the PACKAGEs with their dependencies from the medium, offline, with the pm
   now in the root (``TARGET/usr/bin/pm``).

Running it again changes nothing; a run interrupted at any point is finished by the
next one (pm's transactions are atomic, and each step looks at what is there first).
Exit status: 0 done, 1 refused or failed, 2 usage, 3 the medium is damaged.
"""

import os
import sys

MIN_PYTHON = (3, 9)
if sys.version_info < MIN_PYTHON:
    sys.stderr.write("install.py: error: pm needs Python %d.%d or newer; this is %d.%d\n"
                     % (MIN_PYTHON + tuple(sys.version_info[:2])))
    sys.exit(1)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402

MEDIUM = os.path.dirname(os.path.abspath(__file__))
DESCRIPTION = "medium.json"
MEDIUM_FORMAT = 1
OPM_CONF = "/etc/opm.conf"
SOURCES_LIST = "/etc/pm/sources.list"
SOURCES_MARK = "# the pm installer's source (install.py rewrites the line below)"
# make_medium.py leaves these out of the pm package too: zstandard's cffi backend
# needs cffi, which pm does not ship, and it is half of the wheels' size.
UNUSABLE = ("zstandard/_cffi.*", "zstandard/backend_cffi.py")
DB_OVERHEAD = 1 << 20          # database, journal, file lists: generous for a fresh root
PER_ENTRY_OVERHEAD = 256       # one path in pm's file list


class Refusal(Exception):
    """One line for people, and the exit status."""

    def __init__(self, message, code=1):
        super().__init__(message)
        self.message, self.code = message, code


def say(message):
    sys.stdout.write("install.py: " + message + "\n")
    sys.stdout.flush()


# -- the medium ------------------------------------------------------------------------

def read_medium():
    """medium.json, after checking every file it lists against its size and sha256."""
    import hashlib
    try:
        with open(os.path.join(MEDIUM, DESCRIPTION), encoding="utf-8") as f:
            description = json.load(f)
        files = description["files"]
        description["packages"], description["wheels"], description["target"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise Refusal("%s has no readable %s (%s); is this a pm medium?" % (MEDIUM, DESCRIPTION, e), 3)
    if description.get("medium") != MEDIUM_FORMAT:
        raise Refusal("this medium has format %r; this install.py reads format %d"
                      % (description.get("medium"), MEDIUM_FORMAT), 3)
    for rel, expected in sorted(files.items()):
        path = os.path.join(MEDIUM, *rel.split("/"))
        h = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        except OSError as e:
            raise Refusal("the medium is damaged: %s: %s" % (rel, e.strerror or e), 3)
        if h.hexdigest() != expected["sha256"]:
            raise Refusal("the medium is damaged: %s does not match its sha256 in %s" % (rel, DESCRIPTION), 3)
    return description


def package_table(description):
    """{name: [package entry, ...]} of the medium's repository."""
    table = {}
    for entry in description["packages"]:
        table.setdefault(entry["name"], []).append(entry)
    return table


def newest(entries):
    pm = load_pm()
    return max(entries, key=lambda e: pm.Version.parse(e["version"]))


# -- checking the target ------------------------------------------------------------------

def wheel_fits(filename, version, machine):
    """Whether a wheel (by its PEP 427 tags) loads on CPython ``version`` on ``machine``."""
    parts = filename[:-len(".whl")].split("-")
    pythons, abis, platforms = parts[-3].split("."), parts[-2].split("."), parts[-1].split(".")
    here = "cp%d%d" % version[:2]

    def python_ok(tag):
        if tag in ("py3", here, "py%d%d" % version[:2]):
            return True
        # cp39-abi3 runs on every CPython from 3.9 on
        return tag.startswith("cp3") and tag[3:].isdigit() and "abi3" in abis and int(tag[3:]) <= version[1]

    abi_ok = any(a in ("none", "abi3", here) for a in abis)
    platform_ok = any(p == "any" or p.endswith("_" + machine) for p in platforms)
    return any(python_ok(t) for t in pythons) and abi_ok and platform_ok


def check_python(description):
    import platform
    machine = platform.machine()
    if sys.implementation.name != "cpython" and description["target"].get("implementation", "cp") == "cp":
        raise Refusal("this medium's Python packages are for CPython; this is %s" % sys.implementation.name)
    for wheel in description["wheels"]:
        if not wheel_fits(os.path.basename(wheel), sys.version_info, machine):
            target = description["target"]
            raise Refusal("this medium's Python packages are for Python %s on %s; this is Python %d.%d on %s "
                          "(make a medium for it with make_medium.py --python-version %d.%d)"
                          % (target["python"], target["machine"], sys.version_info[0], sys.version_info[1],
                             machine, sys.version_info[0], sys.version_info[1]))


def existing_ancestor(path):
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def check_writable(target):
    """The root, or the directory it will be made in, is a writable directory."""
    place = existing_ancestor(target)
    if not os.path.isdir(place):
        raise Refusal("%s is not a directory" % place)
    if not os.access(place, os.W_OK | os.X_OK):
        try:
            read_only = os.statvfs(place).f_flag & os.ST_RDONLY
        except OSError:
            read_only = False
        raise Refusal("%s is not writable%s" % (place, " (a read-only filesystem)" if read_only else
                                                 " by this user" if os.geteuid() else ""))
    return place


def package_name(spec):
    """The name in a ``NAME[CONSTRAINT]`` argument (``hello``, ``hello>=1.2``, ``"hello ^1"``)."""
    import re
    return re.split(r"[\s=<>!^~*]", spec.strip(), 1)[0]


def needed_packages(table, names):
    """The medium's packages ``names`` need, by name through their dependencies: an
    upper bound of what installing them takes (pm itself chooses the versions)."""
    wanted, queue = {}, list(names)
    while queue:
        name = queue.pop()
        if name in wanted or name not in table:
            continue
        entry = max(table[name], key=lambda e: e["installed_size"])
        wanted[name] = entry
        queue.extend(entry.get("dependencies") or {})
    return wanted


def check_space(place, table, names, installed):
    """Enough free blocks and inodes where the root is for everything not yet installed
    at the medium's version."""
    need_bytes, need_inodes = 0, 0
    for name, entry in needed_packages(table, names).items():
        if installed.get(name) in {e["version"] for e in table[name]}:
            continue
        need_bytes += entry["installed_size"] + entry["entries"] * PER_ENTRY_OVERHEAD
        need_inodes += entry["entries"]
    if not need_bytes:
        return
    need_bytes += DB_OVERHEAD
    st = os.statvfs(place)
    free = st.f_bavail * st.f_frsize
    if free < need_bytes:
        raise Refusal("%s has %s free; installing needs about %s" % (place, human(free), human(need_bytes)))
    if st.f_files and st.f_favail < need_inodes + 64:
        raise Refusal("%s has %d free inodes; installing needs about %d" % (place, st.f_favail, need_inodes + 64))


def human(n):
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return ("%d %s" if unit == "bytes" else "%.1f %s") % (n, unit)
        n /= 1024.0


# -- pm from the medium -------------------------------------------------------------------

_pm_module = None
_site = None


def unpack_wheels(description):
    """The medium's wheels unpacked into a temporary directory (outside the root), the
    way a wheel installer lays out purelib/platlib wheels; removed at exit."""
    global _site
    import atexit
    import fnmatch
    import zipfile
    _site = tempfile.mkdtemp(prefix="pm-install-site-")
    atexit.register(shutil.rmtree, _site, True)
    try:
        for wheel in description["wheels"]:
            with zipfile.ZipFile(os.path.join(MEDIUM, *wheel.split("/"))) as archive:
                members = archive.namelist()
                for member in members:
                    if member.startswith("/") or ".." in member.split("/") or "\\" in member:
                        raise Refusal("the medium is damaged: %s holds the path %r" % (wheel, member), 3)
                archive.extractall(_site, [m for m in members
                                           if not any(fnmatch.fnmatch(m, p) for p in UNUSABLE)])
    except (OSError, zipfile.BadZipFile) as e:
        raise Refusal("cannot unpack the medium's wheels into %s: %s"
                      % (tempfile.gettempdir(), getattr(e, "strerror", None) or e))
    sys.path.insert(0, _site)           # for the medium's pm.py loaded into this process
    check = subprocess.run([sys.executable, "-c", "import msgpack, semver, zstandard"],
                           env=bootstrap_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check.returncode != 0:
        lines = check.stderr.strip().splitlines()
        raise Refusal("the medium's Python packages do not load on this Python (%s)"
                      % (lines[-1] if lines else "exit %d" % check.returncode))
    return _site


def bootstrap_env():
    """The environment pm runs in from the medium: the unpacked wheels first, no
    bytecode written onto the medium."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env["PYTHONPATH"] = _site + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def load_pm():
    """The medium's pm.py as a module (its checks, database reader and safe file
    writing); what it imports lazily comes from the unpacked wheels."""
    global _pm_module
    if _pm_module is None:
        import importlib.util
        sys.dont_write_bytecode = True
        spec = importlib.util.spec_from_file_location("pm", os.path.join(MEDIUM, "pm.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules["pm"] = module
        spec.loader.exec_module(module)
        _pm_module = module
    return _pm_module


def installed_versions(target):
    """{name: version} of the packages installed in the root, from its last committed
    database (read only: nothing is recovered or written here)."""
    if not os.path.isdir(target):
        return {}
    pm = load_pm()
    root = pm.Root(target)
    try:
        db = pm.Database(root).load()
        return {name: record["version"] for name, record in db.installed().items()}
    except pm.PmError as e:
        raise Refusal("the pm database in %s cannot be read: %s" % (target, e.message))
    finally:
        root.close()


def run_pm(command, what, env=None):
    """Run a pm command, its output passed through; a failure ends the installation."""
    sys.stdout.flush()
    code = subprocess.run(command, stdin=subprocess.DEVNULL, env=env).returncode
    if code != 0:
        how = "exit %d" % code if code > 0 else "killed by signal %d" % -code
        raise Refusal("%s failed (%s); running install.py again continues from there" % (what, how),
                      code if code > 0 else 1)


def medium_pm(target, *args):
    return [sys.executable, os.path.join(MEDIUM, "pm.py"), "--root", target] + list(args)


def target_pm(target, *args):
    return [sys.executable, os.path.join(target, "usr", "bin", "pm"), "--root", target] + list(args)


# -- the steps ------------------------------------------------------------------------------

def install_pm(target, description, installed):
    """The pm package into the root: bootstrapped with the medium's pm when the root has
    none, upgraded by the root's own pm when it is older; recovery of an interrupted
    transaction happens first in either case, as in every pm command."""
    pm = load_pm()
    offered = newest(package_table(description)["pm"])
    package_file = os.path.join(MEDIUM, *offered["file"].split("/"))
    have = installed.get("pm")
    if have is None:
        os.makedirs(target, exist_ok=True)
        run_pm(medium_pm(target, "install", package_file), "installing pm", bootstrap_env())
        return
    if pm.Version.parse(have) < pm.Version.parse(offered["version"]):
        run_pm(target_pm(target, "install", package_file), "upgrading pm")
        return
    say("pm %s is installed%s" % (have, "" if have == offered["version"] else
                                  " (newer than the medium's %s: kept)" % offered["version"]))
    if os.path.lexists(os.path.join(target, "var", "lib", "pm", "journal")):
        run_pm(target_pm(target, "recover"), "recovering an interrupted transaction")


@contextlib.contextmanager
def root_access(target, doing, path):
    """pm's Root on the target (every path opened without following symbolic links);
    its errors become a Refusal naming what was being done."""
    pm = load_pm()
    root = pm.Root(target)
    try:
        yield root
    except pm.PmError as e:
        raise Refusal("cannot %s %s: %s" % (doing, path, e.message))
    except OSError as e:
        raise Refusal("cannot %s %s: %s" % (doing, path, e.strerror or e))
    finally:
        root.close()


def write_config(target, path, text, what):
    """Write a configuration file under the root, atomically; the same content is not
    written again."""
    if read_config(target, path) == text:
        return False
    pm = load_pm()
    with root_access(target, "write", path) as root:
        parent, name = pm.split_path(path)
        pm.atomic_write(root.dir_fd(parent, 0o755), name, text.encode("utf-8"), sync=True, kind="write")
    say("wrote %s (%s)" % (path.lstrip("/"), what))
    return True


def read_config(target, path):
    """The text of a file under the root, or None when it is not there."""
    with root_access(target, "read", path) as root:
        try:
            data = root.read(path)
        except (FileNotFoundError, NotADirectoryError):
            data = None
    return None if data is None else data.decode("utf-8", "replace")


def sources_text(existing, source):
    """sources.list with the installer's line set to ``source``: the operator's own
    lines stay as they are."""
    if existing is None:
        return SOURCES_MARK + "\n" + source + "\n"
    lines = existing.splitlines()
    if SOURCES_MARK in lines:
        i = lines.index(SOURCES_MARK)
        lines[i + 1:i + 2] = [source]
    elif source in (line.strip() for line in lines):
        return existing
    else:
        lines += [SOURCES_MARK, source]
    return "\n".join(lines) + "\n"


# -- command line -------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(
        prog="install.py",
        description="Install pm and packages from this offline medium into a root (a node's / or an "
                    "image directory). Running it again changes nothing; an interrupted run is "
                    "finished by the next.")
    parser.add_argument("--root", required=True, metavar="TARGET", help="the root to install into")
    parser.add_argument("--role", choices=("server", "client", "image"),
                        help="write etc/opm.conf for OPM with this role")
    parser.add_argument("--name", help="the node or image name for etc/opm.conf (default: the host name, "
                                       "or the image directory's name for --role image)")
    parser.add_argument("--source", metavar="URL",
                        help="the source etc/pm/sources.list names (default: this medium's repository); "
                             "the installation itself always uses the medium")
    parser.add_argument("packages", nargs="*", metavar="NAME[CONSTRAINT]",
                        help="packages to install from the medium, as pm install takes them (hello, hello>=1.2)")
    return parser


def guarded(program, action, interrupted=""):
    """Run ``action()`` and return its exit status; a Refusal, an OSError or an
    interruption becomes one line on stderr (make_medium.py shares this)."""
    try:
        return action()
    except Refusal as e:
        sys.stderr.write("%s: error: %s\n" % (program, " ".join(e.message.split("\n"))))
        return e.code
    except Exception as e:
        if _pm_module is None or not isinstance(e, _pm_module.PmError):
            raise
        sys.stderr.write("%s: error: %s\n" % (program, " ".join(e.message.split("\n"))))
        return e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("%s: interrupted%s\n" % (program, interrupted))
        return 1
    except OSError as e:
        what = "%s: %s" % (e.strerror or e, e.filename) if e.filename else (e.strerror or str(e))
        sys.stderr.write("%s: error: %s\n" % (program, what))
        return 1


def main(argv=None):
    return guarded("install.py", lambda: install(build_parser().parse_args(argv)),
                   "; running it again continues from there")


def install(args):
    target = os.path.abspath(args.root)
    name = args.name
    if name is not None and not args.role:
        raise Refusal("--name goes with --role", 2)
    if args.role and name is None:
        import socket
        name = os.path.basename(target.rstrip("/")) if args.role == "image" else socket.gethostname()
    if args.source is not None and (not args.source.strip() or any(ord(c) < 32 for c in args.source)):
        raise Refusal("--source must be one line", 2)

    description = read_medium()
    if args.role and not load_pm().valid_node_name(name):
        raise Refusal("%r is not a name pm opm accepts in etc/opm.conf (a letter or digit, then letters, "
                      "digits, '.', '_', '+', '-')" % name, 2)
    table = package_table(description)
    names = [package_name(spec) for spec in args.packages]
    unknown = [n for n in names if n not in table]
    if unknown:
        raise Refusal("not on this medium: %s (it has %s)" % (", ".join(unknown), ", ".join(sorted(table))))
    if "pm" not in table:
        raise Refusal("the medium has no pm package", 3)
    check_python(description)
    place = check_writable(target)
    unpack_wheels(description)
    installed = installed_versions(target)
    check_space(place, table, ["pm"] + names, installed)

    install_pm(target, description, installed)
    for key in description.get("keys", []):
        run_pm(target_pm(target, "-q", "key", "add", os.path.join(MEDIUM, *key.split("/"))),
               "trusting the key " + key)
    if args.role:
        write_config(target, OPM_CONF, "%s\n%s\n" % (args.role, name), "%s %s" % (args.role, name))
    source = args.source or os.path.join(MEDIUM, description["repository"])
    new_sources = sources_text(read_config(target, SOURCES_LIST), source)
    write_config(target, SOURCES_LIST, new_sources, source)
    if args.packages:
        # from the medium even when sources.list names another source (--source)
        medium_repo = ["--repository", os.path.join(MEDIUM, description["repository"])] if args.source else []
        run_pm(target_pm(target, *medium_repo + ["install"] + args.packages),
               "installing " + " ".join(args.packages))
    say("done: pm %s in %s" % (installed_versions(target).get("pm"), target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
