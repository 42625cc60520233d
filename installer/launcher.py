#!/bin/sh
"""exec" python3 -I -S "$0" "$@"
pm's launcher, installed as /usr/bin/pm by the ``pm`` package.

The first two lines start Python isolated (``-I -S``: no site-packages scan, no
PYTHON* variables, no current directory on sys.path) where ``#!/usr/bin/env python3``
could pass no options portably: sh runs the ``exec`` line, Python reads it as the start
of this docstring.  The launcher puts pm's own directories on sys.path itself; the
site-packages (for the optional psycopg and cryptography) are added only when a module
is not found in them.

Each pm version lives in its own directory, ``/usr/lib/pm/<version>/`` (``pm.py``, the
Python packages it needs under ``site/``, and ``CONTENTS``, the size of every file of
the directory).  A self-upgrade adds the new directory and removes the old one file by
file inside one pm transaction; a kill part-way leaves one of them whole.  So the
launcher runs its own version when that directory is complete, else the newest complete
one, and that pm then finishes or undoes the interrupted upgrade.  Paths are found from
the launcher's own location, so ``IMAGE/usr/bin/pm --root IMAGE`` runs the image's pm.
"""

import os
import sys

VERSION = "@PM_VERSION@"


def complete(directory):
    """True when every file ``CONTENTS`` lists is present with its listed size."""
    try:
        with open(os.path.join(directory, "CONTENTS"), encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return False
    for line in lines:
        size, _, path = line.partition(" ")
        try:
            if os.stat(os.path.join(directory, path)).st_size != int(size):
                return False
        except (OSError, ValueError):
            return False
    return bool(lines)


def version_key(name):
    """Newest first, numerically where the name has numbers (``0.10.0`` > ``0.9.1``)."""
    import re
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]


def choose(library):
    """The version directory to run: this launcher's own when complete, else the newest
    complete one, else (nothing whole: let pm say what is missing) its own."""
    own = os.path.join(library, VERSION)
    if complete(own):
        return own
    try:
        names = sorted(os.listdir(library), key=version_key, reverse=True)
    except OSError:
        names = []
    for name in names:
        candidate = os.path.join(library, name)
        if name != VERSION and complete(candidate):
            return candidate
    return own


def root_argument(argv):
    """The root pm is about to manage, as pm reads it (``--root DIR``, ``--root=DIR``,
    else $PM_ROOT, else /)."""
    for i, arg in enumerate(argv):
        if arg == "--root" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--root="):
            return arg[len("--root="):]
    return os.environ.get("PM_ROOT") or "/"


class SiteOnDemand:
    """The last import finder: a top-level module found nowhere else (psycopg for a
    PostgreSQL ODA, cryptography for signatures) is looked for once more after ``site``
    has added the site-packages directories, which ``-S`` left out to start faster."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if path is not None or SiteOnDemand not in sys.meta_path:
            return None
        sys.meta_path.remove(SiteOnDemand)
        import importlib.machinery
        import site
        site.main()
        return importlib.machinery.PathFinder.find_spec(name)


def main():
    library = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "lib", "pm")
    directory = choose(library)
    if not (sys.flags.isolated or getattr(sys.flags, "safe_path", False)):
        del sys.path[0]         # run as `python3 /usr/bin/pm`: Python put /usr/bin first
    sys.path[0:0] = [directory, os.path.join(directory, "site")]
    if sys.flags.no_site:
        sys.meta_path.append(SiteOnDemand)
    # pm's files are all owned by the package: Python must not add __pycache__ beside them.
    sys.dont_write_bytecode = True
    if os.path.lexists(os.path.join(root_argument(sys.argv[1:]), "var/lib/pm/journal")):
        # Recovering an interrupted self-upgrade may remove the very directory this pm
        # runs from: load the modules pm imports lazily while they are still there.
        for module in ("msgpack", "semver", "zstandard"):
            try:
                __import__(module)
            except ImportError:
                pass
    import pm
    sys.exit(pm.main())


if __name__ == "__main__":
    main()
