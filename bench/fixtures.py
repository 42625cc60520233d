"""Test data for bench/run.py: deterministic file trees and the same files packaged three
ways (a pm package, a plain tar of the DATA tree, and an uncompressed .deb).

Everything here is preparation: nothing in this module is timed.
"""

import json
import os
import random
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGER = os.path.join(REPO, "tools", "repoPackager.py")

MIB = 1024 * 1024


def run(argv, **kwargs):
    """Run a preparation command; raise with its last stderr line when it fails."""
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kwargs)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise RuntimeError("%s exited %d: %s" % (" ".join(argv[:3]), proc.returncode, last))


def write_manifest(srcdir, name, version):
    os.makedirs(os.path.join(srcdir, "DATA"), exist_ok=True)
    with open(os.path.join(srcdir, "manifest"), "w") as f:
        json.dump({"manifestVersion": "1.0", "package": name, "version": version,
                   "description": "benchmark package %s" % name}, f)


def file_layout(files, dirs, total_bytes, seed):
    """[(relative path, size)]: ``files`` files over ``dirs`` directories (two levels deep),
    sizes drawn from a log-normal distribution (many small files, a few large ones) and
    scaled so that they add up to about ``total_bytes``."""
    rng = random.Random(seed)
    directories = ["usr/share/bench/group%02d/dir%03d" % (d % 10, d) for d in range(dirs)]
    raw = [rng.lognormvariate(8.0, 1.5) for _ in range(files)]
    scale = total_bytes / sum(raw)
    layout = []
    for i, weight in enumerate(raw):
        size = max(1, int(weight * scale))
        layout.append(("%s/file%05d.dat" % (directories[i % dirs], i), size))
    return layout


def write_tree(datadir, layout, seed, changed=None):
    """Write the files of ``layout`` under ``datadir`` with seeded random content.  With
    ``changed`` (a set of indexes) those files get different content of the same size."""
    for i, (path, size) in enumerate(layout):
        content_seed = (seed, i, "v2") if changed is not None and i in changed else (seed, i)
        rng = random.Random(repr(content_seed))
        target = os.path.join(datadir, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(rng.randbytes(size))


def write_big_tree(datadir, files, total_bytes, seed):
    """A few large files: a random 1 MiB block repeated, each copy stamped with a running
    counter so that no two chunks are the same (not trivially compressible, fast to write)."""
    block = bytearray(random.Random(seed).randbytes(MIB))
    per_file = total_bytes // files
    counter = 0
    target_dir = os.path.join(datadir, "opt/big")
    os.makedirs(target_dir, exist_ok=True)
    for n in range(files):
        with open(os.path.join(target_dir, "blob%02d.bin" % n), "wb") as f:
            left = per_file
            while left > 0:
                block[0:8] = counter.to_bytes(8, "little")
                counter += 1
                f.write(block[:min(left, MIB)])
                left -= MIB


def build_pm(srcdir, outdir):
    """tools/repoPackager.py -d OUTDIR SRCDIR (plain .tar); returns the package path."""
    os.makedirs(outdir, exist_ok=True)
    run([sys.executable, PACKAGER, "-d", outdir, srcdir])
    with open(os.path.join(srcdir, "manifest")) as f:
        manifest = json.load(f)
    path = os.path.join(outdir, "%s-%s.tar" % (manifest["package"], manifest["version"]))
    if not os.path.isfile(path):
        raise RuntimeError("repoPackager did not write %s" % path)
    return path


def build_tar(datadir, path):
    """A plain, uncompressed GNU tar of the DATA tree (what `tar -xf` extracts)."""
    run(["tar", "--sort=name", "--owner=0", "--group=0", "--numeric-owner",
         "-cf", path, "-C", datadir, "."])
    return path


def build_deb(datadir, name, version, workdir, path):
    """An uncompressed .deb (dpkg-deb -Znone) of the same DATA tree, no maintainer scripts.
    The build directory is a hard-linked copy of DATA plus DEBIAN/control."""
    build = os.path.join(workdir, "deb-%s-%s" % (name, version))
    shutil.rmtree(build, ignore_errors=True)
    run(["cp", "-al", datadir, build])
    os.makedirs(os.path.join(build, "DEBIAN"))
    with open(os.path.join(build, "DEBIAN", "control"), "w") as f:
        f.write("Package: %s\nVersion: %s\nArchitecture: all\nMaintainer: pm bench <bench@example.org>\n"
                "Installed-Size: 1\nDescription: benchmark package %s\n" % (name, version, name))
    run(["dpkg-deb", "-Znone", "--root-owner-group", "--build", build, path])
    shutil.rmtree(build)
    return path


def init_dpkg_root(root):
    """The minimum dpkg --root needs on an empty directory: an admin dir with empty status
    and available files and the info, updates and triggers directories."""
    admin = os.path.join(root, "var/lib/dpkg")
    for sub in ("info", "updates", "triggers"):
        os.makedirs(os.path.join(admin, sub), exist_ok=True)
    for name in ("status", "available"):
        open(os.path.join(admin, name), "a").close()
    return admin


def dpkg_argv(root, *args):
    """dpkg on ``root`` only: its own admin dir, no chroot for scripts, no log."""
    return ["dpkg", "--root", root, "--force-not-root", "--force-script-chrootless",
            "--log=/dev/null"] + list(args)


def many_small_sources(topdir, count, files_each, seed):
    """``count`` package source trees pkgNNNN, ``files_each`` small files each (in 5
    directories); returns [(name, [file paths relative to the root])]."""
    rng = random.Random(seed)
    result = []
    for p in range(count):
        name = "pkg%04d" % p
        src = os.path.join(topdir, name)
        write_manifest(src, name, "1.0.%d" % (p % 7))
        paths = []
        for i in range(files_each):
            rel = "usr/share/%s/d%d/f%03d.txt" % (name, i % 5, i)
            target = os.path.join(src, "DATA", rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(rng.randbytes(rng.randint(16, 400)))
            paths.append("/" + rel)
        result.append((name, paths))
    return result


def synthesize_dpkg_db(admin, packages):
    """A dpkg database equivalent to ``packages`` ([(name, version, [paths])]), written
    directly: one status stanza per package and info/NAME.list with every file and
    directory (as dpkg itself records them)."""
    stanzas = []
    for name, version, paths in packages:
        stanzas.append("Package: %s\nStatus: install ok installed\nPriority: optional\nSection: misc\n"
                       "Installed-Size: 40\nMaintainer: pm bench <bench@example.org>\nArchitecture: all\n"
                       "Version: %s\nDescription: benchmark package %s\n" % (name, version, name))
        lines = {"/."}
        for path in paths:
            parts = path.split("/")
            for k in range(2, len(parts)):
                lines.add("/".join(parts[:k]))
            lines.add(path)
        with open(os.path.join(admin, "info", name + ".list"), "w") as f:
            f.write("\n".join(sorted(lines)) + "\n")
    with open(os.path.join(admin, "status"), "w") as f:
        f.write("\n".join(stanzas))


# -- pacman ------------------------------------------------------------------------------

PACMAN_PACKAGE = "pacman-package-manager"      # Debian's name for Arch Linux's pacman


def pacman_missing():
    """None when pacman can run here, else why not.  pacman installs and removes only as
    root; where it is missing and this is root, it is installed (apt-get) first."""
    if os.geteuid() != 0:
        return "pacman -U and -R run only as root, and this benchmark is not"
    if not shutil.which("pacman"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        try:
            run(["apt-get", "install", "-y", "-q", PACMAN_PACKAGE], env=env)
        except (OSError, RuntimeError) as e:
            return "pacman is not installed and apt-get install %s failed (%s)" % (PACMAN_PACKAGE, e)
        if not shutil.which("pacman"):
            return "apt-get install %s gave no pacman command" % PACMAN_PACKAGE
    return None


def pacman_version():
    """"pacman 6.0.2 (libalpm 13.0.2)" from ``pacman --version`` (whose first lines are a
    drawing), or "pacman"."""
    import re
    try:
        text = subprocess.run(["pacman", "--version"], capture_output=True, text=True).stdout
    except OSError:
        return "pacman"
    found = re.search(r"Pacman v(\S+) - libalpm v(\S+)", text)
    return "pacman %s (libalpm %s)" % found.groups() if found else "pacman"


def build_pacman(datadir, name, version, path):
    """A plain, uncompressed pacman package of the same DATA tree: ``.PKGINFO`` first
    (pacman reads it before anything else), then the tree, no install scriptlet."""
    infodir = path + ".info"
    os.makedirs(infodir, exist_ok=True)
    size = sum(os.lstat(os.path.join(d, n)).st_size for d, _, names in os.walk(datadir) for n in names)
    with open(os.path.join(infodir, ".PKGINFO"), "w") as f:
        f.write("pkgname = %s\npkgbase = %s\npkgver = %s-1\npkgdesc = benchmark package %s\n"
                "url = https://example.org/\nbuilddate = 0\npackager = pm bench <bench@example.org>\n"
                "size = %d\narch = any\nlicense = MIT\n" % (name, name, version, name, size))
    run(["tar", "--sort=name", "--owner=0", "--group=0", "--numeric-owner", "-cf", path,
         "-C", infodir, ".PKGINFO", "-C", datadir] + sorted(os.listdir(datadir)))
    shutil.rmtree(infodir)
    return path


def init_pacman_root(root):
    """pacman's database directory in ``root`` (pacman creates the rest)."""
    os.makedirs(os.path.join(root, "var/lib/pacman"), exist_ok=True)


def pacman_argv(root, *args):
    """pacman on ``root`` only: its own database there, no configuration file (so no
    repositories, hooks or signature keys of the host), no log, no scriptlets, no
    questions."""
    return ["pacman", "--root", root, "--dbpath", os.path.join(root, "var/lib/pacman"), "--config", "/dev/null",
            "--logfile", "/dev/null", "--noconfirm", "--noscriptlet", "--noprogressbar"] + list(args)
