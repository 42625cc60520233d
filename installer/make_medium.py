#!/usr/bin/env python3
"""make_medium.py — build an offline installation medium for pm (SPEC §12).

The counterpart of OpenOS pm's installation floppy, for Linux nodes and cluster images
that have no network.  A medium holds:

  install.py     the bootstrap: ``python3 MEDIUM/install.py --root TARGET [PACKAGE ...]``
  pm.py          pm itself, run from the medium to install the ``pm`` package
  wheels/        the Python packages pm needs (msgpack, semver, zstandard, and
                 cryptography to check signed indexes), as pip fetched them for the
                 target's Python and architecture
  keys/          with --key: the public keys install.py makes the root trust
                 (etc/pm/keys); the medium's repository is then signed (--sign)
  repo/          a repository written by tools/repoPackager.py: the ``pm`` package
                 (pm.py, its Python packages and the /usr/bin/pm launcher) and the
                 packages asked for with --include, with their dependencies
  medium.json    the description: target, packages, and every file's size and sha256

as a directory, one tar archive (--format tar) or a FAT image with no partition table
(--format img, a "superfloppy": dd it to a USB stick or attach it to a VM as a floppy
or disk; needs Debian's mtools and dosfstools).

The ``pm`` package installs ``/usr/lib/pm/VERSION/`` (pm.py, ``site/`` with the Python
packages, ``CONTENTS``) and ``/usr/bin/pm``, the launcher that runs the newest complete
version directory: a self-upgrade (``pm install pm``) that is killed part-way leaves a pm
that runs and finishes or undoes it.
"""

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
# In a checkout the packager is tools/repoPackager.py; installed from the wheel, tools/
# is the package pm_tools beside this one (pip install . gives pm-make-medium).
PACKAGER = next((path for path in (os.path.join(TOP, "tools", "repoPackager.py"),
                                   os.path.join(TOP, "pm_tools", "repoPackager.py"))
                 if os.path.isfile(path)), os.path.join(TOP, "tools", "repoPackager.py"))
LAUNCHER = os.path.join(HERE, "launcher.py")
BOOTSTRAP = os.path.join(HERE, "install.py")

# pm's runtime dependencies, as pyproject.toml declares them (a test keeps them equal).
REQUIREMENTS = ("msgpack>=1.0", "semver>=3.0", "zstandard>=0.18")
# ...and what pm checks signed indexes with (pyproject's "signatures" extra).
SIGNATURE_REQUIREMENTS = ("cryptography>=3.1",)
BUNDLED = REQUIREMENTS + SIGNATURE_REQUIREMENTS


def _bootstrap():
    """install.py, the medium's bootstrap, as a module: it owns the medium's format."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("pm_medium_install", BOOTSTRAP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_BOOT = _bootstrap()
DESCRIPTION, MEDIUM_FORMAT, UNUSABLE = _BOOT.DESCRIPTION, _BOOT.MEDIUM_FORMAT, _BOOT.UNUSABLE

LIBRARY = "/usr/lib/pm"          # where the pm package puts its version directories
FAT_LABEL = "PM MEDIUM"
MIN_IMAGE_KIB = 1440             # never smaller than a 3.5" floppy


BuildError = _BOOT.Refusal     # one line for people and the exit status (1, or 2 for usage)


def say(message):
    sys.stderr.write("make_medium: " + message + "\n")


# -- the target ---------------------------------------------------------------------

class Target:
    """The Python and machine the medium is for: this interpreter's unless given."""

    def __init__(self, python_version=None, platforms=None, implementation=None, abi=None):
        if python_version and not re.match(r"^3\.\d+$", python_version):
            raise BuildError("--python-version wants MAJOR.MINOR, such as 3.11", 2)
        self.python_version = python_version
        self.platforms = list(platforms or [])
        self.implementation = implementation
        self.abi = abi

    @property
    def is_this_interpreter(self):
        import platform
        same_python = self.python_version in (None, "%d.%d" % sys.version_info[:2])
        same_machine = all(p.endswith("_" + platform.machine()) or p == "any" for p in self.platforms)
        return same_python and same_machine and self.implementation in (None, "cp") \
            and sys.implementation.name == "cpython" and self.abi is None

    def pip_options(self):
        options = []
        if self.python_version:
            options += ["--python-version", self.python_version]
        for tag in self.platforms:
            options += ["--platform", tag]
        if self.implementation:
            options += ["--implementation", self.implementation]
        if self.abi:
            options += ["--abi", self.abi]
        return options

    def describe(self, wheel_names):
        """The target as the wheels pip chose show it (for medium.json and install.py)."""
        import platform
        tags = [wheel_tags(name) for name in wheel_names]
        machines = sorted({machine_of(p) for _, _, plats in tags for p in plats} - {"any"})
        return {"python": self.python_version or "%d.%d" % sys.version_info[:2],
                "implementation": self.implementation or "cp",
                "machine": machines[0] if len(machines) == 1 else
                ("any" if not machines else "/".join(machines)),
                "platforms": self.platforms or None,
                "built_on": "%s %d.%d on %s" % (sys.implementation.name, sys.version_info[0],
                                                 sys.version_info[1], platform.machine())}


def wheel_tags(filename):
    """(python tags, abi tags, platform tags) of a wheel file name (PEP 427)."""
    parts = filename[:-len(".whl")].split("-")
    if len(parts) < 5:
        raise BuildError("%s is not a wheel file name" % filename)
    return parts[-3].split("."), parts[-2].split("."), parts[-1].split(".")


def machine_of(platform_tag):
    """``x86_64`` for ``manylinux_2_17_x86_64``, ``linux_x86_64``, ``musllinux_1_2_x86_64``."""
    if platform_tag == "any":
        return "any"
    for machine in ("x86_64", "aarch64", "armv7l", "armv6l", "i686", "ppc64le", "s390x", "riscv64"):
        if platform_tag.endswith("_" + machine):
            return machine
    return platform_tag.rsplit("_", 1)[-1]


# -- Python packages ------------------------------------------------------------------

def run_tool(command, what, env=None):
    """Run a helper program; its last error line becomes a BuildError."""
    proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if proc.returncode != 0:
        lines = [l for l in (proc.stderr + proc.stdout).splitlines() if l.strip()
                 and not l.startswith("WARNING: Location")]
        raise BuildError("%s failed: %s" % (what, lines[-1].strip() if lines else "exit %d" % proc.returncode))
    return proc


def fetch_wheels(dest, target, wheel_dir):
    """pip download of pm's dependencies for the target, binary wheels only; from
    ``wheel_dir`` alone (no index) when given."""
    command = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input",
               "-q", "--only-binary=:all:", "--dest", dest] + target.pip_options()
    if wheel_dir:
        command += ["--no-index", "--find-links", os.path.abspath(wheel_dir)]
    run_tool(command + list(BUNDLED), "pip download of %s" % " ".join(BUNDLED))
    wheels = sorted(n for n in os.listdir(dest) if n.endswith(".whl"))
    names = {re.split(r"[<>=!~]", r)[0] for r in BUNDLED}
    missing = names - {w.split("-")[0].lower() for w in wheels}
    if missing:
        raise BuildError("pip gave no wheel for %s" % ", ".join(sorted(missing)))
    return wheels


def install_site(wheel_dir, dest, target):
    """The importable copies pm runs with: pip install --target from the medium's
    wheels, offline; console scripts (made for this machine's Python) left out."""
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q",
               "--no-index", "--find-links", wheel_dir, "--only-binary=:all:", "--no-compile",
               "--no-warn-script-location", "--target", dest] + target.pip_options()
    env = dict(os.environ, PIP_FIND_LINKS="", PIP_EXTRA_INDEX_URL="")
    run_tool(command + list(BUNDLED), "pip install of the medium's wheels", env)
    shutil.rmtree(os.path.join(dest, "bin"), ignore_errors=True)
    import glob
    for pattern in UNUSABLE:
        for path in glob.glob(os.path.join(dest, pattern)):
            os.unlink(path)


# -- the pm package -------------------------------------------------------------------

def pm_version(pm_py):
    """``__version__`` of a pm.py, read as text (it may be another pm than this one)."""
    with open(pm_py, encoding="utf-8") as f:
        match = re.search(r'^__version__ = "([^"]+)"$', f.read(), re.M)
    if not match:
        raise BuildError("%s has no __version__ line; is it pm.py?" % pm_py)
    return match.group(1)


def build_pm_tree(dest, pm_py, version, site, target, wheel_names):
    """A package source tree (manifest, DATA/) for repoPackager: the launcher as
    /usr/bin/pm and LIBRARY/VERSION/ with pm.py, site/ and CONTENTS.  Bytecode is
    included (hash-checked, so it stays valid under repoPackager's fixed mtimes) when
    the target runs this very Python; else Python compiles in memory each run, since
    the launcher never writes __pycache__ into the package's directories."""
    version_dir = os.path.join(dest, "DATA" + LIBRARY, version)
    os.makedirs(version_dir)
    shutil.copyfile(pm_py, os.path.join(version_dir, "pm.py"))
    shutil.copytree(site, os.path.join(version_dir, "site"))
    if target.is_this_interpreter:
        import compileall
        import py_compile
        mode = py_compile.PycInvalidationMode.CHECKED_HASH
        ok = compileall.compile_dir(version_dir, quiet=1, ddir=LIBRARY + "/" + version,
                                    invalidation_mode=mode, workers=1)
        if not ok:
            raise BuildError("byte-compiling the pm package failed")
    contents = []
    for dirpath, dirnames, filenames in os.walk(version_dir):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            contents.append((os.path.relpath(path, version_dir), os.path.getsize(path)))
    with open(os.path.join(version_dir, "CONTENTS"), "w", encoding="utf-8") as f:
        f.writelines("%d %s\n" % (size, rel) for rel, size in sorted(contents))
    bin_dir = os.path.join(dest, "DATA", "usr", "bin")
    os.makedirs(bin_dir)
    with open(LAUNCHER, encoding="utf-8") as f:
        launcher = f.read()
    if launcher.count('VERSION = "@PM_VERSION@"') != 1:
        raise BuildError("%s lost its VERSION line" % LAUNCHER)
    with open(os.path.join(bin_dir, "pm"), "w", encoding="utf-8") as f:
        f.write(launcher.replace('VERSION = "@PM_VERSION@"', "VERSION = %s" % json.dumps(version)))
    os.chmod(os.path.join(bin_dir, "pm"), 0o755)
    described = target.describe(wheel_names)
    bundled = ", ".join(w.split("-")[0] + " " + w.split("-")[1] for w in wheel_names)
    manifest = {
        "manifestVersion": "1.0", "package": "pm", "version": version, "name": "pm",
        "description": "pm, the package manager, with %s for %s %s on %s"
                       % (bundled, "CPython" if described["implementation"] == "cp" else
                          described["implementation"], described["python"], described["machine"]),
        "architecture": described["machine"] if "/" not in described["machine"] else "any",
        "python": described["python"],
        "essential": True,                 # uninstalling pm would leave no package manager
    }
    with open(os.path.join(dest, "manifest"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")


# -- the repository ---------------------------------------------------------------------

def build_repository(dest, pm_tree, package_files, compress, sign=None):
    """tools/repoPackager.py writes the medium's repository: the pm package (.tar, or
    .tar.zst with ``compress``) and the chosen package files as they are; its indexes
    signed with the secret key ``sign`` when given."""
    if not os.path.isfile(PACKAGER):
        raise BuildError("%s is missing (it comes with pm's repository tools)" % PACKAGER)
    env = dict(os.environ)
    env.setdefault("SOURCE_DATE_EPOCH", "0")
    run_tool([sys.executable, PACKAGER, "-d", dest] + (["-z"] if compress else [])
             + (["--sign", os.path.abspath(sign)] if sign else []) + [pm_tree]
             + list(package_files),
             "tools/repoPackager.py", env)


def describe_packages(repo):
    """Name, version, file, sizes and dependencies of every package in the medium's
    repository, read with pm's own package reader."""
    sys.path.insert(0, TOP)
    import pm
    packages = []
    for name in sorted(os.listdir(repo)):
        if not name.endswith((".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst")):
            continue
        package = pm.Package(os.path.join(repo, name), allow_setuid=True)
        package.close()
        blocks = sum(-(-m.size // 4096) * 4096 if m.kind == "f" else 4096 if m.kind == "d" else 0
                     for m in package.members)
        packages.append({"name": package.name, "version": package.version.text, "file": "repo/" + name,
                         "size": os.path.getsize(os.path.join(repo, name)),
                         "installed_size": blocks, "entries": len(package.members),
                         "dependencies": package.manifest.get("dependencies", {})})
    return packages


# -- the medium -------------------------------------------------------------------------

def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def medium_files(medium):
    """Every file of the medium, relative, sorted (the description itself left out)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(medium):
        dirnames.sort()
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), medium)
            if rel != DESCRIPTION:
                found.append(rel.replace(os.sep, "/"))
    return sorted(found)


def write_description(medium, version, target_description, wheels, packages, included, keys=()):
    description = {
        "keys": ["keys/" + k for k in keys],
        "medium": MEDIUM_FORMAT,
        "pm": version,
        "target": target_description,
        "wheels": ["wheels/" + w for w in wheels],
        "repository": "repo",
        "included": included,
        "packages": packages,
        "files": {rel: {"size": os.path.getsize(os.path.join(medium, rel)),
                        "sha256": sha256_file(os.path.join(medium, rel))} for rel in medium_files(medium)},
    }
    with open(os.path.join(medium, DESCRIPTION), "w", encoding="utf-8") as f:
        json.dump(description, f, indent=1, sort_keys=True)
        f.write("\n")


def publish_directory(staged, out):
    """Put the staged medium at ``out``: a new directory is renamed into place; an
    existing medium (or empty directory) is replaced; anything else is left alone."""
    if os.path.lexists(out):
        if os.path.islink(out) or not os.path.isdir(out):
            raise BuildError("%s exists and is not a directory" % out)
        if os.listdir(out) and not os.path.isfile(os.path.join(out, DESCRIPTION)):
            raise BuildError("%s exists and is not a pm medium; not replacing it" % out)
        old = tempfile.mkdtemp(prefix=".old-medium-", dir=os.path.dirname(out))
        os.rename(out, os.path.join(old, "medium"))
        os.rename(staged, out)
        shutil.rmtree(old)
    else:
        os.rename(staged, out)


@contextlib.contextmanager
def published(out):
    """A temporary file beside ``out`` that becomes ``out`` when the block succeeds and
    is removed when it fails, so ``out`` is never half written."""
    fd, temporary = tempfile.mkstemp(prefix="." + os.path.basename(out) + ".", dir=os.path.dirname(out))
    os.close(fd)
    try:
        yield temporary
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, out)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def write_tar(medium, out):
    """One reproducible archive: sorted members under one top directory named after
    the archive, owner 0, mtime SOURCE_DATE_EPOCH (default 0)."""
    import tarfile
    top = os.path.basename(out)
    for suffix in (".tar", ".tgz", ".tar.gz"):
        if top.endswith(suffix):
            top = top[:-len(suffix)]
    top = top or "pm-medium"
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))

    def normalise(info):
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = mtime
        info.mode = 0o755 if info.isdir() or info.mode & 0o111 else 0o644
        return info

    with published(out) as temporary:
        with tarfile.open(temporary, "w:gz" if out.endswith((".tgz", ".tar.gz")) else "w",
                          format=tarfile.PAX_FORMAT) as tar:
            tar.add(medium, top, recursive=False, filter=normalise)
            for dirpath, dirnames, filenames in os.walk(medium):
                dirnames.sort()
                for name in sorted(dirnames + filenames):
                    path = os.path.join(dirpath, name)
                    arcname = top + "/" + os.path.relpath(path, medium).replace(os.sep, "/")
                    tar.add(path, arcname, recursive=False, filter=normalise)


def image_tools():
    """(mkfs command, mcopy) for --format img, or a BuildError naming what to install."""
    mcopy = shutil.which("mcopy")
    mkfs = shutil.which("mkfs.fat") or shutil.which("mkfs.vfat") or \
        next((p for p in ("/sbin/mkfs.fat", "/usr/sbin/mkfs.fat") if os.access(p, os.X_OK)), None)
    mformat = shutil.which("mformat")
    if not mcopy or not (mkfs or mformat):
        missing = ([] if mcopy else ["mcopy"]) + ([] if mkfs or mformat else ["mkfs.fat", "mformat"])
        raise BuildError("--format img needs mtools and dosfstools (not found: %s); install them with "
                         "apt-get install mtools dosfstools, or use --format dir or tar" % ", ".join(missing))
    return mkfs, mformat, mcopy


def write_image(medium, out, tools):
    """A FAT image holding the medium's files at its top, sized to fit them (a
    "superfloppy": no partition table)."""
    mkfs, mformat, mcopy = tools
    files = medium_files(medium) + [DESCRIPTION]
    data = sum(-(-os.path.getsize(os.path.join(medium, f)) // 4096) * 4096 for f in files)
    kib = max(MIN_IMAGE_KIB, (data * 11 // 10) // 1024 + 1024)
    kib = -(-kib // 64) * 64
    volume_id = sha256_file(os.path.join(medium, DESCRIPTION))[:8]
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    with published(out) as temporary:
        with open(temporary, "wb") as f:
            f.truncate(kib * 1024)
        if mkfs:
            run_tool([mkfs, "-n", FAT_LABEL, "-i", volume_id, temporary], "mkfs.fat")
        else:
            run_tool([mformat, "-i", temporary, "-v", FAT_LABEL.replace(" ", "_"), "-N", volume_id,
                      "-T", str(kib * 2), "-h", "64", "-s", "32", "::"], "mformat", env)
        entries = [os.path.join(medium, name) for name in sorted(os.listdir(medium))]
        run_tool([mcopy, "-i", temporary, "-s", "-p", "-m", "-Q"] + entries + ["::/"], "mcopy", env)


# -- command line -------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(
        prog="make_medium.py",
        description="Build an offline installation medium for pm: the bootstrap install.py, pm.py, "
                    "the Python packages pm needs (wheels for the target), and a repository with the "
                    "pm package and the packages asked for. Then, on the target: "
                    "python3 MEDIUM/install.py --root TARGET [PACKAGE ...].")
    parser.add_argument("--out", required=True, metavar="PATH",
                        help="where to write the medium: a directory (--format dir), an archive "
                             "(tar) or an image file (img)")
    parser.add_argument("--format", choices=("dir", "tar", "img"), default="dir",
                        help="dir (default), tar (one archive; .tar.gz/.tgz compresses it) or img "
                             "(a FAT image with no partition table; needs mtools and dosfstools)")
    parser.add_argument("--repo", metavar="REPO", help="a pm repository (directory) to take packages from")
    parser.add_argument("--include", nargs="+", default=[], metavar="NAME",
                        help="packages from --repo to put on the medium, with their dependencies "
                             "(default with --repo: all of them)")
    parser.add_argument("--python-version", metavar="X.Y",
                        help="the target's Python (default: this one's, %d.%d)" % sys.version_info[:2])
    parser.add_argument("--platform", action="append", metavar="TAG",
                        help="a wheel platform tag of the target, such as manylinux2014_aarch64 "
                             "(repeatable; default: this machine's)")
    parser.add_argument("--implementation", metavar="IMPL", help="the target's Python implementation (cp)")
    parser.add_argument("--abi", metavar="ABI", help="the target's Python ABI tag, such as cp311")
    parser.add_argument("--wheels", metavar="DIR",
                        help="take the wheels from DIR only (no package index: an offline build)")
    parser.add_argument("--pm", metavar="PM.PY", default=os.path.join(TOP, "pm.py"),
                        help="the pm.py to put on the medium (default: this repository's)")
    parser.add_argument("--zstd", action="store_true",
                        help="write the pm package as .tar.zst: a third of the size, but zstd's "
                             "highest level (which repoPackager uses) takes a while")
    parser.add_argument("--key", action="append", default=[], metavar="FILE.pub",
                        help="a signify/usign public key the installed root trusts (etc/pm/keys; "
                             "repeatable); needs --sign")
    parser.add_argument("--sign", metavar="KEY.sec",
                        help="sign the medium's repository with this secret key (its public key must be "
                             "one of --key)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return _BOOT.guarded("make_medium", lambda: make_medium(args))


def make_medium(args):
    out = os.path.abspath(args.out)
    if args.include and not args.repo:
        raise BuildError("--include takes packages from a repository: give --repo", 2)
    if (args.platform or args.abi or args.implementation) and not args.python_version:
        raise BuildError("--platform, --abi and --implementation need --python-version too", 2)
    keys = read_keys(args.key, args.sign)
    tools = image_tools() if args.format == "img" else None
    if not os.path.isdir(os.path.dirname(out)):
        raise BuildError("%s does not exist" % os.path.dirname(out))
    target = Target(args.python_version, args.platform, args.implementation, args.abi)
    version = pm_version(args.pm)
    log = (lambda message: None) if args.quiet else say
    work = tempfile.mkdtemp(prefix=".make_medium-", dir=os.path.dirname(out))
    try:
        package_files, included = select_packages(args.repo, args.include, work) if args.repo else ([], [])
        medium = os.path.join(work, "medium")
        os.makedirs(os.path.join(medium, "wheels"))
        log("fetching wheels for %s" % " ".join(BUNDLED))
        wheels = fetch_wheels(os.path.join(medium, "wheels"), target, args.wheels)
        site = os.path.join(work, "site")
        install_site(os.path.join(medium, "wheels"), site, target)
        pm_tree = os.path.join(work, "pm-package")
        build_pm_tree(pm_tree, args.pm, version, site, target, wheels)
        log("writing the repository: pm %s%s" % (version, "".join(" " + n for n in included)))
        build_repository(os.path.join(medium, "repo"), pm_tree, package_files, args.zstd, args.sign)
        if keys:
            os.makedirs(os.path.join(medium, "keys"))
            for name, data in keys:
                with open(os.path.join(medium, "keys", name), "wb") as f:
                    f.write(data)
        shutil.copyfile(BOOTSTRAP, os.path.join(medium, "install.py"))
        os.chmod(os.path.join(medium, "install.py"), 0o755)
        shutil.copyfile(args.pm, os.path.join(medium, "pm.py"))
        write_description(medium, version, target.describe(wheels), wheels,
                          describe_packages(os.path.join(medium, "repo")), included, [n for n, _ in keys])
        if args.format == "dir":
            publish_directory(medium, out)
        elif args.format == "tar":
            write_tar(medium, out)
        else:
            write_image(medium, out, tools)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sys.stdout.write(out + "\n")
    return 0


def read_keys(paths, sign):
    """[(file name, bytes)] of the --key files, each checked to be a signify public key;
    the medium that installs keys signs its repository with one of them."""
    if not paths:
        return []
    if not sign:
        raise BuildError("--key makes the root refuse unsigned repositories, the medium's own too: "
                         "give --sign KEY.sec as well", 2)
    sys.path.insert(0, TOP)
    import pm
    keys, numbers = [], set()
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read(pm.MAX_SIGNIFY_FILE + 1)
            key = pm.SignifyKey.parse(data, path)
        except OSError as e:
            raise BuildError("cannot read %s: %s" % (path, e.strerror or e))
        except pm.PmError as e:
            raise BuildError(e.message, e.exit_code)
        name = os.path.basename(path) if path.endswith(".pub") else key.number + ".pub"
        if name in dict(keys):
            name = key.number + ".pub"
        keys.append((name, data))
        numbers.add(key.number)
    try:
        with open(sign, "rb") as f:
            _, raw = pm.parse_signify(f.read(pm.MAX_SIGNIFY_FILE + 1), sign, 104)
    except OSError as e:
        raise BuildError("cannot read %s: %s" % (sign, e.strerror or e))
    except pm.PmError as e:
        raise BuildError(e.message, e.exit_code)
    if raw[32:40].hex() not in numbers:
        raise BuildError("the key of --sign (%s) is not one of --key: the installed root could not check "
                         "the medium's repository" % raw[32:40].hex(), 2)
    return keys


def select_packages(repo, names, work):
    """The package files of ``repo`` to put on the medium: ``names`` and what they need,
    as pm itself resolves them (a dry run on an empty root whose only source is
    ``repo``); every package when no name is given.  Returns (files, names)."""
    repo = os.path.abspath(repo)
    try:
        with open(os.path.join(repo, "index.json"), encoding="utf-8") as f:
            index = json.load(f)["packages"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BuildError("%s is not a pm repository (its index.json: %s)" % (repo, e))
    by_version = {(e["manifest"]["package"], e["manifest"]["version"]): e["filename"] for e in index}
    if not names:
        chosen = sorted(by_version)
    else:
        scratch = os.path.join(work, "resolve-root")
        os.makedirs(os.path.join(scratch, "etc", "pm"))
        with open(os.path.join(scratch, "etc", "pm", "sources.list"), "w", encoding="utf-8") as f:
            f.write(repo + "\n")
        proc = subprocess.run([sys.executable, os.path.join(TOP, "pm.py"), "--root", scratch, "--json", "-q",
                               "install", "--dry-run"] + list(names),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            report = json.loads(proc.stdout)
        except ValueError:
            report = {}
        if proc.returncode != 0 or "changes" not in report:
            raise BuildError("choosing the packages from %s failed: %s"
                             % (repo, report.get("error") or proc.stderr.strip() or "exit %d" % proc.returncode))
        chosen = [(c["package"], c["version"]) for c in report["changes"]]
    chosen = [pv for pv in chosen if pv[0] != "pm"]       # the medium brings its own pm
    missing = [pv for pv in chosen if pv not in by_version]
    if missing:
        raise BuildError("%s lists no file for %s" % (repo, ", ".join("%s %s" % pv for pv in missing)))
    return [os.path.join(repo, by_version[pv]) for pv in chosen], sorted({n for n, _ in chosen})


if __name__ == "__main__":
    sys.exit(main())
