#!/usr/bin/env python3
"""pm — a small, careful package manager for embedded nodes and cluster images.

pm installs tar-container packages (a ``CONTROL/manifest`` plus a ``DATA/`` tree) into a
live root or an image directory, records every file it owns, checks versions and
dependencies, keeps configuration files, rehearses every change with ``--dry-run`` and
leaves either the old state or the new one after a failure or a kill at any instant.
The normative description is SPEC.md; this file is the whole program.

Contents (each section uses only the sections above it; each has one job):
   1. Errors and limits: the exceptions, exit codes and bounds every reader obeys
   2. Output, hashing and small helpers: what a command prints, sha256, fault injection
   3. Versions and constraints: parse and compare versions, match constraints
   4. Manifest: read and check CONTROL/manifest (a Lua table)
   5. Archive reading: check a package archive (SPEC §15) and stream its files
   6. Root access: every filesystem call under the root, never through a symlink
   7. Database: the status and file lists of what is installed, read and checked
   8. Transactions: lock, the Plan's operations journaled, staged, applied,
      committed, rolled back or forward
   9. Scripts: run package scripts and the post-scripts left pending
  10. Planning: the Plan of an install or uninstall, computed from the database,
      the packages read and a read-only view of the tree; nothing changed
  11. Resolver: choose versions that satisfy every requirement
  12. Repositories: sources, indexes, signatures, TLS, downloads and the cache
  13. OPM and the ODA: cluster package stages (the installs come from section 16)
  14. Site management: vulnerability lists and doctor's findings (reads only)
  15. Prerequisites: read prereq.cfg files and this root's identity
  16. Operations: install, upgrade, uninstall, autoremove and prerequisites as
      read -> plan -> apply; OPM's installs on a node
  17. Command line: parse the arguments, call the operations, print the results
"""

from __future__ import annotations

import errno
import os
import stat
import sys

__version__ = "0.1.0"


# =============================================================================
# 1. Errors and limits
# =============================================================================

EXIT_OK = 0
EXIT_FAILED = 1      # refused or failed: missing dependency, conflict, downgrade, script failure
EXIT_USAGE = 2
EXIT_INVALID = 3     # invalid input: bad archive, manifest, index, config file; nothing changed
EXIT_LOCKED = 4      # the root's lock was held past --wait
EXIT_DAMAGE = 5      # verify found damage
EXIT_INTERRUPTED = 130   # Ctrl-C (SIGINT), after the change was rolled back, as shells count it


ERROR_PREFIX = "pm: error: "    # what starts every error line pm prints (tools/siteStatus.py reads it)


class PmError(Exception):
    """An error for people: one line of text and the exit code it stands for."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Refused(PmError):
    """The operation is refused or failed (dependencies, conflicts, downgrades, scripts)."""

    exit_code = EXIT_FAILED


class UsageError(PmError):
    """The command line is wrong."""

    exit_code = EXIT_USAGE


class InvalidInput(PmError):
    """A package, manifest, index or configuration file is malformed or hostile."""

    exit_code = EXIT_INVALID


class LockHeld(PmError):
    """Another pm process holds the root's lock."""

    exit_code = EXIT_LOCKED


# Limits on what a package may contain.  Real packages are far below every one of them;
# they exist so that a hostile archive costs bounded memory and time (SPEC §15).
MAX_MANIFEST_BYTES = 256 * 1024       # real manifests are a few hundred bytes
MAX_MANIFEST_DEPTH = 16               # tables nested deeper than this are not a manifest
MAX_MANIFEST_ITEMS = 20_000           # values in the whole manifest
MAX_MANIFEST_STRING = 64 * 1024       # one string value
MAX_MANIFEST_INTEGER = 2 ** 63 - 1    # Lua integers are 64-bit; the database (msgpack) holds no more
MAX_SCRIPT_BYTES = 1024 * 1024        # one CONTROL script, held in memory
MAX_SUMS_BYTES = 128 * 1024 * 1024    # CONTROL/sums: a line per file (read line by line)
MAX_SCRIPT_LINE = 64 * 1024           # bytes of one line a script prints, relayed at a time
MAX_MEMBERS = 500_000                 # members in one archive
MAX_PATH_BYTES = 4096                 # PATH_MAX
MAX_NAME_BYTES = 255                  # NAME_MAX
MAX_EXTENDED_HEADER = 1024 * 1024     # one pax or GNU long-name header
MAX_MEMBER_HEADERS = 2 * MAX_EXTENDED_HEADER   # all extended headers before one member
MAX_ARCHIVE_HEADERS = 256 << 20       # all extended headers of one archive
MAX_PATH_DEPTH = 128                  # directories a member may be nested in (real trees: < 30)
MAX_MTIME = 8 ** 11 - 1               # the largest ustar time (year 2242); os.utime fails far above
MAX_MEMBER_BYTES = 64 << 30           # one file
MAX_TOTAL_BYTES = 256 << 30           # all files of one package
MAX_EXPANSION_RATIO = 200             # decompressed / compressed, past the allowance below
EXPANSION_ALLOWANCE = 64 << 20        # small packages may compress better than the ratio
COPY_CHUNK = 1 << 20                  # bytes read from an archive at a time
MAX_READ_RETRIES = 200                # times a reader starts again because a writer committed meanwhile
READ_RETRY_WAIT = 60.0                # seconds a reader waits for a writer's transaction to end

# Limits on what a repository index may hold (SPEC §10): an index comes from the network
# and is as hostile as a package.  Real indexes list thousands of packages, not millions.
MAX_INDEX_BYTES = 32 << 20            # an index, decompressed (10,000 packages take about 5 MB)
MAX_INDEX_ENTRIES = 1_000_000         # packages in one index
MAX_INDEX_ITEMS = 1_000_000           # values in one index, counted before or while decoding
MAX_INDEX_ENTRY_BYTES = 512 << 10     # one entry of a msgpack index, packed
MAX_SIGNIFY_FILE = 4096               # a signify key or signature file is two short lines
MAX_TRUSTED_KEYS = 1000               # files in etc/pm/keys
MAX_SERIAL = 2 ** 63 - 1              # an index serial (msgpack's and the record's integers)
SIGNATURE_TOOL_SECONDS = 60           # a signify/usign command checking one signature

# Limits on time and disk (SPEC §15): a hostile or broken server, or a hanging script,
# must not hold pm (and the root's lock) forever, nor fill the disk.
MIN_TRANSFER_RATE = 1024              # bytes/s a transfer must average over each --timeout window
CACHE_RESERVE_BYTES = 16 << 20        # free space a download must leave on the cache's filesystem
SCRIPT_TIMEOUT = 600.0                # default --script-timeout: seconds a package script may run
RESERVE_BYTES = 2 << 20               # kept in var/lib/pm/reserve: an uninstall runs on a full disk

MAX_SHOWN_ARGUMENT = 80               # characters of a bad argument quoted back in a message

# Names pm reserves for its own staging files beside their targets; packages may not use them.
STAGING_PREFIX = ".~pm."
# pm's own state (database, journal, lock, kept scripts, ODA) and cache directories under
# the root: no package may ship anything at or below them, as dpkg refuses its admin dir.
RESERVED_DIRS = ("/var/lib/pm", "/var/cache/pm")
# The suffix of the packaged version of a config file kept beside a modified one.
CONFIG_NEW_SUFFIX = ".pm-new"
SUMS = "sums"   # CONTROL/sums: "SHA256 MODE SIZE /path" for every regular file of DATA/

# The ODA under a fleet (SPEC §11): a sync retries a server that refuses or is full, and
# operators' views stream their rows, so that neither depends on the fleet's size.
OPM_SYNC_DEADLINE = 300.0             # seconds a sync retries an ODA that refuses or is full (--deadline)
ODA_BACKOFF_FIRST = 0.05              # seconds before the first retry; doubled each time, jittered
ODA_BACKOFF_MAX = 5.0                 # the longest wait between two retries
ODA_LOCK_POLL = 0.05                  # seconds between two tries of a node's lock another sync holds
ODA_FETCH_ROWS = 2000                 # rows a streaming view (status, inventory, log) fetches at a time
ODA_INSERT_ROWS = 150                 # rows in one INSERT statement (SQLite allows 999 parameters)
MAX_HTML_ROWS = 10_000                # nodes in error or on their way a fleet page lists


# =============================================================================
# 2. Output, hashing and small helpers
# =============================================================================

class Output:
    """Where pm talks: results on stdout for people or as one JSON document, messages on stderr."""

    def __init__(self, json_mode: bool = False, verbosity: int = 0):
        self.json_mode = json_mode
        self.verbosity = verbosity
        self.warnings: list[str] = []

    def result(self, line: str) -> None:
        """A line of the command's result (stdout), unless the result is JSON or -q
        was given (-q prints only errors)."""
        if not self.json_mode and self.verbosity >= 0:
            sys.stdout.write(line + "\n")

    def error(self, message: str) -> None:
        """An error that does not end the command (a failed post-script): shown even with -q."""
        sys.stderr.write(ERROR_PREFIX + message + "\n")

    def say(self, message: str) -> None:
        """A message about progress (stderr), silenced by -q."""
        if self.verbosity >= 0:
            sys.stderr.write(message + "\n")

    def detail(self, message: str) -> None:
        """A message shown with -v only."""
        if self.verbosity > 0:
            sys.stderr.write(message + "\n")

    def warn(self, message: str) -> None:
        """A warning (stderr, silenced by -q), kept in ``warnings`` for the
        JSON document either way."""
        self.warnings.append(message)
        if self.verbosity >= 0:
            sys.stderr.write("pm: warning: " + message + "\n")


class Progress:
    """One status line on a terminal (stderr), rewritten in place and erased at the end;
    nothing when stderr is not a terminal, with -q or with --json.  ``unit`` is
    ``bytes`` (percentage, amount in binary units, rate and time left), ``files`` or
    ``items`` (a count), or ``""`` for a named phase with no counter.  ``phase()``
    moves the same line on to the next step (``committing``, ``syncing``...)."""

    REFRESH = 0.1                          # seconds between redraws

    def __init__(self, out: Output, label: str, total: int, unit: str = "items"):
        self.active = out.verbosity >= 0 and not out.json_mode and _stderr_is_terminal()
        self.shown = 0.0
        self._start(label, total, unit)

    def _start(self, label: str, total: int, unit: str) -> None:
        import time
        self.label, self.total, self.unit, self.done = label, total, unit, 0
        self.started = time.monotonic()
        if self.active:
            self._draw()

    def phase(self, label: str, total: int = 0, unit: str = "") -> None:
        """Move the same line on to the next step: ``label``, with a fresh count of ``total``
        ``unit`` (no counter by default)."""
        self._start(label, total, unit)

    def counting(self, chunks):
        """``chunks`` (bytes objects), counted as they pass."""
        for chunk in chunks:
            yield chunk
            self.step(len(chunk))

    def _text(self) -> str:
        import time
        done, total = self.done, self.total
        if self.unit == "bytes":
            elapsed = time.monotonic() - self.started
            parts = [self.label]
            if total:
                parts.append("%3d%%" % min(100, done * 100 // total))
                parts.append("%s/%s" % (human_size(done), human_size(total)))
            else:
                parts.append(human_size(done))
            if elapsed >= 0.5 and done:
                rate = done / elapsed
                parts.append("%s/s" % human_size(int(rate)))
                if total and done < total:
                    left = int((total - done) / rate)
                    parts.append("%d:%02d left" % (left // 60, left % 60) if left >= 60 else "%ds left" % left)
            return "  ".join(parts)
        if self.unit:
            percent = " %3d%%" % min(100, done * 100 // total) if total else ""
            return "%s%s %d/%d %s" % (self.label, percent, done, total, self.unit)
        return self.label + "..."

    def _draw(self) -> None:
        import shutil
        import time
        self.shown = time.monotonic()
        width = shutil.get_terminal_size((80, 24)).columns
        sys.stderr.write("\r" + self._text()[:max(width - 1, 10)] + "\x1b[K")
        sys.stderr.flush()

    def step(self, n: int = 1) -> None:
        """Count ``n`` more done; the line is redrawn at most every REFRESH seconds."""
        self.done += n
        if self.active:
            import time
            if time.monotonic() - self.shown >= self.REFRESH:
                self._draw()

    def finish(self) -> None:
        """Erase the line: what was done is said by the result lines that follow."""
        if self.active:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self.active = False


def _stderr_is_terminal() -> bool:
    try:
        return os.isatty(sys.stderr.fileno())
    except (AttributeError, ValueError, OSError):
        return False


def new_sha256():
    """A new sha256 hash object (hashlib is imported only when pm hashes)."""
    import hashlib
    return hashlib.sha256()


def sha256_bytes(data: bytes) -> bytes:
    """The sha256 digest (32 bytes) of ``data``."""
    h = new_sha256()
    h.update(data)
    return h.digest()


def sha256_fd(fd: int) -> bytes:
    """The sha256 of everything read from ``fd`` until its end (the
    descriptor is left at the end)."""
    h = new_sha256()
    while True:
        chunk = os.read(fd, COPY_CHUNK)
        if not chunk:
            return h.digest()
        h.update(chunk)


def write_all(fd: int, data) -> None:
    """Write all of ``data`` (bytes-like) to ``fd``, however many os.write calls it takes; OSError
    passes to the caller."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def shown(text: str) -> str:
    """``text`` quoted for a message, cut to MAX_SHOWN_ARGUMENT characters (saying how
    long it was) so that a huge bad argument is not echoed back whole."""
    if len(text) <= MAX_SHOWN_ARGUMENT:
        return repr(text)
    return "%r... (%d characters)" % (text[:MAX_SHOWN_ARGUMENT], len(text))


def counted(n: int, noun: str, nouns: str | None = None) -> str:
    """``1 file``, ``2 files``: a count with its noun for messages."""
    return "%d %s" % (n, noun if n == 1 else nouns or noun + "s")


def human_size(n: int) -> str:
    """``512 B``, ``1.5 KiB``, ``20.0 MiB``: a byte count for people (binary units)."""
    sign, n = ("-" if n < 0 else ""), abs(n)
    if n < 1024:
        return "%s%d B" % (sign, n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024.0
        if n < 1024 or unit == "TiB":
            return "%s%.1f %s" % (sign, n, unit)


def has_control_chars(text: str) -> bool:
    """True for C0 and C1 control characters and DEL (a terminal acts on all of them)."""
    if text.isprintable():          # the fast path: printable text has none of them
        return False
    return any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text)


class FaultInjector:
    """Deterministic faults for the crash and full-disk tests.

    ``PM_FAULT=ACTION:N[:KIND]`` makes the N-th mutating step of a transaction (of KIND
    only, when given: journal, mkdir, write, symlink, fsync, link, rename, unlink, rmdir,
    db, cache) kill the process (ACTION ``kill``) or fail with ENOSPC or EIO.
    ``PM_FAULT_COUNT=FILE`` writes how many steps of each kind a command made.
    Unset, a step costs one increment.
    """

    ERRORS = {"ENOSPC": errno.ENOSPC, "EIO": errno.EIO, "EBUSY": errno.EBUSY, "EPERM": errno.EPERM}

    def __init__(self, spec: str, count_file: str | None):
        self.action, self.n, self.kind = None, 0, None
        if spec:
            parts = spec.split(":")
            if len(parts) not in (2, 3) or (parts[0] != "kill" and parts[0] not in self.ERRORS):
                raise UsageError("PM_FAULT must be kill|ENOSPC|EIO|EBUSY|EPERM:N[:KIND]")
            self.action, self.n = parts[0], int(parts[1])
            self.kind = parts[2] if len(parts) == 3 else None
        self.counts: dict[str, int] = {}
        self.total = 0
        self.count_file = count_file
        self.enabled = True

    def step(self, kind: str) -> None:
        """Count one mutating step of ``kind``; when it is the step PM_FAULT names, kill the process
        (SIGKILL) or raise the OSError it asks for.  Nothing once ``enabled`` is False."""
        if not self.enabled:
            return
        self.total += 1
        seen = self.counts[kind] = self.counts.get(kind, 0) + 1
        if self.action is None:
            return
        if self.kind is None:
            hit = self.total == self.n
        else:
            hit = self.kind == kind and seen == self.n
        if hit:
            if self.action == "kill":
                import signal
                os.kill(os.getpid(), signal.SIGKILL)
            code = self.ERRORS[self.action]
            raise OSError(code, os.strerror(code) + " (injected at %s step %d)" % (kind, self.n))

    def save_counts(self) -> None:
        """Write the steps counted, by kind and ``total``, as JSON to the file PM_FAULT_COUNT names;
        nothing when it names none."""
        if self.count_file:
            import json
            with open(self.count_file, "w") as f:
                json.dump(dict(self.counts, total=self.total), f)


FAULTS = FaultInjector(os.environ.get("PM_FAULT", ""), os.environ.get("PM_FAULT_COUNT"))


def lazy_import(module: str, purpose: str):
    """Import an optional module, or fail with one line naming the package to install."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        package = {"zstandard": "zstandard", "psycopg": "psycopg", "msgpack": "msgpack",
                   "semver": "semver"}.get(module, module)
        raise PmError("%s needs the Python package %r: pip install %s" % (purpose, package, package))


# =============================================================================
# 3. Versions and constraints
# =============================================================================

UNVERSIONED = "oppm"   # OpenOS pm's version for oppm packages that have none


class Version:
    """A package version: semver where minor and patch may be left out, or ``oppm``.

    Versions compare by semver precedence (build metadata ignored); ``oppm`` sorts below
    every real version and is equal only to itself.
    """

    __slots__ = ("text", "key", "release", "prerelease")
    _cache: dict = {}

    def __init__(self, text: str, key: tuple, release: tuple, prerelease: bool):
        self.text, self.key, self.release, self.prerelease = text, key, release, prerelease

    @classmethod
    def parse(cls, text) -> "Version":
        """The Version for ``text``; InvalidInput when it is not a version."""
        if not isinstance(text, str):
            raise InvalidInput("invalid version %r" % (text,))
        cached = cls._cache.get(text)
        if cached is not None:
            return cached
        if text == UNVERSIONED:
            version = cls(text, (-1,), (), False)
        else:
            # semver before 3.1 reads any Unicode digit as a digit ("1\u0663" would be 13)
            if text != text.strip() or "\n" in text or not text.isascii():
                raise InvalidInput("invalid version %r" % (text,))
            semver = lazy_import("semver", "reading versions")
            try:
                parsed = semver.Version.parse(text, optional_minor_and_patch=True)
            except (ValueError, TypeError):
                raise InvalidInput("invalid version %r" % (text,)) from None
            release = (parsed.major, parsed.minor, parsed.patch)
            if parsed.prerelease:
                pre = tuple((0, int(p), "") if p.isdigit() else (1, 0, p)
                            for p in parsed.prerelease.split("."))
                key = release + (0, pre)
            else:
                key = release + (1, ())
            version = cls(text, key, release, bool(parsed.prerelease))
        if len(cls._cache) < 100_000:
            cls._cache[text] = version
        return version

    @property
    def unversioned(self) -> bool:
        """True for ``oppm``, the version of unversioned packages: it sorts below every real version
        and satisfies every constraint."""
        return self.key == (-1,)

    def __eq__(self, other):
        return isinstance(other, Version) and self.key == other.key

    def __ne__(self, other):
        return not self == other

    def __lt__(self, other):
        return self.key < other.key

    def __le__(self, other):
        return self.key <= other.key

    def __gt__(self, other):
        return self.key > other.key

    def __ge__(self, other):
        return self.key >= other.key

    def __hash__(self):
        return hash(self.key)

    def __repr__(self):
        return "Version(%r)" % self.text

    def __str__(self):
        return self.text


def _lowest_prerelease_of(release: tuple) -> Version:
    """The lowest version of a release line (``X.Y.Z-0``): an exclusive upper bound that
    keeps pre-releases of the next line out of ``^``, ``~`` and ``X.*`` ranges."""
    return Version("%d.%d.%d-0" % release, release + (0, ((0, 0, ""),)), release, True)


_OPERATORS = ("==", "!=", ">=", "<=", "=", ">", "<", "^", "~")


class Constraint:
    """A version constraint of SPEC §5: ``=X ==X >=X >X <=X <X !=X ^X ~X X.* *``,
    comma for *and*, ``||`` for *or*, a bare ``X`` meaning ``>=X``; ``*``, ``oppm``,
    ``/`` and the empty string mean any version.

    Each alternative is a list of primitive comparisons ``(op, Version)`` with op one of
    ``>= > <= < == !=``, plus the releases its text named with a pre-release tag.
    """

    __slots__ = ("text", "alternatives")
    _cache: dict = {}

    def __init__(self, text: str, alternatives: list):
        self.text, self.alternatives = text, alternatives

    @classmethod
    def parse(cls, text, package: str = "") -> "Constraint":
        """The Constraint for ``text``; InvalidInput naming ``package`` when malformed."""
        cached = cls._cache.get(text) if isinstance(text, str) else None
        if cached is not None:
            return cached
        try:
            constraint = cls(text, cls._parse(text))
        except InvalidInput:
            where = " for %s" % package if package else ""
            raise InvalidInput("malformed version constraint %r%s" % (text, where)) from None
        if len(cls._cache) < 100_000:
            cls._cache[text] = constraint
        return constraint

    @staticmethod
    def _parse(text) -> list | None:
        if not isinstance(text, str) or "\n" in text or "\r" in text:
            raise InvalidInput("bad constraint")
        whole = text.strip(" \t")
        if whole in ("", "*", UNVERSIONED, "/"):
            return None
        alternatives = []
        for alternative in whole.split("||"):
            comparisons, named_pre = [], set()
            for part in alternative.split(","):
                part = part.strip(" \t")
                if not part:
                    raise InvalidInput("empty comparison")
                comparisons.extend(Constraint._comparison(part, named_pre))
            alternatives.append((comparisons, named_pre))
        return alternatives

    @staticmethod
    def _comparison(part: str, named_pre: set) -> list:
        op = ""
        for candidate in _OPERATORS:
            if part.startswith(candidate):
                op, part = candidate, part[len(candidate):].strip(" \t")
                break
        if part == "*" or part.endswith(".*"):
            if op:
                raise InvalidInput("operator with wildcard")
            return Constraint._wildcard(part)
        if not part or part[0] in "<>=!^~ \t" or part == UNVERSIONED:
            raise InvalidInput("bad comparison")
        version = Version.parse(part)
        if version.prerelease:
            named_pre.add(version.release)
        given = len(part.split("+")[0].split("-")[0].split("."))
        major, minor, patch = version.release
        if op in ("", ">="):
            return [(">=", version)]
        if op in ("=", "=="):
            return [("==", version)]
        if op in (">", "<", "<=", "!="):
            return [(op, version)]
        if op == "~":
            upper = (major + 1, 0, 0) if given == 1 else (major, minor + 1, 0)
        elif major > 0:                                   # ^X
            upper = (major + 1, 0, 0)
        elif given == 1:
            upper = (1, 0, 0)
        elif minor > 0 or given == 2:
            upper = (0, minor + 1, 0)
        else:
            upper = (0, 0, patch + 1)
        return [(">=", version), ("<", _lowest_prerelease_of(upper))]

    @staticmethod
    def _wildcard(part: str) -> list:
        fixed = part.split(".")[:-1]
        if part != "*" and not fixed:
            raise InvalidInput("bad wildcard")
        if len(fixed) > 2 or any(not (p.isascii() and p.isdigit()) or (len(p) > 1 and p[0] == "0")
                                 for p in fixed):           # isdigit() alone takes "\u00b2"
            raise InvalidInput("bad wildcard")
        if not fixed:
            return []
        numbers = [int(p) for p in fixed]
        lower = Version.parse(".".join(fixed))
        upper = (numbers[0] + 1, 0, 0) if len(numbers) == 1 else (numbers[0], numbers[1] + 1, 0)
        return [(">=", lower), ("<", _lowest_prerelease_of(upper))]

    @property
    def is_any(self) -> bool:
        """True when the constraint names no bound (``*``, ``oppm``, ``/`` or the empty string):
        every release satisfies it."""
        return self.alternatives is None

    def allows(self, version: Version, pre: bool = False) -> bool:
        """True when ``version`` satisfies this constraint.  A pre-release satisfies it
        only when ``pre`` is set or the matching alternative names a pre-release of the
        same release; an unversioned (``oppm``) version satisfies everything."""
        if version.unversioned:
            return True
        if self.alternatives is None:
            return pre or not version.prerelease
        for comparisons, named_pre in self.alternatives:
            if version.prerelease and not pre and version.release not in named_pre:
                continue
            if all(_COMPARE[op](version, bound) for op, bound in comparisons):
                return True
        return False

    def __str__(self):
        return self.text or "*"

    def __repr__(self):
        return "Constraint(%r)" % self.text


_COMPARE = {
    ">=": lambda v, b: v.key >= b.key,
    ">": lambda v, b: v.key > b.key,
    "<=": lambda v, b: v.key <= b.key,
    "<": lambda v, b: v.key < b.key,
    "==": lambda v, b: v.key == b.key,
    "!=": lambda v, b: v.key != b.key,
}


# =============================================================================
# 4. Manifest
# =============================================================================

class LuaLiteralParser:
    """Reads one Lua table literal (OpenOS serialization syntax) without evaluating it.

    Accepts strings (quoted with escapes, or long brackets), numbers, booleans, nil,
    nested tables, ``--`` comments.  Anything else — a name used as a value, a call, an
    operator — is code, and refused.  Depth, item count and string length are bounded.
    """

    _ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f",
                "v": "\v", "\\": "\\", '"': '"', "'": "'", "\n": "\n", "\r": "\n"}

    max_items = MAX_MANIFEST_ITEMS      # a repository's Lua index holds many manifests

    def __init__(self, text: str):
        self.text, self.pos, self.items = text, 0, 0

    def error(self, message: str) -> InvalidInput:
        """The InvalidInput for ``message`` at the cursor's line (``manifest: MESSAGE at line N``),
        for the caller to raise."""
        line = self.text.count("\n", 0, self.pos) + 1
        return InvalidInput("manifest: %s at line %d" % (message, line))

    def parse(self):
        """The table the whole text holds, as a dict; InvalidInput when the text is not exactly one
        table literal (spaces and comments around it aside) or the table is a sequence (a list)."""
        self.skip_space()
        value = self.value(0)
        self.skip_space()
        if self.pos != len(self.text):
            raise self.error("unexpected text after the table")
        if not isinstance(value, dict):
            raise self.error("the manifest must be a table")
        return value

    def skip_space(self) -> None:
        """Move the cursor past blanks and ``--`` comments (short ones to the end of their line,
        long-bracket ones to their close); InvalidInput for an unfinished long comment."""
        text, n = self.text, len(self.text)
        while self.pos < n:
            c = text[self.pos]
            if c in " \t\r\n\f\v":
                self.pos += 1
            elif text.startswith("--", self.pos):
                self.pos += 2
                level = self.long_bracket_level()
                if level is not None:
                    self.long_string(level)
                else:                   # as Lua: a short comment ends at \n or \r
                    end = min((e for e in (text.find("\n", self.pos), text.find("\r", self.pos)) if e >= 0),
                              default=-1)
                    self.pos = n if end < 0 else end + 1
            else:
                return

    def long_bracket_level(self):
        """The level of a long bracket ``[==[`` at the cursor, or None."""
        text, i = self.text, self.pos
        if i >= len(text) or text[i] != "[":
            return None
        j = i + 1
        while j < len(text) and text[j] == "=":
            j += 1
        if j < len(text) and text[j] == "[":
            return j - i - 1
        return None

    def long_string(self, level: int) -> str:
        """The content of the long bracket of ``level`` at the cursor, which moves past its close:
        ends of line read as newlines and a first one dropped, as Lua reads them; InvalidInput
        when it is not closed."""
        start = self.pos + level + 2
        close = "]" + "=" * level + "]"
        end = self.text.find(close, start)
        if end < 0:
            raise self.error("unfinished long string or comment")
        self.pos = end + len(close)
        value = self.text[start:end]
        if "\r" in value:          # as Lua: every end of line (\n, \r, \r\n, \n\r) reads as \n
            import re
            value = re.sub("\r\n|\n\r|\r", "\n", value)
        return value[1:] if value.startswith("\n") else value      # the first one is skipped

    def count_item(self) -> None:
        """Count one more value; InvalidInput past ``max_items``."""
        self.items += 1
        if self.items > self.max_items:
            raise self.error("too many values (limit %d)" % self.max_items)

    def value(self, depth: int):
        """The value at the cursor (string, number, boolean, None for nil, or a table nested at
        ``depth + 1``), the cursor moved past it; InvalidInput for a name or anything else that is
        not a literal, and for tables nested past MAX_MANIFEST_DEPTH."""
        self.count_item()
        text = self.text
        if self.pos >= len(text):
            raise self.error("unexpected end of manifest")
        c = text[self.pos]
        if c == "{":
            if depth >= MAX_MANIFEST_DEPTH:
                raise self.error("tables nested too deeply (limit %d)" % MAX_MANIFEST_DEPTH)
            return self.table(depth + 1)
        if c in "\"'":
            return self.quoted_string()
        if c == "[":
            level = self.long_bracket_level()
            if level is None:
                raise self.error("unexpected '['")
            return self.checked_string(self.long_string(level))
        if c in "0123456789" or c in "-." and self.number_follows():
            return self.number()
        word = self.name()
        if word == "true":
            return True
        if word == "false":
            return False
        if word == "nil":
            return None
        if word:
            raise self.error("Lua code is not allowed in a manifest (found %r)" % word)
        raise self.error("unexpected %r" % c)

    def number_follows(self) -> bool:
        """Whether a number starts at the cursor's ``-`` or ``.``: a digit follows (after the
        ``-``), or a ``.`` and a digit."""
        rest = self.text[self.pos:self.pos + 3]
        if rest.startswith("-"):
            rest = rest[1:]
        return bool(rest) and (rest[0] in "0123456789" or (rest[0] == "." and rest[1:2] in tuple("0123456789")))

    def name(self) -> str:
        """The name at the cursor (ASCII letters, digits and ``_``, not starting with a digit), the
        cursor moved past it; ``""`` (the cursor unmoved) when there is none."""
        text, start = self.text, self.pos
        i = start
        while i < len(text) and (text[i].isalnum() or text[i] == "_") and text[i].isascii():
            i += 1
        if i > start and not text[start].isdigit():
            self.pos = i
            return text[start:i]
        return ""

    def number(self):
        """The number literal at the cursor (a decimal or hex integer, or a float), the cursor moved
        past it; InvalidInput for a malformed or over-long literal, an infinite float or an integer
        outside the 64-bit range."""
        import re
        match = re.compile(r"-?(0[xX][0-9a-fA-F]+|([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?)").match(
            self.text, self.pos)
        if not match:
            raise self.error("bad number")
        self.pos = match.end()
        literal = match.group(0)
        if self.pos < len(self.text) and (self.text[self.pos].isalnum() or self.text[self.pos] == "_"):
            raise self.error("bad number")
        if len(literal) > 64:
            raise self.error("number too long")
        if any(c in literal for c in ".eE") and "x" not in literal.lower():
            value = float(literal)
            if value in (float("inf"), float("-inf")):
                raise self.error("number out of range: %s" % literal)
            return value
        value = int(literal, 16 if "x" in literal.lower() else 10)
        if not -MAX_MANIFEST_INTEGER - 1 <= value <= MAX_MANIFEST_INTEGER:
            raise self.error("integer out of the 64-bit range")
        return value

    def checked_string(self, value: str) -> str:
        """``value``, or InvalidInput when it is longer than MAX_MANIFEST_STRING."""
        if len(value) > MAX_MANIFEST_STRING:
            raise self.error("string too long (limit %d)" % MAX_MANIFEST_STRING)
        return value

    def quoted_string(self) -> str:
        """The quoted string at the cursor with Lua's escapes decoded, the cursor moved past its
        closing quote; InvalidInput for a bad escape, a raw end of line or end of text before the
        close, or a string longer than MAX_MANIFEST_STRING."""
        text, quote = self.text, self.text[self.pos]
        i, out = self.pos + 1, []
        while True:
            if i >= len(text) or text[i] in "\r\n":      # as Lua: a raw end of line ends it
                self.pos = i
                raise self.error("unfinished string")
            c = text[i]
            if c == quote:
                break
            if c != "\\":
                out.append(c)
                i += 1
                continue
            i += 1
            e = text[i:i + 1]
            if e in self._ESCAPES:
                out.append(self._ESCAPES[e])
                i += 1
                if e in ("\r", "\n") and text[i:i + 1] in ("\r", "\n") and text[i:i + 1] != e:
                    i += 1          # a backslash before \r\n or \n\r: one end of line
            elif e == "x":
                digits = text[i + 1:i + 3]
                if len(digits) != 2 or any(d not in "0123456789abcdefABCDEF" for d in digits):
                    self.pos = i
                    raise self.error("bad \\x escape")
                out.append(chr(int(digits, 16)))
                i += 3
            elif e.isdigit():
                j = i
                while j < i + 3 and j < len(text) and text[j].isdigit():
                    j += 1
                code = int(text[i:j])
                if code > 255:
                    self.pos = i
                    raise self.error("bad decimal escape")
                out.append(chr(code))
                i = j
            elif e == "z":
                i += 1
                while i < len(text) and text[i] in " \t\r\n\f\v":
                    i += 1
            elif e == "u" and text[i + 1:i + 2] == "{":
                end = text.find("}", i)
                digits = text[i + 2:end] if end > 0 else ""
                if not digits or len(digits) > 6 or any(d not in "0123456789abcdefABCDEF" for d in digits):
                    self.pos = i
                    raise self.error("bad \\u escape")
                code = int(digits, 16)
                if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                    self.pos = i
                    raise self.error("bad \\u escape")
                out.append(chr(code))
                i = end + 1
            else:
                self.pos = i
                raise self.error("bad escape in string")
            if len(out) > MAX_MANIFEST_STRING:
                break
        self.pos = i + 1
        return self.checked_string("".join(out))

    def table(self, depth: int):
        """The table at the cursor's ``{``, the cursor moved past its ``}``: a list for a sequence
        (keys 1..n, however spelled), else a dict with string keys (``{}`` when empty); nil values
        are dropped as Lua drops them.  InvalidInput for a duplicate key (``[1]`` and ``["1"]``
        included) or a malformed field."""
        text = self.text
        self.pos += 1
        positional, keyed, nil_keys = [], {}, set()
        while True:
            self.skip_space()
            if self.pos >= len(text):
                raise self.error("unfinished table")
            if text[self.pos] == "}":
                self.pos += 1
                break
            key = self.field_key(depth)
            self.skip_space()
            value = self.value(depth)
            if key is _POSITIONAL:
                positional.append(value)
            else:
                if key in keyed or key in nil_keys:     # Lua keeps the last: refused, nil or not
                    raise self.error("duplicate key %r" % (key,))
                if value is None:
                    nil_keys.add(key)
                else:
                    keyed[key] = value
            self.skip_space()
            if self.pos < len(text) and text[self.pos] in ",;":
                self.pos += 1
            elif self.pos < len(text) and text[self.pos] != "}":
                raise self.error("expected ',' or '}'")
        if None in positional:          # as Lua: a nil leaves a hole at its index
            for index, value in enumerate(positional, 1):
                if index in keyed:
                    raise self.error("duplicate key %r" % index)
                if value is not None:
                    keyed[index] = value
            positional = []
        if not keyed:
            return positional if positional else {}
        for index, value in enumerate(positional, 1):
            if index in keyed:
                raise self.error("duplicate key %r" % index)
            keyed[index] = value
        if all(isinstance(k, int) for k in keyed) and sorted(keyed) == list(range(1, len(keyed) + 1)):
            return [keyed[k] for k in range(1, len(keyed) + 1)]       # a sequence, however spelled
        result = {}
        for key, value in keyed.items():
            name = key if isinstance(key, str) else str(key)
            if name in result:          # [1] and ["1"] are two keys to Lua, one to pm
                raise self.error("duplicate key %r" % name)
            result[name] = value
        return result

    def field_key(self, depth: int):
        """The key of a table field and the '=' after it, or _POSITIONAL for a bare value."""
        text, start = self.text, self.pos
        if text[start] == "[" and self.long_bracket_level() is None:
            self.pos += 1
            self.skip_space()
            key = self.value(depth)
            if isinstance(key, bool) or isinstance(key, float) or key is None or isinstance(key, dict) \
                    or isinstance(key, list):
                raise self.error("unsupported table key")
            self.skip_space()
            if not text.startswith("]", self.pos):
                raise self.error("expected ']'")
            self.pos += 1
            self.expect_equals()
            return key
        word = self.name()
        if word:
            after = self.pos
            self.skip_space()
            if text.startswith("=", self.pos) and not text.startswith("==", self.pos):
                if word in ("true", "false", "nil"):
                    raise self.error("unexpected %r" % word)
                if word in LUA_KEYWORDS:       # Lua refuses `end = 1`: a keyword is no name
                    self.pos = start
                    raise self.error("the Lua keyword %r cannot be a key; write [%r]" % (word, word))
                self.pos += 1
                return word
            self.pos = start if word in ("true", "false", "nil") else after
            if word not in ("true", "false", "nil"):
                raise self.error("Lua code is not allowed in a manifest (found %r)" % word)
        self.pos = start
        return _POSITIONAL

    def expect_equals(self) -> None:
        """Move the cursor past the ``=`` that follows a bracketed key (spaces first); InvalidInput
        when there is none (``==`` is not one)."""
        self.skip_space()
        if not self.text.startswith("=", self.pos) or self.text.startswith("==", self.pos):
            raise self.error("expected '='")
        self.pos += 1


_POSITIONAL = object()
LUA_KEYWORDS = frozenset("and break do else elseif end false for function goto if in local nil not "
                         "or repeat return then true until while".split())     # Lua 5.2 and 5.3

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$(?!\n)"
CONFIG_PATH_PATTERN = r"^(?:/(?!\.\.?(?:/|$))[^/\x00-\x1f\x7f-\x9f]+)+/?$(?!\n)"
ARCHITECTURE_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$(?!\n)"
_LIST_FIELDS = ("configFiles", "provides")
_STRING_FIELDS = ("manifestVersion", "name", "description", "note", "repo")
_patterns: dict = {}


def _matches(pattern: str, value) -> bool:
    import re
    compiled = _patterns.get(pattern)
    if compiled is None:
        compiled = _patterns[pattern] = re.compile(pattern)
    return isinstance(value, str) and compiled.search(value) is not None


def valid_package_name(name) -> bool:
    """Whether ``name`` is a string following NAME_PATTERN: a letter or digit, then up to 127
    letters, digits and ``._+-``."""
    return _matches(NAME_PATTERN, name)


def _refuse_non_finite(value) -> None:
    """InvalidInput for an infinite or NaN number anywhere in ``value``: --json output
    is strict JSON, which has no such numbers (an index in msgpack can carry them)."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, float) and (node != node or node in (float("inf"), float("-inf"))):
            raise InvalidInput("manifest: a number is out of range (%r)" % node)
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def validate_manifest(manifest) -> None:
    """Raise InvalidInput unless ``manifest`` follows manifest_schema.json (the tests hold
    the two to agreement).  Constraints must also parse, which the schema's pattern says."""
    def bad(message):
        return InvalidInput("manifest: " + message)

    if not isinstance(manifest, dict):
        raise bad("must be a table or object")
    _refuse_non_finite(manifest)
    for field in ("package", "version"):
        if field not in manifest:
            raise bad("missing required field %r" % field)
    if not valid_package_name(manifest["package"]):
        raise bad("bad package name %r" % (manifest["package"],))
    if not isinstance(manifest["version"], str):
        raise bad("version must be a string")
    try:
        Version.parse(manifest["version"])
    except InvalidInput:
        raise bad("bad version %r" % manifest["version"]) from None
    for field in _STRING_FIELDS:
        if field in manifest and not isinstance(manifest[field], str):
            raise bad("%s must be a string" % field)
    authors = manifest.get("authors", "")
    if not isinstance(authors, str) and not (
            isinstance(authors, list) and all(isinstance(a, str) for a in authors)):
        raise bad("authors must be a string or a list of strings")
    if "hidden" in manifest and not isinstance(manifest["hidden"], bool):
        raise bad("hidden must be true or false")
    for field in ("dependencies", "conflicts"):
        table = manifest.get(field, {})
        if not isinstance(table, dict):
            raise bad("%s must map package names to constraints" % field)
        for name, constraint in table.items():
            if not valid_package_name(name):
                raise bad("bad package name %r in %s" % (name, field))
            if not isinstance(constraint, str):
                raise bad("constraint for %s in %s must be a string" % (name, field))
            try:
                Constraint.parse(constraint, name)
            except InvalidInput as e:
                raise bad(e.message) from None
    config = manifest.get("configFiles", [])
    if not isinstance(config, list):
        raise bad("configFiles must be a list of absolute paths")
    for path in config:
        if not _matches(CONFIG_PATH_PATTERN, path):
            raise bad("bad config file path %r" % (path,))
    provides = manifest.get("provides", [])
    if not isinstance(provides, list) or not all(valid_package_name(p) for p in provides):
        raise bad("provides must be a list of package names")
    if "architecture" in manifest and not _matches(ARCHITECTURE_PATTERN, manifest["architecture"]):
        raise bad("bad architecture %r" % (manifest["architecture"],))
    if "essential" in manifest and not isinstance(manifest["essential"], bool):
        raise bad("essential must be true or false")


# One name per architecture, whatever the naming tradition (kernel, Debian, Go, RPM).
_ARCHITECTURE_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "x86-64": "x86_64", "arm64": "aarch64",
                         "armv8": "aarch64", "i386": "i686", "i486": "i686", "i586": "i686", "x86": "i686",
                         "386": "i686", "armhf": "armv7l", "armv7": "armv7l", "armv7hl": "armv7l",
                         "ppc64el": "ppc64le", "riscv": "riscv64"}
_ANY_ARCHITECTURE = ("any", "all", "noarch")


def normal_architecture(name: str) -> str:
    """The one name pm compares an architecture by (``amd64`` -> ``x86_64``, ``arm64`` ->
    ``aarch64``...); ``any`` for the architecture-independent names."""
    name = name.strip().lower()
    if name in _ANY_ARCHITECTURE:
        return "any"
    return _ARCHITECTURE_ALIASES.get(name, name)


def architecture_fits(manifest: dict, root_architecture: str) -> bool:
    """True when the package runs on ``root_architecture``: its ``architecture`` is
    absent, ``any``, or the same one (by normal_architecture)."""
    wanted = normal_architecture(str(manifest.get("architecture", "any")))
    return wanted == "any" or wanted == normal_architecture(root_architecture)


def parse_manifest(data: bytes) -> dict:
    """Parse and validate a manifest in either syntax (JSON or a Lua table literal)."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise InvalidInput("manifest: larger than %d bytes" % MAX_MANIFEST_BYTES)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("manifest: not UTF-8 text") from None
    if text.startswith("\ufeff"):
        # Lua's load() refuses a byte-order mark, so the original OpenOS pm cannot read
        # such a manifest: pm refuses it too (repoPackager drops it from its sources)
        raise InvalidInput("manifest: starts with a UTF-8 byte-order mark (U+FEFF); save it without one")
    manifest = _parse_json_manifest(text)
    if manifest is None:
        manifest = LuaLiteralParser(text).parse()
        for field in _LIST_FIELDS:        # Lua's {} is both an empty list and an empty map
            if manifest.get(field) == {}:
                manifest[field] = []
    validate_manifest(manifest)
    return manifest


def _parse_json_manifest(text: str):
    """The manifest as JSON, or None when the text is not JSON (then it is Lua)."""
    import json

    def no_duplicates(pairs):
        result = {}
        for key, value in pairs:
            if key in result:
                raise InvalidInput("manifest: duplicate key %r" % key)
            result[key] = value
        return result

    def no_constants(name):
        raise InvalidInput("manifest: %s is not allowed" % name)

    def finite(literal):
        value = float(literal)
        if value in (float("inf"), float("-inf")):
            raise InvalidInput("manifest: number out of range: %s" % literal[:64])
        return value

    try:
        value = json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constants,
                           parse_float=finite)
    except ValueError:
        return None
    except RecursionError:
        raise InvalidInput("manifest: nested too deeply") from None
    _check_json_bounds(value)
    return value


def _check_json_bounds(value) -> None:
    """The Lua parser's bounds, for a JSON manifest; also refuses lone surrogates, which
    JSON's \\u escapes can write but no UTF-8 text (nor the database) can hold."""
    import re
    surrogate = re.compile("[\ud800-\udfff]")
    items, stack = 0, [(value, 0)]
    while stack:
        node, depth = stack.pop()
        items += 1
        if items > MAX_MANIFEST_ITEMS:
            raise InvalidInput("manifest: too many values (limit %d)" % MAX_MANIFEST_ITEMS)
        if isinstance(node, (dict, list)) and depth >= MAX_MANIFEST_DEPTH:
            # as in the Lua syntax: the manifest's own table counts as the first level
            raise InvalidInput("manifest: nested too deeply (limit %d)" % MAX_MANIFEST_DEPTH)
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
            if any(surrogate.search(k) for k in node):
                raise InvalidInput("manifest: a key holds a lone surrogate (\\ud800-\\udfff)")
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
        elif isinstance(node, int) and not isinstance(node, bool) and \
                not -MAX_MANIFEST_INTEGER - 1 <= node <= MAX_MANIFEST_INTEGER:
            raise InvalidInput("manifest: integer out of the 64-bit range")
        elif isinstance(node, str):
            if len(node) > MAX_MANIFEST_STRING:
                raise InvalidInput("manifest: string too long (limit %d)" % MAX_MANIFEST_STRING)
            if surrogate.search(node):
                raise InvalidInput("manifest: a string holds a lone surrogate (\\ud800-\\udfff)")


def manifest_dependencies(manifest: dict, field: str = "dependencies") -> dict:
    """``{name: Constraint}`` for the manifest's dependencies (or conflicts)."""
    return {name: Constraint.parse(text, name) for name, text in manifest.get(field, {}).items()}


def config_matcher(manifest: dict):
    """A predicate telling whether an absolute path is a config file of the manifest."""
    exact, prefixes = set(), []
    for path in manifest.get("configFiles", []):
        if path.endswith("/"):
            prefixes.append(path)
        else:
            exact.add(path)
    prefixes = tuple(prefixes)
    return lambda path: path in exact or (bool(prefixes) and path.startswith(prefixes))


# =============================================================================
# 5. Archive reading
# =============================================================================
#
# A package is hostile until proven otherwise.  pm reads tar itself (no tarfile, no
# extraction filters): a first pass checks every header and reads CONTROL/; only a
# package that passed is streamed a second time, member by member, to be written by
# section 8 through directory descriptors.

_ZERO_BLOCK = bytes(512)
_FILE_TYPES = (b"0", b"\0", b"7")
_REFUSED_TYPES = {b"1": "a hard link", b"3": "a character device", b"4": "a block device",
                  b"6": "a FIFO"}


class Member:
    """One entry of a package's DATA/ tree: ``path`` is absolute within the root
    (``/usr/bin/x``); ``kind`` is ``f`` (file), ``d`` (directory) or ``l`` (symlink)."""

    __slots__ = ("path", "kind", "mode", "size", "link", "mtime", "digest")

    def __init__(self, path, kind, mode, size, link, mtime):
        self.path, self.kind, self.mode, self.size, self.link, self.mtime = \
            path, kind, mode, size, link, mtime
        self.digest = None      # the sha256 CONTROL/sums gives for a file, when it has one


def _tar_number(field: bytes, what: str) -> int:
    if field[:1] == b"\x80":                       # GNU base-256 for large values
        value = 0
        for byte in field[1:]:
            value = value << 8 | byte
        return value
    digits = field.split(b"\0", 1)[0].strip(b" ")
    if not digits:
        return 0
    if digits.translate(None, b"01234567"):
        raise InvalidInput("corrupt archive: bad %s field in a tar header" % what)
    return int(digits, 8)


# The fields of a tar header block that pm reads (ustar; GNU and v7 share them).
TAR_NAME = slice(0, 100)
TAR_MODE = slice(100, 108)
TAR_SIZE = slice(124, 136)
TAR_MTIME = slice(136, 148)
TAR_CHECKSUM = slice(148, 156)
TAR_TYPE = slice(156, 157)
TAR_LINK = slice(157, 257)
TAR_MAGIC = slice(257, 263)
TAR_PREFIX = slice(345, 500)


def _checksum_ok(block: bytes) -> bool:
    """Whether the header's checksum field matches its bytes (counted unsigned, or
    signed as some old tars did), the checksum field itself counted as spaces."""
    before, after = block[:TAR_CHECKSUM.start], block[TAR_CHECKSUM.stop:]
    stored = _tar_number(block[TAR_CHECKSUM], "checksum")
    unsigned = sum(before) + 8 * ord(" ") + sum(after)
    if stored == unsigned:
        return True
    signed = unsigned - 2 * sum(b for b in before + after if b > 127)
    return stored == signed


class _TarEntry:
    __slots__ = ("name", "type", "mode", "size", "link", "mtime", "header")


class TarReader:
    """Reads a tar stream header by header (ustar, GNU and pax), strictly.

    ``entries()`` yields each entry; the data of a regular file may be read with
    ``data()`` before the next entry is asked for, or is skipped.  A missing
    end-of-archive block, a bad checksum or a short read is InvalidInput.
    """

    def __init__(self, stream):
        self.stream = stream
        self.remaining = 0      # data bytes of the current entry not yet read
        self.padding = 0
        self.extended = 0       # extended header bytes read so far

    def read_exact(self, n: int) -> bytes:
        """Exactly ``n`` bytes from the stream; InvalidInput when it ends first."""
        data = self.stream.read(n)
        while len(data) < n:
            more = self.stream.read(n - len(data))
            if not more:
                raise InvalidInput("truncated archive")
            data += more
        return data

    def skip(self, n: int) -> None:
        """Skip ``n`` bytes of the stream (a plain tar seeks past long runs, a compressed one is
        read through); InvalidInput when it ends first."""
        self.stream.skip(n)

    def data(self):
        """The current entry's data, in chunks."""
        while self.remaining:
            chunk = self.stream.read(min(self.remaining, COPY_CHUNK))
            if not chunk:
                raise InvalidInput("truncated archive")
            self.remaining -= len(chunk)
            yield chunk

    def entries(self):
        """Each entry in turn; ``entry.header`` holds every byte of its headers (its own
        block, and the extended headers before it, with their padding)."""
        long_name = long_link = None
        pax: dict = {}
        header: list = []
        member_extended = 0       # extended header bytes before the current entry
        while True:
            if self.remaining or self.padding:
                self.skip(self.remaining + self.padding)
                self.remaining = self.padding = 0
            block = self.stream.read(512)
            if len(block) < 512:
                if len(block):
                    block += self.read_exact(512 - len(block))
                else:
                    raise InvalidInput("truncated archive (no end-of-archive block)")
            header.append(block)
            if block == _ZERO_BLOCK:
                if long_name is not None or long_link is not None or pax:
                    raise InvalidInput("corrupt archive: extended header without an entry")
                return
            if not _checksum_ok(block):
                raise InvalidInput("corrupt archive: bad tar header checksum")
            entry = _TarEntry()
            entry.type = block[TAR_TYPE]
            size = _tar_number(block[TAR_SIZE], "size")
            if entry.type in (b"L", b"K", b"x", b"g"):
                if size > MAX_EXTENDED_HEADER:
                    raise InvalidInput("archive has an oversized extended header")
                member_extended += size
                self.extended += size
                if member_extended > MAX_MEMBER_HEADERS:
                    raise InvalidInput("archive has more than %d bytes of extended headers "
                                       "before one member" % MAX_MEMBER_HEADERS)
                if self.extended > MAX_ARCHIVE_HEADERS:
                    raise InvalidInput("archive has more than %d bytes of extended headers"
                                       % MAX_ARCHIVE_HEADERS)
                payload = self.read_exact(size)
                header += (payload, self.read_exact(-size % 512))
                if entry.type == b"L":
                    long_name = payload.split(b"\0", 1)[0]
                elif entry.type == b"K":
                    long_link = payload.split(b"\0", 1)[0]
                elif entry.type == b"x":
                    pax.update(_parse_pax(payload))
                continue        # global pax headers carry nothing pm uses
            name = block[TAR_NAME].split(b"\0", 1)[0]
            if block[TAR_MAGIC] == b"ustar\0":
                prefix = block[TAR_PREFIX].split(b"\0", 1)[0]
                if prefix:
                    name = prefix + b"/" + name
            link = block[TAR_LINK].split(b"\0", 1)[0]
            if long_name is not None:
                name = long_name
            if long_link is not None:
                link = long_link
            entry.mtime = _tar_number(block[TAR_MTIME], "mtime")
            if "path" in pax:
                name = pax["path"]
            if "linkpath" in pax:
                link = pax["linkpath"]
            if "size" in pax:
                size = pax["size"]
            if "mtime" in pax:
                entry.mtime = pax["mtime"]
            if entry.mtime > MAX_MTIME:
                raise InvalidInput("corrupt archive: a modification time past the year 2242")
            long_name = long_link = None
            pax = {}
            member_extended = 0
            entry.name = _decode_name(name)
            entry.link = _decode_name(link)
            entry.mode = _tar_number(block[TAR_MODE], "mode")
            entry.size = size
            if entry.type in _FILE_TYPES:
                self.remaining, self.padding = size, -size % 512
            elif size and entry.type not in _REFUSED_TYPES:
                raise InvalidInput("corrupt archive: %s has data but is not a file" % entry.name)
            entry.header = header
            header = []
            yield entry


def _header_record(entry) -> list:
    """[length, sha256] of an entry's header bytes, the size of its data, and the
    Member it is (filled in by the caller; None for an entry that is not one)."""
    raw = b"".join(entry.header)
    return [len(raw), sha256_bytes(raw), entry.size if entry.type in _FILE_TYPES else 0, None]


def _decode_name(raw) -> str:
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("archive member name is not UTF-8: %r" % raw) from None


def _parse_pax(payload: bytes) -> dict:
    """The keys of a pax extended header that pm uses (path, linkpath, size, mtime)."""
    records, pos = {}, 0
    while pos < len(payload):
        space = payload.find(b" ", pos)
        if space < 0 or not payload[pos:space].isdigit():
            raise InvalidInput("corrupt archive: bad pax header")
        length = int(payload[pos:space])
        record = payload[space + 1:pos + length]
        if length <= space - pos or pos + length > len(payload) or not record.endswith(b"\n"):
            raise InvalidInput("corrupt archive: bad pax header")
        key, sep, value = record[:-1].partition(b"=")
        if not sep:
            raise InvalidInput("corrupt archive: bad pax header")
        if key in (b"path", b"linkpath"):
            records[key.decode()] = _decode_name(value)
        elif key in (b"size", b"mtime"):
            number = value.split(b".")[0]
            if not number.isdigit():
                raise InvalidInput("corrupt archive: bad pax %s" % key.decode())
            records[key.decode()] = int(number)
        pos += length
    return records


class _BoundedStream:
    """A decompressing stream that fails once it expands past MAX_EXPANSION_RATIO of the
    compressed bytes read (after EXPANSION_ALLOWANCE) or past MAX_TOTAL_BYTES.
    ``check_end(raw)``, when given, proves at the end that the compressed data is whole."""

    def __init__(self, inner, raw, errors: tuple, check_end=None):
        self.inner, self.raw, self.errors = inner, raw, errors
        self.produced, self.check_end = 0, check_end

    def read(self, n: int) -> bytes:
        """Up to ``n`` decompressed bytes (``b""`` at the end); InvalidInput when the compressed
        data is cut short or corrupt, or expands past the bounds."""
        try:
            data = self.inner.read(n)
        except EOFError:
            raise InvalidInput("truncated archive (the compressed data ends early)") from None
        except self.errors as e:
            raise InvalidInput("corrupt compressed data: %s" % (e,)) from None
        self.produced += len(data)
        if self.produced > MAX_TOTAL_BYTES or (
                self.produced > EXPANSION_ALLOWANCE and
                self.produced > MAX_EXPANSION_RATIO * max(1, self.raw.tell())):
            raise InvalidInput("compressed data expands past its bound")
        return data

    def skip(self, n: int) -> None:
        """Read ``n`` bytes and drop them (a compressed stream cannot seek)."""
        while n:
            data = self.read(min(n, COPY_CHUNK))
            if not data:
                raise InvalidInput("truncated archive")
            n -= len(data)

    def finish(self) -> None:
        """Read what follows the tar end (padding), so that the compression format checks
        its own trailer."""
        while self.read(COPY_CHUNK):
            pass
        if self.check_end:
            self.check_end(self.raw)


def _check_zstd_frames(raw) -> None:
    """Refuse zstd data that is not a sequence of whole frames.  zstandard's streaming
    reader ends quietly where a frame is cut short, so pm walks the frame and block
    headers (RFC 8878 section 3.1) itself.  ``raw`` is a seekable binary file."""
    size = raw.seek(0, os.SEEK_END)
    pos = 0
    while pos < size:
        raw.seek(pos)
        head = raw.read(8)
        magic = int.from_bytes(head[:4], "little")
        if len(head) == 8 and magic & ~15 == 0x184D2A50:      # a skippable frame
            pos += 8 + int.from_bytes(head[4:8], "little")
            continue
        if magic != 0xFD2FB528 or len(head) < 5 or head[4] & 0x08:
            raise InvalidInput("corrupt zstd data at byte %d" % pos)
        flags = head[4]
        content_size = (0, 2, 4, 8)[flags >> 6] or (1 if flags & 0x20 else 0)
        pos += 5 + (0 if flags & 0x20 else 1) + (0, 1, 2, 4)[flags & 3] + content_size
        last = False
        while not last:
            if pos + 3 > size:
                raise InvalidInput("truncated zstd data (a frame ends early)")
            raw.seek(pos)
            block = int.from_bytes(raw.read(3), "little")
            kind = block >> 1 & 3                  # raw, run-length, compressed, reserved
            if kind == 3:
                raise InvalidInput("corrupt zstd data at byte %d" % pos)
            pos += 3 + (1 if kind == 1 else block >> 3)
            last = bool(block & 1)
        pos += 4 if flags & 0x04 else 0
    if pos > size:
        raise InvalidInput("truncated zstd data (a frame ends early)")


class _PlainStream:
    def __init__(self, raw):
        self.raw = raw
        self.read = raw.read
        self.size = os.fstat(raw.fileno()).st_size

    def skip(self, n: int) -> None:
        """Skip ``n`` bytes; large runs by seeking (a plain tar is a seekable file),
        small ones from the read buffer (tell and seek each cost a system call)."""
        if n <= COPY_CHUNK:
            data = self.raw.read(n)
            if len(data) < n:
                raise InvalidInput("truncated archive")
            return
        if self.raw.tell() + n > self.size:
            raise InvalidInput("truncated archive")
        self.raw.seek(n, 1)

    def finish(self) -> None:
        """Nothing to check: a plain tar has no trailer (the counterpart of
        _BoundedStream.finish)."""
        pass


def open_tar_stream(raw):
    """A readable stream of tar data from a package file: plain, gzip or zstd, told by
    the first bytes, never by the name."""
    raw.seek(0)
    magic = raw.read(6)
    raw.seek(0)
    if magic[:2] == b"\x1f\x8b":
        import gzip
        import zlib
        return _BoundedStream(gzip.GzipFile(fileobj=raw, mode="rb"), raw,
                              (EOFError, OSError, zlib.error))
    if magic[:4] == b"\x28\xb5\x2f\xfd" or int.from_bytes(magic[:4], "little") & ~15 == 0x184D2A50:
        zstd = lazy_import("zstandard", "reading a .tar.zst package")
        reader = zstd.ZstdDecompressor().stream_reader(raw, read_size=1 << 17,
                                                       read_across_frames=True)
        return _BoundedStream(reader, raw, (zstd.ZstdError,), _check_zstd_frames)
    if magic[:3] == b"BZh" or magic == b"\xfd7zXZ\x00":
        raise InvalidInput("bzip2 and xz packages are not supported (use plain, gzip or zstd tar)")
    return _PlainStream(raw)


# File names a package usually has (the format is told by its bytes, never by its name).
PACKAGE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst")


_RESERVED_PREFIXES = tuple(d + "/" for d in RESERVED_DIRS)


class Package:
    """A package archive that passed every check of SPEC §15.

    After construction: ``manifest``, ``name``, ``version``, ``members`` (DATA entries in
    archive order), ``scripts`` ({name: bytes}), ``config_digests`` ({path: sha256} for
    config files).  ``stream()`` reads the archive a second time for installing.
    ``file``, when given, is the package already open (one whose checksum was verified
    through that very descriptor); the Package then owns it.
    """

    def __init__(self, path: str, allow_setuid: bool = False, file=None):
        self.path = path
        self.allow_setuid = allow_setuid
        try:    # O_NONBLOCK: opening a FIFO would otherwise wait for a writer forever
            self.file = file if file is not None else open(
                path, "rb", buffering=1 << 16, opener=lambda name, flags: os.open(name, flags | os.O_NONBLOCK))
        except IsADirectoryError:
            raise InvalidInput("%s is not a regular file" % path) from None
        except OSError as e:
            raise PmError("cannot read %s: %s" % (path, e.strerror))
        if not stat.S_ISREG(os.fstat(self.file.fileno()).st_mode):
            self.file.close()
            raise InvalidInput("%s is not a regular file" % path)
        try:
            self._scan()
        except BaseException:
            self.file.close()
            raise

    def close(self) -> None:
        """Close the package file (one given as ``file`` too: the Package owns it)."""
        self.file.close()

    def __repr__(self):
        return "Package(%s %s)" % (self.name, self.version)

    def fail(self, message: str) -> InvalidInput:
        """The InvalidInput for ``message``, prefixed with the package file's name,
        for the caller to raise."""
        return InvalidInput("%s: %s" % (os.path.basename(self.path), message))

    def _scan(self) -> None:
        """The first pass: read and check every header (SPEC §15), keep the members,
        the manifest, the scripts, the config files' digests and CONTROL/sums, and each
        header's bytes for ``stream()`` to compare; refuse the archive on anything else."""
        self.members: list[Member] = []
        self.scripts: dict[str, bytes] = {}
        self.config_digests: dict[str, bytes] = {}
        self.manifest = None
        seen: dict[str, str] = {}
        total = count = 0
        late_config = False
        is_config = None
        sums = None
        self._headers: list[list] = []    # every entry's headers, for stream() to compare
        stream = open_tar_stream(self.file)
        reader = TarReader(stream)
        try:
            for entry in reader.entries():
                self._headers.append(_header_record(entry))
                count += 1
                if count > MAX_MEMBERS:
                    raise self.fail("more than %d members" % MAX_MEMBERS)
                where, name = self._member_place(entry)
                kind = self._member_kind(entry, name)
                if (not name or name == "/") and kind != "d":
                    raise self.fail("%s must be a directory" % entry.name)
                if where == "DATA":
                    if name in seen:
                        raise self.fail("duplicate member %s" % name)
                    if (name + "/").startswith(_RESERVED_PREFIXES):
                        raise self.fail("%s is in pm's own directory %s; no package may ship files there"
                                        % (name, next(d for d in RESERVED_DIRS if (name + "/").startswith(d + "/"))))
                    if kind == "f":
                        if entry.size > MAX_MEMBER_BYTES:
                            raise self.fail("member %s is larger than %d bytes" % (name, MAX_MEMBER_BYTES))
                        total += entry.size
                        if total > MAX_TOTAL_BYTES:
                            raise self.fail("larger than %d bytes in all" % MAX_TOTAL_BYTES)
                    seen[name] = kind
                    if name == "/":
                        continue
                    member = Member(name, kind, entry.mode & 0o7777, entry.size,
                                    entry.link if kind == "l" else None, entry.mtime)
                    self.members.append(member)
                    self._headers[-1][3] = member
                    if kind == "f":
                        if is_config is None:
                            late_config = True
                        elif is_config(name):
                            self.config_digests[name] = self._digest(reader)
                elif where == "CONTROL" and name:
                    if ("CONTROL/" + name) in seen:
                        raise self.fail("duplicate member CONTROL/%s" % name)
                    seen["CONTROL/" + name] = kind
                    if kind != "f":
                        raise self.fail("CONTROL/%s is not a regular file" % name)
                    limit = {"manifest": MAX_MANIFEST_BYTES, SUMS: MAX_SUMS_BYTES}.get(name, MAX_SCRIPT_BYTES)
                    if entry.size > limit:
                        raise self.fail("CONTROL/%s is larger than %d bytes" % (name, limit))
                    if name == SUMS:
                        sums = self._read_sums(reader)
                        continue
                    content = b"".join(reader.data())
                    if name == "manifest":
                        try:
                            self.manifest = parse_manifest(content)
                        except InvalidInput as e:
                            raise self.fail(e.message) from None
                        is_config = config_matcher(self.manifest)
                    else:
                        self.scripts[name] = content
            stream.finish()
        except RecursionError:
            raise self.fail("corrupt archive") from None
        if self.manifest is None:
            raise self.fail("no CONTROL/manifest: not a pm package")
        self._check_tree(seen)
        if sums is not None:
            self._attach_sums(sums)
        self.name = self.manifest["package"]
        self.version = Version.parse(self.manifest["version"])
        if late_config:
            self.config_digests = self._config_digests_second_pass(is_config)
        for path in self.config_digests:
            if path + CONFIG_NEW_SUFFIX in seen:
                raise self.fail("%s is a member, but pm keeps the packaged version of the config file "
                                "%s there" % (path + CONFIG_NEW_SUFFIX, path))

    def _read_sums(self, reader: TarReader) -> dict:
        """CONTROL/sums, read a line at a time: {path: (sha256, mode, size)}."""
        import itertools
        sums, rest, number = {}, b"", 0
        for chunk in itertools.chain(reader.data(), (b"\n",)):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            if len(rest) > MAX_PATH_BYTES + 100:
                raise self.fail("CONTROL/%s has a line longer than %d bytes" % (SUMS, MAX_PATH_BYTES + 100))
            for line in lines:
                number += 1
                if not line:
                    continue
                fields = line.split(b" ", 3)
                try:
                    if len(fields) != 4 or len(fields[0]) != 64 or not fields[1].isdigit() \
                            or not fields[2].isdigit():
                        raise ValueError
                    path = fields[3].decode("utf-8")
                    record = (bytes.fromhex(fields[0].decode("ascii")), int(fields[1], 8), int(fields[2]))
                except ValueError:
                    raise self.fail("CONTROL/%s line %d is not 'SHA256 MODE SIZE /path'" % (SUMS, number)) from None
                if path in sums:
                    raise self.fail("CONTROL/%s lists %s twice" % (SUMS, path[:200]))
                sums[path] = record
        return sums

    def _attach_sums(self, sums: dict) -> None:
        """Give each file member the digest CONTROL/sums records for it; a line naming
        anything but a file of the package, or another mode or size, refuses it."""
        for member in self.members:
            record = sums.pop(member.path, None) if member.kind == "f" else None
            if record is None:
                continue
            digest, mode, size = record
            if (mode, size) != (member.mode, member.size):
                raise self.fail("CONTROL/%s gives %s mode %o and %d bytes; the archive has %o and %d"
                                % (SUMS, member.path, mode, size, member.mode, member.size))
            member.digest = digest
        if sums:
            raise self.fail("CONTROL/%s lists %s, which is not a file of the package" % (SUMS, next(iter(sums))[:200]))

    @staticmethod
    def _digest(reader: TarReader) -> bytes:
        h = new_sha256()
        for chunk in reader.data():
            h.update(chunk)
        return h.digest()

    def _member_place(self, entry) -> tuple:
        """``("DATA", "/abs/path")``, ``("CONTROL", "name")`` or ``("", "")`` for the
        top directories; refuses every name that is not plainly inside the package."""
        name = entry.name
        if has_control_chars(name) or has_control_chars(entry.link):
            raise self.fail("member name with a control character: %r" % name)
        if len(name.encode()) > MAX_PATH_BYTES or len(entry.link.encode()) > MAX_PATH_BYTES:
            raise self.fail("member name too long")
        if name.startswith("/"):
            raise self.fail("absolute member name %s" % name)
        while name.startswith("./"):
            name = name[2:]
        if name in ("", "."):
            return "", ""
        parts = name.rstrip("/").split("/") if name != "/" else []
        if len(parts) > MAX_PATH_DEPTH + 1:
            raise self.fail("member %s is nested more than %d directories deep"
                            % (name[:200] + "...", MAX_PATH_DEPTH))
        joined = "/%s/" % "/".join(parts)
        if ("/../" in joined or "//" in joined or "/./" in joined or "/" + STAGING_PREFIX in joined
                or max(map(len, parts)) * 4 > MAX_NAME_BYTES):
            self._refuse_parts(entry, parts)      # else no part can be refused: the fast path
        if parts[0] == "DATA":
            return "DATA", "/" + "/".join(parts[1:])
        if parts[0] == "CONTROL" and len(parts) <= 2:
            return "CONTROL", parts[1] if len(parts) == 2 else ""
        raise self.fail("unexpected member %s (a package holds only CONTROL/ and DATA/)" % entry.name)

    def _refuse_parts(self, entry, parts: list) -> None:
        for part in parts:
            if part == "..":
                raise self.fail("member name with '..': %s" % entry.name)
            if part in ("", "."):
                raise self.fail("member name with an empty or '.' component: %s" % entry.name)
            if len(part.encode()) > MAX_NAME_BYTES:
                raise self.fail("member name component too long")
            if part.startswith(STAGING_PREFIX):    # even as a directory, it would pass for debris
                raise self.fail("member name uses pm's reserved prefix: %s" % entry.name)

    def _member_kind(self, entry, name: str) -> str:
        t = entry.type
        if t in _REFUSED_TYPES:
            raise self.fail("%s is %s" % (name, _REFUSED_TYPES[t]))
        if t in _FILE_TYPES:
            kind = "f"
        elif t == b"5":
            kind = "d"
        elif t == b"2":
            kind = "l"
            if not entry.link:
                raise self.fail("symbolic link %s has no target" % name)
            escape = _link_escape(name, entry.link)
            if escape:
                raise self.fail("symbolic link %s -> %s %s" % (name, entry.link, escape))
        else:
            raise self.fail("%s has an unsupported member type %r" % (name, t.decode("latin-1")))
        if kind != "l" and entry.mode & 0o6000 and not self.allow_setuid:
            raise self.fail("%s is setuid or setgid (use --allow-setuid to accept)" % name)
        return kind

    def _check_tree(self, seen: dict) -> None:
        """Every parent of a DATA member must be a directory of the archive or absent
        from it: a member below an archive symlink would be written through it."""
        for member in self.members:
            parent = member.path
            while True:
                parent = parent.rsplit("/", 1)[0] or "/"
                if parent == "/":
                    break
                kind = seen.get(parent)
                if kind == "l":
                    raise self.fail("%s passes through the symbolic link %s" % (member.path, parent))
                if kind == "f":
                    raise self.fail("%s is below the file %s" % (member.path, parent))

    def _config_digests_second_pass(self, is_config) -> dict:
        digests = {}
        for member, chunks in self.stream():
            if member.kind == "f" and is_config(member.path):
                h = new_sha256()
                for chunk in chunks:
                    h.update(chunk)
                digests[member.path] = h.digest()
        return digests

    def stream(self):
        """Yield ``(member, chunks)`` for each DATA member again; ``chunks`` iterates over
        a file's data and must be consumed before the next member.  The archive must
        be the one that was checked."""
        # Every header was parsed and checked by the first pass: this one reads the same
        # bytes again, and compares them, unparsed, with what was checked.  Any
        # difference means the file changed under pm.
        stream = open_tar_stream(self.file)
        reader = TarReader(stream)
        empty = iter(())
        for length, digest, size, member in self._headers:
            if sha256_bytes(reader.read_exact(length)) != digest:
                raise self.fail("the archive changed while it was being installed")
            reader.remaining, reader.padding = size, -size % 512
            if member is not None:
                yield member, reader.data() if member.kind == "f" else empty
            if reader.remaining or reader.padding:
                reader.skip(reader.remaining + reader.padding)
                reader.remaining = reader.padding = 0
        if reader.read_exact(512) != _ZERO_BLOCK:
            raise self.fail("the archive changed while it was being installed")
        stream.finish()


def _link_escape(link_path: str, target: str) -> str | None:
    """Why a symlink at ``link_path`` pointing to ``target`` may resolve outside the root,
    or None when it cannot (absolute targets are taken relative to the root, as in a
    chroot).  A '..' after a name is refused: the name may be, or later become, another
    symlink, and '..' then climbs from wherever that leads ("a/up/.." with a/up -> ..)."""
    parts = [] if target.startswith("/") else link_path.split("/")[1:-1]
    named = False
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part != "..":
            parts.append(part)
            named = True
        elif named:
            return "has '..' after a name, which may lead outside the root"
        elif not parts:
            return "points outside the root"
        else:
            parts.pop()
    return None


# =============================================================================
# 6. Root access: safe filesystem operations under the root
# =============================================================================

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_O_READ = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_O_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class UnsafePath(InvalidInput):
    """A path under the root passes through a symbolic link or a non-directory."""

    @classmethod
    def symlink(cls, path: str) -> "UnsafePath":
        """The UnsafePath saying that ``path`` is a symbolic link in the root, which pm
        does not write through."""
        return cls("%s is a symbolic link in the root; pm does not write through it" % path)


def dir_mode_matches(st_mode: int, mode: int) -> bool:
    """Whether a directory's mode on disk is the ``mode`` recorded for it (or that mode
    with the group write pm adds to the directories it creates for a shared area)."""
    return stat.S_IMODE(st_mode) in (mode, mode | 0o020)


def shared_dir_mode(mode: int) -> int:
    """The mode for a directory pm creates: the one asked for, plus group write when the
    umask leaves group write open (umask 002, as shared software areas are managed), so
    that every member of the group can manage what pm installs.  pm's own files are
    created 0664 under the umask for the same reason."""
    return mode | (0 if process_umask() & 0o020 else 0o020)


_umask = None


def process_umask() -> int:
    """The umask (read once: reading it means setting it)."""
    global _umask
    if _umask is None:
        _umask = os.umask(0o022)
        os.umask(_umask)
    return _umask


def file_kind(mode: int) -> str:
    """What a file of ``mode`` is, for people (``a directory``, ``a FIFO``...)."""
    for test, what in ((stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISREG, "a regular file")):
        if test(mode):
            return what
    return "an unknown kind of file"


def valid_root_path(path) -> bool:
    """Whether ``path`` read from pm's own state (journal, status, file lists) names a
    path plainly inside the root, by the rules for archive member names: absolute, no
    ``..``, ``.`` or empty component, no control character, within PATH_MAX/NAME_MAX."""
    if not isinstance(path, str) or not path.startswith("/") or has_control_chars(path):
        return False
    if path == "/":
        return True
    joined = path + "/"
    if "//" in joined or "/./" in joined or "/../" in joined:
        return False
    if len(path) * 4 <= MAX_NAME_BYTES:        # the fast path: no part can be too long
        return True
    if len(path.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        return False
    return all(len(part.encode("utf-8", "surrogateescape")) <= MAX_NAME_BYTES for part in path[1:].split("/"))


def valid_state_name(name) -> bool:
    """Whether ``name`` (a file list, a kept script's package) is one plain file name."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name
            and not has_control_chars(name) and len(name.encode("utf-8", "surrogateescape")) <= MAX_NAME_BYTES)


def parent_of(path: str) -> str:
    """The parent directory of the absolute ``path`` (``/`` for ``/x``, and for ``/`` itself)."""
    return path.rsplit("/", 1)[0] or "/"


def split_path(path: str) -> tuple:
    """``(parent, name)`` of the absolute ``path``: ``("/usr/bin", "x")`` for ``/usr/bin/x``,
    ``("/", "x")`` for ``/x``."""
    parent, _, name = path.rpartition("/")
    return parent or "/", name


class Root:
    """The directory pm manages.  Every access goes through directory descriptors opened
    one component at a time without following symbolic links, so nothing outside the
    root is read or written, whatever the tree under it holds.  Paths are absolute
    within the root (``/etc/x``)."""

    MAX_CACHED_DIRS = 512

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self._dirs: dict[str, int] = {}
        # At most a quarter of the descriptors the process may open stay cached: a chain
        # of MAX_PATH_DEPTH directories must still fit beside them under `ulimit -n 256`.
        try:
            import resource
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        except (ImportError, OSError, ValueError):
            soft = -1
        self.max_cached = self.MAX_CACHED_DIRS if soft < 0 else max(8, min(self.MAX_CACHED_DIRS, soft // 4))

    def host_path(self, path: str) -> str:
        """The host path of ``path`` (absolute within the root), for messages and the few host calls
        that take a path; joined as text: nothing is opened or checked."""
        return self.path.rstrip("/") + path if path != "/" else self.path

    def dir_fd(self, path: str, create_mode: int | None = None) -> int:
        """A descriptor of the directory ``path``.  Missing directories raise
        FileNotFoundError, or are created with ``create_mode`` when it is given."""
        fd = self._dirs.get(path)
        if fd is not None:
            return fd
        if path == "/":
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
            except FileNotFoundError:
                raise PmError("the root %s does not exist" % self.path) from None
            except NotADirectoryError:
                raise PmError("the root %s is not a directory" % self.path) from None
            self._dirs[path] = fd
            return fd
        parent, name = split_path(path)
        parent_fd = self.dir_fd(parent, create_mode)
        try:
            fd = self._open_dir_at(parent_fd, path, name)
        except FileNotFoundError:
            if create_mode is None:
                raise
            FAULTS.step("mkdir")
            try:
                os.mkdir(name, 0o700, dir_fd=parent_fd)
                created = True
            except FileExistsError:     # another pm made it first (before either held the lock)
                created = False
            fd = self._open_dir_at(parent_fd, path, name)
            if created:
                os.fchmod(fd, shared_dir_mode(create_mode))
        self._dirs[path] = fd
        return fd

    def _open_dir_at(self, parent_fd: int, path: str, name: str) -> int:
        """Open the directory ``name`` in ``parent_fd``; a symlink or a file there is
        UnsafePath, a missing one FileNotFoundError."""
        try:
            return os.open(name, _O_DIR, dir_fd=parent_fd)
        except (NotADirectoryError, OSError) as e:
            if isinstance(e, NotADirectoryError) or e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise self._unsafe(path) from None
            raise

    def _unsafe(self, path: str) -> UnsafePath:
        parent, name = split_path(path)
        try:
            st = os.stat(name, dir_fd=self.dir_fd(parent), follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                return UnsafePath("%s is a symbolic link in the root; pm does not write or "
                                  "read through it" % path)
        except OSError:
            pass
        return UnsafePath("%s in the root is not a directory" % path)

    def make_dir(self, path: str, mode: int) -> None:
        """Create the directory ``path`` (its parent exists) with exactly ``mode``."""
        self.trim()
        parent, name = split_path(path)
        parent_fd = self.dir_fd(parent)
        FAULTS.step("mkdir")
        os.mkdir(name, 0o700, dir_fd=parent_fd)
        fd = os.open(name, _O_DIR, dir_fd=parent_fd)
        try:
            os.fchmod(fd, shared_dir_mode(mode))
        except BaseException:
            os.close(fd)
            raise
        self._dirs[path] = fd

    def lstat(self, path: str):
        """The lstat of ``path``, or None when it (or a parent) does not exist."""
        self.trim()
        if path == "/":
            return os.fstat(self.dir_fd("/"))
        parent, name = split_path(path)
        try:
            return os.stat(name, dir_fd=self.dir_fd(parent), follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _open_file(self, path: str) -> int | None:
        """The one way pm opens a file under the root to read it: never through a
        symbolic link, never blocking on a FIFO or a device, and only a regular file
        (anything else is InvalidInput naming the path); None when it does not exist."""
        self.trim()
        parent, name = split_path(path)
        try:
            fd = os.open(name, _O_READ | os.O_NONBLOCK, dir_fd=self.dir_fd(parent))
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UnsafePath("%s is a symbolic link; pm does not read through it"
                                 % self.host_path(path)) from None
            if e.errno in (errno.ENXIO, errno.EOPNOTSUPP):
                raise InvalidInput("%s is a socket, not a regular file" % self.host_path(path)) from None
            raise PmError("cannot read %s: %s" % (self.host_path(path), e.strerror)) from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise InvalidInput("%s is %s, not a regular file" % (self.host_path(path), file_kind(st.st_mode)))
        return fd

    def digest(self, path: str) -> bytes | None:
        """The sha256 of the regular file ``path``, or None when it does not exist."""
        fd = self._open_file(path)
        if fd is None:
            return None
        try:
            return sha256_fd(fd)
        finally:
            os.close(fd)

    def read(self, path: str) -> bytes | None:
        """The content of the file ``path``, or None when it (or a directory on the way to
        it) does not exist."""
        try:
            fd = self._open_file(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if fd is None:
            return None
        try:
            chunks = []
            while True:
                chunk = os.read(fd, COPY_CHUNK)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
        finally:
            os.close(fd)

    def readlink(self, path: str) -> str:
        """The target of the symbolic link ``path``; UnsafePath when a directory on the way is a
        symbolic link or not a directory, and the OSError of readlink otherwise (FileNotFoundError,
        EINVAL for a path that is no link)."""
        self.trim()
        parent, name = split_path(path)
        return os.readlink(name, dir_fd=self.dir_fd(parent))

    def link_leaves_root(self, path: str) -> bool:
        """True when the symbolic link ``path`` in the root points outside it, read as
        the host reads it: an absolute target (unless the root is ``/``) or one climbing
        above the root with ``..``."""
        target = self.readlink(path)
        if target.startswith("/"):
            return self.path != "/"
        return climbs_above_root(path, target)

    def listdir(self, path: str) -> list:
        """The names in the directory ``path``, in no particular order; FileNotFoundError
        when it is missing, UnsafePath when it or a directory on the way is a symbolic
        link or not a directory."""
        self.trim()
        fd = os.open(".", _O_DIR, dir_fd=self.dir_fd(path))
        try:
            return os.listdir(fd)
        finally:
            os.close(fd)

    def unlink(self, path: str) -> bool:
        """Remove the file or symbolic link ``path``: True when it was removed, False when it
        (or its directory) was missing; any other OSError (IsADirectoryError for a directory)
        passes to the caller."""
        self.trim()
        parent, name = split_path(path)
        try:
            FAULTS.step("unlink")
            os.unlink(name, dir_fd=self.dir_fd(parent))
            return True
        except FileNotFoundError:
            return False

    def rmdir(self, path: str) -> bool:
        """Remove the empty directory ``path``; False when it is missing or not empty."""
        self.trim()
        parent, name = split_path(path)
        fd = self._dirs.pop(path, None)
        if fd is not None:
            os.close(fd)
        for sub in [p for p in self._dirs if p.startswith(path + "/")]:
            os.close(self._dirs.pop(sub))
        try:
            FAULTS.step("rmdir")
            os.rmdir(name, dir_fd=self.dir_fd(parent))
            return True
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                return False
            raise

    def forget(self, path: str) -> None:
        """Close the cached descriptors of the directory ``path`` and those below it
        (after it was renamed away)."""
        for cached in [p for p in self._dirs if p == path or p.startswith(path + "/")]:
            os.close(self._dirs.pop(cached))

    def rename(self, source: str, target: str) -> None:
        """Rename ``source`` to ``target`` (each in any directory of the root), replacing what
        rename(2) replaces; OSError passes to the caller, and the cached descriptors of a renamed
        directory are kept (forget() drops them)."""
        self.trim()
        FAULTS.step("rename")
        os.rename(split_path(source)[1], split_path(target)[1],
                  src_dir_fd=self.dir_fd(parent_of(source)), dst_dir_fd=self.dir_fd(parent_of(target)))

    def trim(self) -> None:
        """Close cached directory descriptors when there are many.  Called where no
        descriptor from dir_fd is held: between files, and on entering each operation
        that takes paths (they hold none of the caller's)."""
        if len(self._dirs) > self.max_cached:
            root_fd = self._dirs.pop("/", None)
            for fd in self._dirs.values():
                os.close(fd)
            self._dirs = {"/": root_fd} if root_fd is not None else {}

    def close(self) -> None:
        """Close every cached directory descriptor; the Root may be used again
        (they are opened anew)."""
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs = {}


def climbs_above_root(path: str, target: str) -> bool:
    """True when ``target``, the relative target of the symbolic link ``path``, climbs
    above the root with ``..`` (read as the host reads it)."""
    depth = len([p for p in parent_of(path).split("/") if p])
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def _ancestors(path: str):
    """The directories above ``path``, nearest first, without ``/``."""
    while True:
        path = parent_of(path)
        if path == "/":
            return
        yield path


def open_host_file(path: str):
    """Open a file outside the root that pm reads (a directory source's index or
    package, a list given by path) for reading: a FIFO is refused, never waited on, and
    anything but a regular file is InvalidInput naming it.  FileNotFoundError and
    NotADirectoryError pass for the caller to decide."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except (FileNotFoundError, NotADirectoryError):
        raise
    except OSError as e:
        if e.errno in (errno.ENXIO, errno.EOPNOTSUPP):
            raise InvalidInput("%s is a socket, not a regular file" % path) from None
        raise PmError("cannot read %s: %s" % (path, e.strerror)) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise InvalidInput("%s is %s, not a regular file" % (path, file_kind(mode)))
    return os.fdopen(fd, "rb", buffering=1 << 16)


def fsync_dir(fd: int) -> None:
    """Flush the directory ``fd`` to disk (fsync), so that the entries made, renamed or removed in
    it survive a crash; a fault-injection step."""
    FAULTS.step("fsync")
    os.fsync(fd)


def fd_path(dir_fd: int, name: str = "") -> str:
    """The host path of ``name`` in the directory ``dir_fd``, for messages."""
    try:
        where = os.readlink("/proc/self/fd/%d" % dir_fd)
    except OSError:
        return name
    return where.rstrip("/") + "/" + name if name else where


def _clear_odd_file(dir_fd: int, name: str) -> None:
    """Before pm replaces one of its own files: a symbolic link, FIFO or device there is
    removed (it is replaced, never followed); a directory is InvalidInput."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return
    if stat.S_ISREG(st.st_mode):
        return
    if stat.S_ISDIR(st.st_mode):
        raise InvalidInput("%s is a directory where pm keeps a file of its own" % fd_path(dir_fd, name))
    os.unlink(name, dir_fd=dir_fd)


def atomic_write(dir_fd: int, name: str, data: bytes, sync: bool, kind: str = "db",
                 sync_dir: bool = True) -> None:
    """Replace ``name`` in ``dir_fd`` by ``data`` all at once: temporary file, fsync,
    rename, directory fsync (unless ``sync_dir`` is False: the caller does it)."""
    temporary = name + ".tmp"
    FAULTS.step(kind)
    _clear_odd_file(dir_fd, temporary)
    _clear_odd_file(dir_fd, name)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK |
                 getattr(os, "O_CLOEXEC", 0), 0o664, dir_fd=dir_fd)
    try:
        try:
            write_all(fd, data)
            if sync:
                FAULTS.step("fsync")
                os.fsync(fd)
        finally:
            os.close(fd)
        FAULTS.step("rename")
        os.rename(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(temporary, dir_fd=dir_fd)
        except OSError:
            pass
        raise
    if sync and sync_dir:
        fsync_dir(dir_fd)


_libc_syncfs = None


def sync_filesystem(fd: int) -> None:
    """Flush the whole filesystem holding ``fd`` (syncfs), once per transaction instead
    of an fsync per file; os.sync where syncfs is missing."""
    global _libc_syncfs
    FAULTS.step("fsync")
    if _libc_syncfs is None:
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            _libc_syncfs = libc.syncfs
        except (OSError, AttributeError):
            _libc_syncfs = False
    if _libc_syncfs and _libc_syncfs(fd) == 0:
        return
    os.sync()


PM_CONF = "/etc/pm/pm.conf"


def read_settings(root: Root, path: str = PM_CONF) -> dict:
    """``key = value`` settings of a configuration file under the root (``#`` comments,
    blank lines ignored); {} when the file is absent.  A malformed line is InvalidInput
    naming the file and line."""
    data = root.read(path)
    if data is None:
        return {}
    settings = {}
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise InvalidInput("%s line %d: expected 'key = value'" % (root.host_path(path), number))
        settings[key.strip()] = value.strip()
    return settings


def root_architecture(root: Root) -> str:
    """The architecture of the root: ``architecture =`` in pm.conf, else this machine's."""
    return read_settings(root).get("architecture") or os.uname().machine


# =============================================================================
# 7. Database
# =============================================================================
#
# <root>/var/lib/pm/status holds every package's record (small, read by every command);
# <root>/var/lib/pm/files/<name>.<txid> holds one package's owned paths, read only by
# commands that need them.  A transaction writes new file lists under new names, then
# renames a new status into place: that rename is the commit.

DB_DIR = "/var/lib/pm"
SCRIPTS_DIR = DB_DIR + "/scripts"
FILES_DIR = DB_DIR + "/files"
JOURNAL = DB_DIR + "/journal"      # a transaction's journal (section 8)
DB_FORMAT = 1

STATE_INSTALLED = "installed"
STATE_CONFIG_REMAINING = "config-remaining"
REASON_EXPLICIT = "explicit"
REASON_DEPENDENCY = "dependency"


class FileEntry:
    """One owned path: kind ``f``/``d``/``l``, mode, size, sha256 (files; for config
    files the packaged one), link target (symlinks)."""

    __slots__ = ("kind", "mode", "size", "digest", "link", "explicit")

    def __init__(self, kind, mode, size=0, digest=None, link=None, explicit=False):
        self.kind, self.mode, self.size, self.digest, self.link = kind, mode, size, digest, link
        self.explicit = bool(explicit)     # a directory member of the package (not only a parent)

    def packed(self, path: str) -> list:
        """The row of ``path`` in a file list: ``[path, kind, mode, size, digest, link]``, plus
        ``True`` for an explicit directory (what Database.files reads back)."""
        row = [path, self.kind, self.mode, self.size, self.digest, self.link]
        return row + [True] if self.explicit else row


class PackageRecord(dict):
    """One package's record in the database, its fields by name: ``version`` (text),
    ``manifest`` (dict), ``state`` (STATE_INSTALLED or STATE_CONFIG_REMAINING),
    ``reason`` (REASON_EXPLICIT or REASON_DEPENDENCY), ``time`` (when it was installed,
    epoch seconds), ``files`` (the name of its file list in var/lib/pm/files), ``config``
    (its config files' paths) and ``size`` (bytes installed).  A dict underneath: the
    status file stores it as a msgpack map, and --json shows it as an object."""

    __slots__ = ()

    @classmethod
    def new(cls, version: str, manifest: dict, reason: str, config: list, size: int,
            state: str = STATE_INSTALLED, files: str = "", time: int = 0) -> "PackageRecord":
        """A record with every field."""
        return cls(version=version, manifest=manifest, state=state, reason=reason, time=time,
                   files=files, config=config, size=size)

    def but(self, **changes) -> "PackageRecord":
        """A copy with ``changes`` (field=value)."""
        record = PackageRecord(self)
        record.update(changes)
        return record

    @property
    def version(self) -> str:
        return self["version"]

    @property
    def manifest(self) -> dict:
        return self["manifest"]

    @property
    def state(self) -> str:
        return self["state"]

    @property
    def reason(self) -> str:
        return self["reason"]

    @property
    def time(self) -> int:
        return self.get("time", 0)

    @property
    def files(self) -> str:
        return self["files"]

    @property
    def config(self) -> list:
        return self["config"]

    @property
    def size(self) -> int:
        return self.get("size", 0)

    @property
    def installed(self) -> bool:
        """True in state installed (not config-remaining)."""
        return self["state"] == STATE_INSTALLED


def _msgpack():
    return lazy_import("msgpack", "reading pm's database")


class StateChanged(PmError):
    """A reader's view of the database went stale: a writer journaled or committed while
    it read.  The command starts again on the new committed state."""


def _check_status(packages, pending) -> None:
    """Refuse a status naming anything outside the root or outside pm's own directories
    (ValueError/TypeError: the caller says the database is damaged)."""
    if not isinstance(packages, dict) or not isinstance(pending, list):
        raise ValueError("packages or pending work of the wrong type")
    for name, record in packages.items():
        if not valid_package_name(name) or not valid_state_name(name):
            raise ValueError("it names a package %r" % (name,))
        if not isinstance(record, dict) or not valid_state_name(record.get("files")):
            raise ValueError("the record of %s names no valid file list" % name)
        for path in record.get("config") or ():
            if not valid_root_path(path):
                raise ValueError("the record of %s names %r, which is not a path inside the root"
                                 % (name, path))
    for entry in pending:
        if not isinstance(entry, dict) or not valid_state_name(entry.get("package")) \
                or not valid_state_name(entry.get("script")):
            raise ValueError("a pending script entry is malformed")


def _without_gc(function, *args, **options):
    """``function(*args, **options)`` with the cyclic garbage collector paused (msgpack's
    own advice for unpacking): the status of 1,000 packages is some 10,000 new dicts and
    lists, which set off collections that cost ten times the work; none holds a cycle."""
    import gc
    paused = gc.isenabled()
    gc.disable()
    try:
        return function(*args, **options)
    finally:
        if paused:
            gc.enable()


def _unpackb(data: bytes, **options):
    """msgpack.unpackb, the garbage collector paused (_without_gc)."""
    return _without_gc(_msgpack().unpackb, data, **options)


class Database:
    """What is installed under a root.  ``get(name)`` and ``installed()`` give
    PackageRecords; ``packages`` maps names to the records as stored (a map, or a
    PackageRecord once asked for); ``files(name)`` loads one package's owned paths."""

    def __init__(self, root: Root):
        self.root = root
        self.txid = ""
        self.packages: dict[str, dict] = {}
        self.pending: list[dict] = []
        self._files: dict[str, dict] = {}

    @classmethod
    def of(cls, packages: dict, files: dict) -> "Database":
        """A database held in memory: ``packages`` ({name: record}) and their file lists
        (``files``: {name: {path: FileEntry}}), e.g. to compute a plan without a root."""
        db = cls(None)
        db.packages, db._files, db.token = packages, dict(files), None
        return db

    def exists(self) -> bool:
        """Whether the root has a database: var/lib/pm/status exists."""
        return self.root.lstat(DB_DIR + "/status") is not None

    def load(self) -> "Database":
        """Read the committed status into this Database (nothing when there is none yet) and record
        its snapshot token; returns self.  InvalidInput when the status is damaged."""
        self.token = self.snapshot_token()
        data = self.root.read(DB_DIR + "/status")
        if data is None:
            return self
        try:
            status = _unpackb(data, raw=False, strict_map_key=False)
            if not isinstance(status, dict) or status.get("format") != DB_FORMAT:
                raise ValueError("unknown format")
            self.txid = status["txid"]
            self.pending = status.get("pending", [])
            _check_status(status["packages"], self.pending)
            self.packages = status["packages"]
        except (ValueError, KeyError, TypeError) as e:
            raise InvalidInput("the database %s/status is damaged (%s)" %
                               (self.root.host_path(DB_DIR), e)) from None
        return self

    def status_bytes(self, txid: str, packages: dict, pending: list) -> bytes:
        """The bytes of a status file (msgpack) holding ``txid``, ``packages``
        and ``pending`` scripts."""
        return _msgpack().packb({"format": DB_FORMAT, "txid": txid, "packages": packages,
                                 "pending": pending}, use_bin_type=True)

    def get(self, name: str) -> PackageRecord | None:
        """The record of the package ``name``, whatever its state (installed or
        config-remaining), or None.  Records become PackageRecords when first asked for
        (``packages`` holds the status's maps as read: listing 10,000 packages copies none)."""
        record = self.packages.get(name)
        if record is None or type(record) is PackageRecord:
            return record
        record = self.packages[name] = PackageRecord(record)
        return record

    def installed(self) -> dict:
        """``{name: PackageRecord}`` of the packages in state installed
        (config-remaining ones left out)."""
        names = [name for name, record in self.packages.items() if record["state"] == STATE_INSTALLED]
        return {name: self.get(name) for name in names}

    def files(self, name: str) -> dict:
        """``{path: FileEntry}`` of a package in the database."""
        cached = self._files.get(name)
        if cached is not None:
            return cached
        data = self.root.read(FILES_DIR + "/" + self.get(name).files)
        if data is None:
            if self.snapshot_token() != getattr(self, "token", None):
                raise StateChanged("the database changed while it was read")
            raise InvalidInput("the database is damaged: the file list of %s is missing" % name)
        try:
            rows = _unpackb(data, raw=False)
            entries = {row[0]: FileEntry(*row[1:]) for row in rows}
            for path, entry in entries.items():
                if not valid_root_path(path) or path == "/":
                    raise ValueError("it names %r, which is not a path inside the root" % (path,))
                if entry.kind not in ("f", "d", "l") or not isinstance(entry.mode, int):
                    raise ValueError("%s has no valid kind and mode" % path)
        except (ValueError, TypeError, IndexError) as e:
            raise InvalidInput("the database is damaged: the file list of %s (%s)" % (name, e)) from None
        self._files[name] = entries
        return entries

    def snapshot_token(self) -> tuple:
        """What changes whenever a writer takes the lock, journals, commits or finishes:
        a reader that found its view inconsistent compares it with the one it started
        with (SPEC §9: a reader sees one committed state)."""
        token = []
        for path in (DB_DIR, DB_DIR + "/status", DB_DIR + "/lock", JOURNAL):
            try:
                st = self.root.lstat(path)
            except (UnsafePath, OSError):
                st = None
            token.append(None if st is None else (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size))
        return tuple(token)

    @staticmethod
    def files_bytes(entries: dict) -> bytes:
        """The bytes of a file list (msgpack): the packed rows of ``entries``
        (``{path: FileEntry}``), by path."""
        return _msgpack().packb([entries[p].packed(p) for p in sorted(entries)], use_bin_type=True)


# =============================================================================
# 8. Transactions: lock, journal, staging, commit, recovery
# =============================================================================
#
# One command is one transaction.  Its steps, and what a kill after each leaves:
#   journal written (fsync) .... rollback deletes the journal
#   staging: directories made, files written under reserved names beside their targets
#                         ....... rollback deletes them
#   apply: each replaced file hard-linked to a backup name, each staged file renamed
#          over its target, each removed file renamed to a backup name
#                         ....... rollback renames the backups back
#   filesystem synced once, then the database status renamed into place: the commit
#                         ....... recovery now rolls forward
#   cleanup: backups and emptied directories removed, journal removed.
# Any pm command first recovers an interrupted transaction (SPEC §9).

def _flock_holders(st) -> list | None:
    """Pids holding a flock on the file of ``st`` according to /proc/locks, or None
    where that file cannot be read."""
    wanted = "%02x:%02x:%d" % (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    try:
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    pids = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted and fields[4].isdigit():
            pids.append(int(fields[4]))
    return pids


class RootLock:
    """The root's write lock: flock on var/lib/pm/lock, released by the kernel when the
    holder dies, so it never goes stale.  The holder writes its pid and command in it."""

    def __init__(self, root: Root):
        self.root = root
        self.fd = None

    def acquire(self, wait: float, command: str) -> None:
        """Take the lock, creating var/lib/pm and its lock file when missing, waiting up to
        ``wait`` seconds; LockHeld naming the holder after that, UnsafePath or InvalidInput
        when the lock is not a regular file.  The lock file then holds this pid and ``command``
        (not on a full disk)."""
        import fcntl
        import time
        dir_fd = self.root.dir_fd(DB_DIR, 0o755)
        fd = self._open(dir_fd, os.O_RDWR | os.O_CREAT)
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
                    os.close(fd)
                    raise LockHeld("%s is locked by %s; try again or use --wait SECONDS"
                                   % (self.root.path, self.who(holder)))
                time.sleep(0.02)
        os.ftruncate(fd, 0)
        try:    # who holds it is for people only: a full disk must not stop an uninstall
            os.pwrite(fd, ("%d %s\n" % (os.getpid(), command)).encode("utf-8", "replace"), 0)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                os.close(fd)
                raise
        self.fd = fd

    def _open(self, dir_fd: int, flags: int) -> int:
        """Open the lock file: a regular file, never through a symbolic link, never
        blocking on a FIFO; anything else is InvalidInput naming it."""
        where = self.root.host_path(DB_DIR + "/lock")
        try:
            fd = os.open("lock", flags | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0),
                         0o664, dir_fd=dir_fd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UnsafePath("%s is a symbolic link; pm does not lock through it" % where) from None
            if e.errno == errno.EISDIR:
                raise InvalidInput("%s is a directory, not pm's lock file" % where) from None
            if e.errno in (errno.ENXIO, errno.EOPNOTSUPP):
                raise InvalidInput("%s is a socket, not pm's lock file" % where) from None
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                raise
            raise PmError("cannot open the lock %s: %s" % (where, e.strerror)) from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise InvalidInput("%s is %s, not pm's lock file" % (where, file_kind(st.st_mode)))
        return fd

    def try_acquire(self) -> bool:
        """Take the lock only if it is free and already exists (readers, recovery)."""
        import fcntl
        try:
            fd = self._open(self.root.dir_fd(DB_DIR), os.O_RDWR)
        except (OSError, PmError):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def holder(self) -> str | None:
        """``pid command`` of the process holding the lock, or None when it is free.
        On Linux this reads /proc/locks, so that asking never takes the lock itself
        (a probe would make a writer that does not wait fail for nothing)."""
        try:
            dir_fd = self.root.dir_fd(DB_DIR)
            st = os.stat("lock", dir_fd=dir_fd, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                return None
            fd = os.open("lock", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0),
                         dir_fd=dir_fd)
        except (OSError, PmError):
            return None
        try:
            holders = _flock_holders(st)
            if holders is None:                  # no /proc/locks: probe with a shared lock
                import fcntl
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    return None
                except OSError:
                    holders = []
            elif not holders:
                return None
            text = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
            return text or ("%d unknown" % holders[0] if holders else "unknown")
        finally:
            os.close(fd)

    @staticmethod
    def who(holder: str) -> str:
        """The holder text (``pid command``) for people."""
        pid, _, what = holder.partition(" ")
        return "pid %s (%s)" % (pid, what or "unknown command") if pid.isdigit() else "another pm process"

    def release(self) -> None:
        """Empty the lock file and release the lock; nothing when it is not held."""
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None


def _hold_interrupts():
    """Block SIGINT and SIGTERM (they stay pending) while a change is undone; returns
    what _release_interrupts restores."""
    import signal
    try:
        return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    except (AttributeError, ValueError, OSError):       # not the main thread, no pthreads
        return None


def _release_interrupts(held) -> None:
    if held is not None:
        import signal
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


class Op:
    """One operation of a transaction, by name: its ``kind``, the ``path`` it changes,
    and the fields its kind has (LAYOUT): ``staged`` (the reserved name a new file or
    directory is made under), ``backup`` (the reserved name the old one is kept under
    until the commit), ``mode`` and ``old_mode``.  The journal holds each as the list
    ``[kind, path, *fields]`` (``as_list``); recovery reads it back with ``from_list``."""

    LAYOUT = {
        "mkdir": ("mode",),
        "put": ("staged", "backup"),
        "remove": ("backup",),
        "rmdir": (),
        "aside": ("backup",),
        "replace-dir": ("backup",),
        "delete": (),
        "keep": (),
        "newdir": ("staged", "mode"),
        "put-in": ("staged",),
        "chmod": ("mode", "old_mode"),
    }
    __slots__ = ("kind", "path", "staged", "backup", "mode", "old_mode")

    def __init__(self, kind: str, path: str, staged: str | None = None, backup: str | None = None,
                 mode: int | None = None, old_mode: int | None = None):
        self.kind, self.path, self.staged, self.backup, self.mode, self.old_mode = \
            kind, path, staged, backup, mode, old_mode

    @classmethod
    def from_list(cls, row: list) -> "Op":
        """The operation a journal row names; ValueError for an unknown kind or a row
        of the wrong length (the caller checks the paths)."""
        fields = cls.LAYOUT.get(row[0]) if isinstance(row[0], str) else None
        if fields is None:
            raise ValueError("an unknown operation %r" % (row[0],))
        if len(row) != 2 + len(fields):
            raise ValueError("a malformed %s operation" % row[0])
        return cls(row[0], row[1], **dict(zip(fields, row[2:])))

    _rows: dict = {}        # kind -> attrgetter of its row's fields, made on first use

    def as_list(self) -> list:
        """The journal's (and --json's) form: ``[kind, path, *fields]``."""
        row = self._rows.get(self.kind)
        if row is None:
            from operator import attrgetter
            row = self._rows[self.kind] = attrgetter("kind", "path", *self.LAYOUT[self.kind])
        return list(row(self))

    def __repr__(self) -> str:
        return "Op%r" % (tuple(self.as_list()),)


class Plan:
    """What one command changes, as a value: the operations a Transaction journals and
    executes, in order, exactly as they are here (and as a dry run shows them), with the
    data they need (the members and bytes to write, the database's new file lists).
    The planner (section 10) fills it in; ``finalize()`` gives the operations their last
    form.  The operations (Op; here as the journal lists them):

    ``["mkdir", path, mode]`` · ``["put", path, staged, backup|None]`` (a staged file
    or symlink renamed over ``path``; ``backup`` keeps the old one until commit) ·
    ``["remove", path, backup]`` · ``["rmdir", path]`` (after commit, when empty) ·
    ``["aside", path, backup]`` (a file or link renamed away while staging, so that a
    directory can be made there) · ``["replace-dir", path, backup]`` (a directory, all of
    whose content this command removes, renamed away before a file takes its place;
    removed with its content after commit) · ``["delete", path]`` (a file or link
    unlinked after the commit: one system call per removed file, as dpkg removes; a
    kill after the commit is rolled forward) · ``["keep", path]`` (a file an upgrade
    leaves as it is: its packaged sha256, size and mode are those already installed and
    on disk; nothing is done to it, before or after the commit).

    Removals are ``delete`` unless the transaction also sets paths aside or replaces a
    directory (a path type change): then they are ``remove``, renamed away before the
    commit, so that nothing after the commit unlinks a path another operation reused.

    A new directory whose parent exists is staged whole: ``["newdir", path, staged,
    mode]`` makes it under a reserved name, the directories and files below it are made
    there under their own names (``["put-in", path, staged]``: no rename per file), and
    one rename puts the tree in place before the commit.  Rolling back removes exactly
    what the journal names, wherever it is (the staged tree is pm's own, reserved name).
    """

    def __init__(self):
        self.txid = os.urandom(6).hex()
        self.ops: list[Op] = []
        self.seq = 0
        self.changes: list = []         # one Change per package added, replaced or removed (section 10)
        self.packages: dict = {}        # the database's records after the change
        self.relabel: dict = {}         # installed packages left as they are: name -> new reason
        self.downloads: dict = {}       # package name -> bytes fetched for it
        self.notes: list = []           # ("say" | "warn", message) for the person at the terminal
        self.member_puts: dict = {}     # Package -> {member path: (staged name, target path)}
        self.byte_puts: list = []       # (staged name, bytes, mode)
        self.file_lists: dict = {}      # file list name -> bytes
        self.obsolete_lists: list = []  # file list names to delete after commit

    def say(self, message: str) -> None:
        """A remark for the person running the command (printed before anything is done)."""
        self.notes.append(("say", message))

    def warn(self, message: str) -> None:
        """A warning, printed (and in the JSON document's warnings) before anything is done."""
        self.notes.append(("warn", message))

    @property
    def empty(self) -> bool:
        """True when the plan changes nothing: no package and no install reason."""
        return not self.changes and not self.relabel

    def _staged(self, path: str, suffix: str = "") -> str:
        self.seq += 1
        return "%s/%s%s.%d%s" % (parent_of(path).rstrip("/"), STAGING_PREFIX, self.txid, self.seq, suffix)

    def mkdir(self, path: str, mode: int) -> None:
        """Make the directory ``path`` with ``mode`` while staging (``mkdir``; finalize() may stage
        it whole as a ``newdir``)."""
        self.ops.append(Op("mkdir", path, mode=mode))

    def put_member(self, path: str, package: Package, member: Member, exists: bool,
                   entry: FileEntry | None = None) -> None:
        """Install ``member`` of ``package`` at ``path``; staging fills in the sha256
        and size of ``entry``."""
        staged = self._staged(path)
        self.ops.append(Op("put", path, staged, self._staged(path, ".old") if exists else None))
        self.member_puts.setdefault(package, {})[member.path] = (staged, entry)

    def put_bytes(self, path: str, data: bytes, mode: int, exists: bool) -> None:
        """Write ``data`` with ``mode`` at ``path`` (a kept script, a saved config file): staged
        under a reserved name and renamed over ``path``; with ``exists``, the old file is kept under
        a backup name until the commit."""
        staged = self._staged(path)
        self.ops.append(Op("put", path, staged, self._staged(path, ".old") if exists else None))
        self.byte_puts.append((staged, data, mode))

    def remove(self, path: str) -> None:
        """Remove the file or symbolic link ``path``: unlinked after the commit (``delete``), or
        renamed away before it when finalize() finds a path type change (``remove``)."""
        self.ops.append(Op("delete", path))

    def keep(self, path: str) -> None:
        """Leave the file ``path`` as it is (``keep``): an upgrade's unchanged
        file, nothing done to it."""
        self.ops.append(Op("keep", path))

    def finalize(self) -> None:
        """The operations in their last form, once everything is planned: with a path
        type change in the plan, removals happen before the commit (renamed away) and no
        directory is staged whole (see the class docstring)."""
        if any(op.kind in ("aside", "replace-dir") for op in self.ops):
            self.ops = [Op("remove", op.path, backup=self._staged(op.path, ".old")) if op.kind == "delete"
                        else op for op in self.ops]
        else:
            self._stage_new_dirs_whole()

    def journal(self) -> dict:
        """What the journal records of this plan (recovery reads it back)."""
        return {"txid": self.txid, "ops": list(self.ops), "lists": sorted(self.file_lists),
                "obsolete": self.obsolete_lists}

    def puts_of(self, package) -> list:
        """The (member, target) pairs the plan writes from ``package``'s files."""
        wanted = self.member_puts.get(package, {})
        return [(m, wanted[m.path]) for m in package.members if m.path in wanted and m.kind == "f"]

    def _stage_new_dirs_whole(self) -> None:
        """Turn each new directory whose parent exists (outside pm's own directory) into
        a ``newdir`` staged whole, with what goes below it made inside the staged tree."""
        made = {op.path for op in self.ops if op.kind == "mkdir"}
        tops = {}                    # new directory -> its staged name
        for op in self.ops:
            path = op.path + "/"
            if op.kind == "mkdir" and parent_of(op.path) not in made \
                    and not path.startswith(DB_DIR + "/") and not (DB_DIR + "/").startswith(path):
                tops[op.path] = self._staged(op.path)
        if not tops:
            return
        renamed = {}
        ops = []
        for op in self.ops:
            if op.kind == "mkdir" and op.path in tops:
                op = Op("newdir", op.path, tops[op.path], mode=op.mode)
            elif op.kind == "put" and op.backup is None:
                staged = _staged_place(op.path, tops)
                if staged != op.path:
                    renamed[op.staged] = staged
                    op = Op("put-in", op.path, staged)
            ops.append(op)
        self.ops = ops
        for wanted in self.member_puts.values():
            for path, (staged, entry) in list(wanted.items()):
                if staged in renamed:
                    wanted[path] = (renamed[staged], entry)
        self.byte_puts = [(renamed.get(staged, staged), data, mode) for staged, data, mode in self.byte_puts]

    def rmdir_later(self, path: str) -> None:
        """Remove the directory ``path`` after the commit, when it is empty
        (``rmdir``; the deepest first)."""
        self.ops.append(Op("rmdir", path))

    def chmod(self, path: str, mode: int, old_mode: int) -> None:
        """Set the existing directory ``path`` to ``mode`` when the plan is applied; a rollback
        sets ``old_mode`` again."""
        self.ops.append(Op("chmod", path, mode=mode, old_mode=old_mode))

    def set_aside(self, path: str) -> None:
        """Rename the file or symbolic link ``path`` to a backup name while staging, so
        that a directory can be made there (``aside``): removed after the commit,
        renamed back on a rollback."""
        self.ops.append(Op("aside", path, backup=self._staged(path, ".old")))

    def replace_dir(self, path: str) -> None:
        """Rename the directory ``path`` to a backup name before a file takes its place
        (``replace-dir``): removed with its content after the commit, renamed back on a rollback."""
        self.ops.append(Op("replace-dir", path, backup=self._staged(path, ".old")))

    def add_file_list(self, name: str, entries: dict) -> str:
        """Add ``entries`` (``{path: FileEntry}``) as the new file list of package ``name``, written
        while staging; returns its name in var/lib/pm/files (``NAME.TXID``)."""
        ref = "%s.%s" % (name, self.txid)
        self.file_lists[ref] = entries
        return ref


class Transaction:
    """One command's change carried out: the operations of a finalized Plan journaled,
    staged, applied and committed (the database written last, atomically), or, on any
    error before the commit, rolled back; recovery finishes or undoes it after a kill."""

    def __init__(self, root: Root, db: Database, out: Output, plan: Plan, sync: bool = True):
        self.root, self.db, self.out, self.plan, self.sync = root, db, out, plan, sync
        self.doing = "the change"       # what the transaction is doing, for an error message

    # -- running --------------------------------------------------------------------

    def run(self, packages: dict, pending: list, progress: Progress | None = None) -> None:
        """Stage, apply and commit, ending with the database ``packages`` and
        ``pending`` scripts.  On an error before the commit everything is rolled back
        and the error raised; after it, the change stands and the error says so."""
        for attempt in (1, 2):
            try:
                self._write_journal()
                self._stage(progress)
                if progress:
                    applied = sum(1 for op in self.plan.ops if op.kind in ("put", "put-in", "remove"))
                    progress.phase("applying", applied, "files")
                self._apply(progress)
                if progress:
                    progress.phase("committing")
                self._commit(packages, pending)
                break
            except BaseException as e:
                FAULTS.enabled = False
                undone = True
                held = _hold_interrupts()           # a second Ctrl-C waits for the undo to finish
                try:
                    settle(self.root, self._journal_dict(), self.out)
                except Exception as undo:           # the journal stays for the next command
                    undone = False
                    self.out.warn("could not finish undoing the change (%s); run pm recover"
                                  % (getattr(undo, "message", None) or getattr(undo, "strerror", None) or undo))
                finally:
                    _release_interrupts(held)
                # A full disk: a change that writes no package files (an uninstall) frees
                # space, so it may use the space pm keeps in reserve for just that.
                if undone and attempt == 1 and isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT) \
                        and not self.plan.member_puts and release_reserve(self.root):
                    self.out.detail("the disk is full; using the space pm keeps in reserve")
                    continue
                if isinstance(e, OSError):      # name what pm was doing, not a staging name
                    raise PmError("%s failed: %s; %s" % (self.doing, e.strerror or e, "nothing was changed"
                                                        if undone else "run pm recover")) from None
                raise
        try:
            if self.sync:
                if progress:
                    progress.phase("syncing")
                fsync_dir(self.root.dir_fd(DB_DIR))
            old_files = sum(1 for op in self.plan.ops
                            if op.kind in ("remove", "delete") or (op.kind == "put" and op.backup is not None))
            if progress and old_files:
                progress.phase("removing old files", old_files, "files")
            roll_forward(self.root, self._journal_dict(), self.out, progress)
        except OSError as e:
            raise PmError("the change was committed, but finishing it failed (%s); "
                          "pm recover completes it" % (e.strerror or e)) from None
        keep_reserve(self.root)

    def _journal_dict(self) -> dict:
        return self.plan.journal()

    def _write_journal(self) -> None:
        self.doing = "writing the journal %s" % self.root.host_path(JOURNAL)
        dir_fd = self.root.dir_fd(DB_DIR, 0o755)
        journal = self._journal_dict()
        data = _msgpack().packb(dict(journal, ops=[op.as_list() for op in journal["ops"]]), use_bin_type=True)
        atomic_write(dir_fd, "journal", data, self.sync, kind="journal")

    def _stage(self, progress: Progress | None) -> None:
        root = self.root
        staged_tops = {op.path: op.staged for op in self.plan.ops if op.kind == "newdir"}
        for op in self.plan.ops:
            if op.kind == "aside":
                root.rename(op.path, op.backup)
            elif op.kind in ("mkdir", "newdir"):
                self.doing = "creating the directory %s" % root.host_path(op.path)
                root.make_dir(_staged_place(op.path, staged_tops), op.mode)
        for package, wanted in self.plan.member_puts.items():
            self.doing = "unpacking %s" % package.name
            for member, chunks in package.stream():
                target = wanted.get(member.path)
                if target is None:
                    continue
                staged, entry = target
                self.doing = "unpacking %s of %s" % (root.host_path(member.path), package.name)
                parent, name = split_path(staged)
                dir_fd = root.dir_fd(parent)
                if member.kind == "l":
                    FAULTS.step("symlink")
                    os.symlink(member.link, name, dir_fd=dir_fd)
                else:
                    digest, size = _write_new_file(dir_fd, name, member.mode,
                                                   progress.counting(chunks) if progress else chunks, member.mtime)
                    if member.digest is not None and digest != member.digest:
                        raise package.fail("%s does not match the sha256 CONTROL/%s gives for it"
                                           % (member.path, SUMS))
                    if entry is not None:
                        entry.digest, entry.size = digest, size
                root.trim()
        self.doing = "keeping package scripts in %s" % root.host_path(SCRIPTS_DIR)
        for staged, data, mode in self.plan.byte_puts:
            parent, name = split_path(staged)
            _write_new_file(self.root.dir_fd(parent), name, mode, (data,), None)
        self.doing = "writing the database's file lists in %s" % root.host_path(FILES_DIR)
        files_fd = root.dir_fd(FILES_DIR, 0o755)
        for ref, entries in self.plan.file_lists.items():
            FAULTS.step("write")
            fd = os.open(ref, _O_CREATE, 0o664, dir_fd=files_fd)
            try:
                write_all(fd, Database.files_bytes(entries))
            finally:
                os.close(fd)

    def _apply(self, progress: Progress | None = None) -> None:
        root = self.root
        self.doing = "putting the new files in place"
        for op in self.plan.ops:
            if op.kind == "put":
                if op.backup is not None:
                    _keep_backup(root, op.path, op.backup)
                root.rename(op.staged, op.path)
            elif op.kind == "remove":
                root.rename(op.path, op.backup)
            elif op.kind == "chmod":
                FAULTS.step("chmod")
                os.fchmod(root.dir_fd(op.path), op.mode)
                continue
            elif op.kind == "replace-dir":
                root.rename(op.path, op.backup)
                root.forget(op.path)
                continue
            elif op.kind == "newdir":          # the tree staged whole, in place at once
                root.rename(op.staged, op.path)
                root.forget(op.staged)
                continue
            elif op.kind != "put-in":          # (already in place with its directory)
                continue
            if progress:
                progress.step()

    def _commit(self, packages: dict, pending: list) -> None:
        root = self.root
        self.doing = "flushing the new files to disk"
        if self.sync:
            devices = {}       # a directory (by path: descriptors are not held) per filesystem
            gone = tuple(op.path + "/" for op in self.plan.ops if op.kind == "replace-dir")
            for parent in sorted({parent_of(op.path) for op in self.plan.ops
                                  if op.kind not in ("rmdir", "delete", "keep", "put-in")}) + [DB_DIR]:
                if gone and (parent + "/").startswith(gone):
                    continue                 # moved away with the directory replaced
                devices.setdefault(os.fstat(root.dir_fd(parent)).st_dev, parent)
                root.trim()
            for parent in devices.values():
                sync_filesystem(root.dir_fd(parent))
        db_fd = root.dir_fd(DB_DIR)
        data = self.db.status_bytes(self.plan.txid, packages, pending)
        self.doing = "writing the database %s" % root.host_path(DB_DIR + "/status")
        atomic_write(db_fd, "status", data, self.sync, sync_dir=False)   # the commit
        self.db.txid, self.db.packages, self.db.pending = self.plan.txid, packages, pending
        self.db._files = {}


RESERVE = "reserve"       # in DB_DIR


def keep_reserve(root: Root) -> None:
    """Make sure var/lib/pm/reserve holds RESERVE_BYTES of allocated space (quietly not,
    when the disk has no room for it now)."""
    try:
        dir_fd = root.dir_fd(DB_DIR)
        st = os.stat(RESERVE, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISREG(st.st_mode) and st.st_blocks * 512 >= RESERVE_BYTES:
            return
    except FileNotFoundError:
        pass
    except (OSError, PmError):
        return
    try:
        fd = os.open(RESERVE, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK |
                     getattr(os, "O_CLOEXEC", 0), 0o600, dir_fd=dir_fd)
    except OSError:
        return
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
        except (AttributeError, OSError) as e:
            if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
                raise
            os.lseek(fd, 0, os.SEEK_SET)       # no fallocate here: write the space
            write_all(fd, bytes(RESERVE_BYTES))
    except OSError:
        try:
            os.unlink(RESERVE, dir_fd=dir_fd)
        except OSError:
            pass
    finally:
        os.close(fd)


def release_reserve(root: Root) -> bool:
    """Free the reserved space for a change that frees space; True when there was some."""
    try:
        st = os.stat(RESERVE, dir_fd=root.dir_fd(DB_DIR), follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode) or not st.st_blocks:
            return False
        os.unlink(RESERVE, dir_fd=root.dir_fd(DB_DIR))
        return True
    except (OSError, PmError):
        return False


def _write_new_file(dir_fd: int, name: str, mode: int, chunks, mtime) -> tuple:
    """Create ``name`` (which must not exist) with the data, mode and mtime given;
    return (sha256, size)."""
    FAULTS.step("write")
    # Created with its final mode when the umask leaves that mode whole (no fchmod call
    # per file); else private first, and set exactly once written.
    direct = mode == mode & 0o777 & ~process_umask()
    fd = os.open(name, _O_CREATE, mode if direct else 0o600, dir_fd=dir_fd)
    try:
        h = new_sha256()
        size = 0
        for chunk in chunks:
            h.update(chunk)
            write_all(fd, chunk)
            size += len(chunk)
        if not direct:
            os.fchmod(fd, mode)
        if mtime is not None:
            os.utime(fd, (mtime, mtime))
    finally:
        os.close(fd)
    return h.digest(), size


def _keep_backup(root: Root, path: str, backup: str) -> None:
    """Keep the file at ``path`` under ``backup`` until commit: a hard link, so that the
    path is never missing; a rename where the filesystem has no hard links."""
    parent_fd = root.dir_fd(parent_of(path))
    try:
        FAULTS.step("link")
        os.link(split_path(path)[1], split_path(backup)[1], src_dir_fd=parent_fd,
                dst_dir_fd=root.dir_fd(parent_of(backup)), follow_symlinks=False)
    except FileNotFoundError:
        pass                      # nothing to keep: the path vanished since planning
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
            raise
        root.rename(path, backup)


def _quietly(action, *args):
    """Run a recovery step; a path that has gone (or became unsafe, or is a directory
    again) is not an error."""
    try:
        return action(*args)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, UnsafePath):
        return None


def _remove_step(root: Root, kind: str, path: str):
    """Do one cleanup step, ``("unlink" | "rmdir", path)``; a path already gone is not
    an error (what root.unlink/rmdir answer: whether it removed something)."""
    return _quietly(root.rmdir if kind == "rmdir" else root.unlink, path)


def _tree_removal(root: Root, path: str) -> list:
    """The steps, ``("unlink" | "rmdir", path)`` children first, that remove the
    directory ``path`` and everything under it (a directory replaced by a file, after
    commit); none when it has gone."""
    try:
        children = root.listdir(path)
    except (FileNotFoundError, NotADirectoryError, UnsafePath):
        return []
    steps = []
    for child in children:
        child_path = path.rstrip("/") + "/" + child
        st = _quietly(root.lstat, child_path)
        if st is not None and stat.S_ISDIR(st.st_mode):
            steps += _tree_removal(root, child_path)
        else:
            steps.append(("unlink", child_path))
    steps.append(("rmdir", path))
    return steps


def _staged_place(path: str, staged_tops: dict) -> str:
    """Where ``path`` is made while its new top directory is staged whole (``staged_tops``:
    new directory -> staged name); ``path`` itself when no such directory holds it."""
    for ancestor in _ancestors(path):
        if ancestor in staged_tops:
            return staged_tops[ancestor] + path[len(ancestor):]
    return staged_tops.get(path, path)


def roll_back(root: Root, journal: dict, out: Output) -> None:
    """Undo an uncommitted transaction, whatever step it reached (idempotent)."""
    for op in reversed(journal["ops"]):
        kind, path, backup = op.kind, op.path, op.backup
        if kind == "put":
            _quietly(root.unlink, op.staged)
            if backup is not None:
                if root_exists(root, backup):
                    _quietly(root.rename, backup, path)
                    _quietly(root.unlink, backup)   # rename between two links of one file is a no-op
            else:
                _quietly(root.unlink, path)
        elif kind == "remove":
            if root_exists(root, backup):
                _quietly(root.rename, backup, path)
        elif kind == "put-in":
            _quietly(root.unlink, op.staged)
            _quietly(root.unlink, path)
        elif kind == "mkdir":
            _quietly(root.rmdir, path)
        elif kind == "newdir":          # staged still: all of it is pm's; in place: emptied above
            if root_exists(root, op.staged):
                for step, below in _tree_removal(root, op.staged):
                    _remove_step(root, step, below)
            _quietly(root.rmdir, path)
        elif kind == "chmod":
            _quietly(lambda: os.fchmod(root.dir_fd(path), op.old_mode))
        elif kind in ("aside", "replace-dir"):
            if root_exists(root, backup):
                if kind == "replace-dir":
                    root.forget(path)
                _quietly(root.rename, backup, path)
    for ref in journal["lists"]:
        _quietly(root.unlink, FILES_DIR + "/" + ref)
    for leftover in ("/status.tmp", "/journal.tmp", "/journal"):
        _quietly(root.unlink, DB_DIR + leftover)
    out.detail("rolled back transaction %s" % journal["txid"])


def roll_forward(root: Root, journal: dict, out: Output, progress: Progress | None = None) -> None:
    """Finish a committed transaction: drop backups, remove emptied directories and
    obsolete file lists, then the journal (idempotent).  A cleanup step the system
    refuses (a mount point: EBUSY; an immutable directory: EPERM) is recorded as a
    leftover, which ``pm recover`` retries; it never keeps the journal."""
    leftovers = []

    def clean(kind, path):
        try:
            done = _remove_step(root, kind, path)
            if kind == "rmdir" and done is False and any(p.startswith(path + "/") for _, p in leftovers):
                leftovers.append([kind, path])   # not empty only because of a leftover below it
        except OSError as e:
            leftovers.append([kind, path])
            out.warn("could not remove %s (%s); recorded as a leftover, pm recover tries again"
                     % (root.host_path(path), e.strerror or e))

    for op in journal["ops"]:           # staged names were all renamed before the commit
        if op.kind == "put" and op.backup is not None:
            clean("unlink", op.backup)
        elif op.kind in ("remove", "aside"):
            clean("unlink", op.backup)
        elif op.kind == "delete":
            clean("unlink", op.path)
        elif op.kind == "replace-dir":     # each step that fails is a leftover of its own
            for kind, path in _tree_removal(root, op.backup):
                clean(kind, path)
        else:
            continue
        if progress:
            progress.step()
    for op in sorted((op for op in journal["ops"] if op.kind == "rmdir"), key=lambda o: o.path, reverse=True):
        clean("rmdir", op.path)
    for ref in journal["obsolete"]:
        clean("unlink", FILES_DIR + "/" + ref)
    if leftovers:
        write_leftovers(root, read_leftovers(root, quiet=True) + leftovers)
    _quietly(root.unlink, JOURNAL)


LEFTOVERS = DB_DIR + "/leftovers"


def read_leftovers(root: Root, quiet: bool = False) -> list:
    """``[[kind, path], ...]``: cleanup steps of committed transactions that could not be
    done (``unlink`` or ``rmdir``); InvalidInput when the record is damaged (or [] with
    ``quiet``)."""
    try:
        data = root.read(LEFTOVERS)
        if data is None:
            return []
        rows = _msgpack().unpackb(data, raw=False)
        if not isinstance(rows, list) or not all(
                isinstance(row, list) and len(row) == 2 and row[0] in ("unlink", "rmdir")
                and valid_root_path(row[1]) and row[1] != "/" for row in rows):
            raise ValueError("not a list of cleanup steps inside the root")
        return rows
    except (ValueError, TypeError, InvalidInput, FileNotFoundError, NotADirectoryError) as e:
        if quiet:
            return []
        if isinstance(e, InvalidInput):
            raise
        raise InvalidInput("the leftover record %s is damaged (%s)" % (root.host_path(LEFTOVERS), e)) from None


def write_leftovers(root: Root, rows: list) -> None:
    """Record ``rows`` (cleanup steps, duplicates dropped) in var/lib/pm/leftovers, or remove the
    record when there are none; an OSError is ignored (the cleanup stays undone either way)."""
    unique = []
    for row in rows:
        if row not in unique:
            unique.append(row)
    try:
        if unique:
            atomic_write(root.dir_fd(DB_DIR), "leftovers", _msgpack().packb(unique), True, kind="db")
        else:
            _quietly(root.unlink, LEFTOVERS)
    except OSError:
        pass                     # the cleanup stays undone either way; nothing depends on it


def retry_leftovers(root: Root, out: Output) -> list:
    """Try the recorded leftover cleanup steps again; returns those still undone."""
    rows = read_leftovers(root)
    still = []
    for kind, path in sorted(rows, key=lambda row: row[1].count("/"), reverse=True):
        try:
            _remove_step(root, kind, path)
            out.detail("removed the leftover %s" % root.host_path(path))
        except OSError as e:
            still.append([kind, path])
            out.warn("still cannot remove %s (%s)" % (root.host_path(path), e.strerror or e))
    if rows:
        write_leftovers(root, still)
    return still


def settle(root: Root, journal: dict, out: Output) -> str:
    """Roll a transaction forward when the database on disk holds its commit, back
    otherwise (the database rename is the commit point)."""
    if Database(root).load().txid == journal["txid"]:
        roll_forward(root, journal, out)
        return "rolled forward"
    roll_back(root, journal, out)
    return "rolled back"


def root_exists(root: Root, path: str) -> bool:
    """Whether ``path`` exists in the root, a symbolic link counting as it is; False too when a
    directory on the way is a symbolic link or not a directory."""
    try:
        return root.lstat(path) is not None
    except UnsafePath:
        return False


def read_journal(root: Root) -> dict | None:
    """The journal of an interrupted transaction, or None; InvalidInput when damaged."""
    data = root.read(JOURNAL)
    if data is None:
        return None
    try:
        journal = _msgpack().unpackb(data, raw=False)
        journal["txid"], journal["ops"], journal["lists"], journal["obsolete"]
        _check_journal(journal)
    except (ValueError, TypeError, KeyError) as e:
        raise InvalidInput("the journal %s is damaged (%s)" % (root.host_path(JOURNAL), e)) from None
    return journal


def _check_journal(journal) -> None:
    """Refuse a journal naming any path outside the root, or a staged or backup name
    that is not one of pm's reserved names (recovery deletes and renames them); its
    operations become Ops."""
    if not isinstance(journal["txid"], str) or not isinstance(journal["ops"], list):
        raise ValueError("no transaction id or operations")
    staged_tops: dict = {}      # new directories staged whole, as the journal names them
    ops = []
    for row in journal["ops"]:
        if not isinstance(row, list) or not row:
            raise ValueError("a malformed operation")
        op = Op.from_list(row)
        if any(getattr(op, name) is None for name in Op.LAYOUT[op.kind] if (op.kind, name) != ("put", "backup")):
            raise ValueError("a %s operation missing a field" % op.kind)
        if not all(isinstance(m, int) and 0 <= m <= 0o7777 for m in (op.mode, op.old_mode) if m is not None):
            raise ValueError("a %s operation with a bad mode" % op.kind)
        reserved = [n for n in (op.staged, op.backup) if n is not None]
        paths = [op.path] + reserved
        if op.kind == "newdir":
            staged_tops[op.path] = op.staged
        elif op.kind == "put-in":
            reserved = []          # made inside a directory staged whole, under its own name
            if op.staged != _staged_place(op.path, staged_tops) or op.staged == op.path:
                raise ValueError("%r is not a name pm stages under" % (op.staged,))
        for path in paths:
            if not valid_root_path(path) or path == "/":
                raise ValueError("it names %r, which is not a path inside the root" % (path,))
        for path in reserved:
            if not split_path(path)[1].startswith(STAGING_PREFIX) or parent_of(path) != parent_of(op.path):
                raise ValueError("%r is not a name pm stages under" % (path,))
        ops.append(op)
    for ref in list(journal["lists"]) + list(journal["obsolete"]):
        if not valid_state_name(ref):
            raise ValueError("it names a file list %r" % (ref,))
    journal["ops"] = ops


def recover(root: Root, out: Output) -> str | None:
    """Finish or undo an interrupted transaction; returns what was done, or None."""
    try:
        root.dir_fd(DB_DIR)
    except (FileNotFoundError, NotADirectoryError):
        return None
    for debris in ("journal.tmp", "status.tmp"):
        st = root.lstat(DB_DIR + "/" + debris)
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise InvalidInput("%s is a directory where pm keeps a temporary file of its own"
                               % root.host_path(DB_DIR + "/" + debris))
        _quietly(root.unlink, DB_DIR + "/" + debris)
    journal = read_journal(root)
    if journal is None:
        return None
    done = settle(root, journal, out)
    out.say("pm: %s an interrupted transaction" % ("finished" if done == "rolled forward" else "undid"))
    return done


# =============================================================================
# 9. Scripts
# =============================================================================

INSTALL_SCRIPTS = ("api-pre-install", "api-post-install")
UNINSTALL_SCRIPTS = ("api-pre-uninstall", "api-post-uninstall")
OPM_SCRIPTS = ("api-pre-configure", "api-post-configure", "api-post-image",
               "api-post-clients", "api-post-deploy")
KNOWN_SCRIPTS = INSTALL_SCRIPTS + UNINSTALL_SCRIPTS + OPM_SCRIPTS


def describe_exit(returncode: int) -> str:
    """How a child process ended, for a message (subprocess's negative codes are signals)."""
    return "exit %d" % returncode if returncode >= 0 else "killed by signal %d" % -returncode


# Settings of this run for every script (section 17 sets them from --script-timeout or pm.conf).
script_settings = {"timeout": SCRIPT_TIMEOUT}


def _kill_group(child) -> None:
    """Kill a script's process group (everything it started) and reap the script."""
    import signal
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except OSError:
        pass
    child.wait()


def run_script(root_path: str, content: bytes, script: str, package: str, version: str,
               old_version: str, action: str, out: Output) -> str | None:
    """Run one package script with the root as working directory and the PM_*
    environment of SPEC §8.5; return None on success, else a one-line error.  The
    script runs from a private copy outside the root; every line it prints (stdout and
    stderr) goes to pm's stderr prefixed with ``PACKAGE SCRIPT:``, so that pm's own stdout
    stays a clean result and a reader can tell whose line it is."""
    import shutil
    import subprocess
    import tempfile
    env = dict(os.environ, PM_ROOT=root_path, PM_PACKAGE=package, PM_VERSION=version,
               PM_OLD_VERSION=old_version or "", PM_ACTION=action)
    for name in ("PM_FAULT", "PM_FAULT_COUNT"):
        env.pop(name, None)
    workdir = tempfile.mkdtemp(prefix="pm-script-")
    try:
        path = os.path.join(workdir, script)
        with open(path, "wb") as f:
            f.write(content)
        os.chmod(path, 0o700)
        command = [path] if content.startswith(b"#!") else ["/bin/sh", path]
        out.detail("running %s of %s" % (script, package))
        sys.stdout.flush()
        timeout = script_settings["timeout"]
        try:    # its own process group, so that a timeout ends whatever it started
            child = subprocess.Popen(command, cwd=root_path, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as e:
            return "%s of %s could not run: %s" % (script, package, e.strerror)
        with child:
            try:
                finished = _relay_script_output(child, "%s %s: " % (package, script),
                                                timeout if timeout > 0 else None)
            except BaseException:
                _kill_group(child)
                raise
            if not finished:
                _kill_group(child)
                return "%s of %s did not finish within %g seconds and was killed (see --script-timeout)" % (
                    script, package, timeout)
            returncode = child.wait()
        if returncode != 0:
            return "%s of %s failed (%s)" % (script, package, describe_exit(returncode))
        return None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _relay_script_output(child, prefix: str, timeout: float | None) -> bool:
    """Copy a script's output to stderr line by line, each line prefixed (control
    characters but tab shown as ``?``: a script's bytes must not drive the terminal),
    until the script has ended and its output is drained; False when ``timeout``
    seconds passed first.  What the script left running in the background may hold the
    pipe open: once the script itself has ended, pm stops waiting for it."""
    import select
    import time
    deadline = None if timeout is None else time.monotonic() + timeout
    fd, pending = child.stdout.fileno(), b""

    def emit(raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").rstrip("\r")
        if has_control_chars(text.replace("\t", " ")):
            text = "".join("?" if has_control_chars(c) and c != "\t" else c for c in text)
        sys.stderr.write(prefix + text + "\n")
        sys.stderr.flush()

    while True:
        wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
        if wait <= 0:
            return False
        ready = select.select([fd], [], [], wait)[0]
        chunk = os.read(fd, 65536) if ready else None
        if chunk:
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                emit(line)
            while len(pending) >= MAX_SCRIPT_LINE:
                emit(pending[:MAX_SCRIPT_LINE])
                pending = pending[MAX_SCRIPT_LINE:]
        elif chunk == b"" or child.poll() is not None:
            if chunk is None and select.select([fd], [], [], 0)[0]:
                continue                # more output arrived as the script ended
            if pending:
                emit(pending)
            return True


def run_pending_scripts(root: Root, db: Database, out: Output, sync: bool,
                        txid: str | None = None) -> list:
    """Run the post-scripts the database says are pending — those of transaction
    ``txid`` after its commit, or all of them for ``pm recover`` — keeping failures
    recorded; return their messages."""
    failures, still_pending = [], []
    for entry in db.pending:
        if txid is not None and entry["txid"] != txid:
            still_pending.append(entry)
            continue
        error = run_script(root.path, entry["content"], entry["script"], entry["package"],
                           entry["version"], entry["old_version"], entry["action"], out)
        if error:
            failures.append(error)
            still_pending.append(dict(entry, error=error))
    if still_pending != db.pending:
        db.pending = still_pending
        try:
            atomic_write(root.dir_fd(DB_DIR), "status",
                         db.status_bytes(db.txid, db.packages, db.pending), sync)
        except OSError as e:
            raise PmError("recording the scripts' results in the database %s failed: %s"
                          % (root.host_path(DB_DIR + "/status"), e.strerror or e)) from None
    return failures


# =============================================================================
# 10. Planning: install and uninstall as a Plan value
# =============================================================================
#
# source -> plan -> destination: a plan is computed from the checked packages, the
# database and the tree under the root, without changing anything; a dry run prints it,
# a real run hands its operations to a Transaction.

SAVED_SUFFIX = ".pm-save"   # an edit of a file that stopped being a config file, kept


class Options:
    """How one install, upgrade, uninstall or autoremove may change the root: the
    command line's choices, by name.  A dataclass written out by hand (importing
    ``dataclasses`` costs more than pm's whole start-up)."""

    FIELDS = {
        "dry_run": False,              # plan and print; change nothing
        "allow_same_version": False,   # reinstall the same version, or downgrade
        "no_deps": False,              # install only what is named; dependencies not checked
        "force_overwrite": False,      # take over files owned by other packages or by none
        "force_architecture": False,   # install packages built for another architecture
        "pre": False,                  # let prereleases satisfy requirements
        "allow_setuid": False,         # accept setuid/setgid members
        "no_scripts": False,           # run no package scripts
        "purge": False,                # uninstall config files too
        "recursive": False,            # uninstall the packages needing the ones named too
        "force_essential": False,      # uninstall an essential package
    }
    __slots__ = tuple(FIELDS)

    def __init__(self, **given):
        unknown = sorted(set(given) - set(self.FIELDS))
        if unknown:
            raise TypeError("Options has no field %s" % ", ".join(unknown))
        for name, default in self.FIELDS.items():
            setattr(self, name, given.get(name, default))

    def __repr__(self) -> str:
        return "Options(%s)" % ", ".join("%s=%r" % (n, getattr(self, n)) for n in self.FIELDS
                                         if getattr(self, n) != self.FIELDS[n])


class TreeView:
    """The questions the planner asks of the tree under a root, and nothing else; Root
    (section 6) answers them from the disk, a test can answer them from memory.  Paths
    are absolute paths inside the root."""

    def lstat(self, path: str):
        """The lstat of ``path`` (``st_mode``, ``st_size``), or None when it is absent."""
        raise NotImplementedError

    def digest(self, path: str) -> bytes | None:
        """The sha256 of the regular file ``path``, or None when it is absent."""
        raise NotImplementedError

    def read(self, path: str) -> bytes | None:
        """The content of the regular file ``path``, or None when it is absent."""
        raise NotImplementedError

    def listdir(self, path: str) -> list:
        """The names in the directory ``path``."""
        raise NotImplementedError

    def link_leaves_root(self, path: str) -> bool:
        """True when the symbolic link ``path`` points outside the root."""
        raise NotImplementedError


class ConfigFileDecision:
    """What happens to a config file, from three sha256s: packaged before (A), on disk
    (D), packaged now (N) — SPEC §8.4."""

    WRITE = "write"                            # A=D=N, A=D≠N, or D absent
    KEEP = "keep"                              # D≠A and N=A or N=D
    KEEP_AND_WRITE_NEW = "keep-and-write-new"  # D≠A≠N≠D, or fresh install over a different file


def decide_config_file(packaged_before, on_disk, packaged_now) -> str:
    """The ConfigFileDecision for a config file from its sha256s packaged before (None: a fresh
    install), on disk (None: absent) and packaged now (SPEC §8.4)."""
    if on_disk is None:
        return ConfigFileDecision.WRITE
    if packaged_before is None:            # fresh install over an existing, unowned file
        return ConfigFileDecision.KEEP if on_disk == packaged_now else \
            ConfigFileDecision.KEEP_AND_WRITE_NEW
    if on_disk == packaged_before:
        return ConfigFileDecision.WRITE
    if packaged_now in (packaged_before, on_disk):
        return ConfigFileDecision.KEEP
    return ConfigFileDecision.KEEP_AND_WRITE_NEW


class Change:
    """What one command does to one package: ``action`` is install, upgrade, reinstall,
    downgrade, remove or purge; ``steps`` are the plan's lines ``(verb, path)``."""

    def __init__(self, name: str, action: str, package: Package | None, old: dict | None):
        self.name, self.action, self.package, self.old = name, action, package, old
        self.version = package.version.text if package else old.version
        self.old_version = old.version if old and old.installed else ""
        self.steps: list[tuple] = []
        self.gone_dirs: list[str] = []            # directories the package no longer has
        self.record: PackageRecord | None = None  # the new database record (None: deleted)
        self.entries: dict | None = None         # the new file list
        self.pre_script: str | None = None
        self.post_script: str | None = None
        self.post_content: bytes | None = None

    @property
    def script_action(self) -> str:
        """The action a package script is told (PM_ACTION): ``action``, with ``remove``
        told as ``uninstall``."""
        return "uninstall" if self.action == "remove" else self.action

    def heading(self) -> str:
        """The change for people: ``ACTION NAME VERSION``, or ``ACTION NAME OLD -> NEW`` for an
        upgrade, a downgrade, and a reinstall over an installed version."""
        if self.action in ("upgrade", "downgrade") or (self.action == "reinstall" and self.old_version):
            return "%s %s %s -> %s" % (self.action, self.name, self.old_version, self.version)
        return "%s %s %s" % (self.action, self.name, self.version)

    def as_json(self) -> dict:
        """The change in --json's ``changes``: package, action, version, old_version (None when none
        was installed), steps as ``{action, path}`` and the scripts it runs."""
        scripts = [s for s in (self.pre_script, self.post_script) if s]
        return {"package": self.name, "action": self.action, "version": self.version,
                "old_version": self.old_version or None,
                "steps": [{"action": verb, "path": path} for verb, path in self.steps],
                "scripts": scripts}


class Planner:
    """Computes the changes of one install or uninstall command from a database, the
    packages read and a view of the tree under the root (``tree``: only asked, never
    changed), and records them — operations, steps, remarks — in a Plan."""

    def __init__(self, tree: TreeView, db: Database, plan: Plan):
        self.tree, self.db, self.plan = tree, db, plan
        self.owner: dict[str, str] = {}            # owned non-directory path -> package
        self.dir_owners: dict[str, set] = {}
        for name in db.packages:
            for path, entry in db.files(name).items():
                if entry.kind == "d":
                    self.dir_owners.setdefault(path, set()).add(name)
                else:
                    self.owner[path] = name
        self.made_dirs: set = set()
        self.new_dirs: set = set()       # the directories this command creates
        self.dir_modes: set = set()      # existing directories whose mode this command changes
        self.removed: set = set()                  # paths this command removes
        self.changing: set = set()                 # packages this command installs or removes
        self.stolen: dict[str, set] = {}           # package -> paths taken by --force-overwrite
        self.dropped: dict[str, str] = {}          # non-directory path -> the changing owner dropping it
        self.needed_dirs: set = set()              # directories the packages installed need
        self.dir_replacements: list = []           # (change, member): a directory to become a file

    # -- install ----------------------------------------------------------------------

    def install(self, packages: list, reasons: dict, options: Options, architecture: str | None) -> list:
        """The changes installing ``packages`` makes, in dependency order; no-ops left
        out (and said).  Refused on downgrade, unmet dependency, conflict, a package for
        another architecture than ``architecture`` (None: any)."""
        allow_same, force = options.allow_same_version, options.force_overwrite
        changes, names = [], set()
        for package in packages:
            if package.name in names:
                raise Refused("package %s is given twice" % package.name)
            names.add(package.name)
            change = self._install_action(package, allow_same)
            if change:
                changes.append(change)
        if not changes:
            return []
        if architecture is not None:
            for change in changes:
                if not architecture_fits(change.package.manifest, architecture):
                    raise Refused("%s %s is for architecture %s, but this root is %s (use --force-architecture)"
                                  % (change.name, change.version, change.package.manifest["architecture"],
                                     architecture))
        self._check_relations(changes, options.no_deps)
        changes = order_by_dependencies(changes)
        self.changing = {c.name for c in changes}
        claims = {}
        for change in changes:
            for member in change.package.members:
                if member.kind != "d":
                    if member.path in claims and not force:
                        raise Refused("%s and %s both contain %s" % (claims[member.path], change.name, member.path))
                    claims[member.path] = change.name
        for change in changes:          # what the new versions drop may make way for a directory
            if change.old and change.old.installed:
                kept = {m.path for m in change.package.members} | set(change.old.config)
                for path, entry in self.db.files(change.name).items():
                    if entry.kind != "d" and path not in kept and claims.get(path, change.name) == change.name:
                        self.dropped[path] = change.name
        checked = self.needed_dirs      # directories below which no file is claimed (nor in them)
        for change in changes:          # a directory where another package has a file or symlink
            for member in change.package.members:
                above = _ancestors(member.path) if member.kind != "d" else (member.path, *_ancestors(member.path))
                for directory in above:
                    if directory in checked:    # and so were all above it
                        break
                    checked.add(directory)
                    if directory in claims:
                        raise Refused("%s of %s needs a directory at %s, where %s has a file or symbolic link"
                                      % (member.path, change.name, directory, claims[directory]))
        conflicts = []
        for change in changes:
            self._plan_files(change, claims, force, conflicts)
        self._plan_dir_replacements(conflicts)
        self._plan_dir_removals(changes)
        if conflicts:
            shown = conflicts[:20] + (["... and %d more" % (len(conflicts) - 20)] if len(conflicts) > 20 else [])
            raise Refused("file conflicts (use --force-overwrite to replace): " + "; ".join(shown))
        for change in changes:
            change.record = self._new_record(change, reasons)
            self._plan_scripts(change)
        return changes

    def _install_action(self, package: Package, allow_same: bool) -> Change | None:
        old = self.db.get(package.name)
        if not old or not old.installed:
            return Change(package.name, "install", package, old)
        installed = Version.parse(old.version)
        if package.version.unversioned or installed.unversioned:
            return Change(package.name, "reinstall" if package.version.text == old.version
                          else "upgrade", package, old)
        if package.version == installed:
            if not allow_same:
                self.plan.say("%s %s is already installed" % (package.name, old.version))
                return None
            return Change(package.name, "reinstall", package, old)
        if package.version < installed:
            if not allow_same:
                raise Refused("%s %s is installed; %s would be a downgrade (use --allow-same-version)"
                              % (package.name, old.version, package.version))
            return Change(package.name, "downgrade", package, old)
        return Change(package.name, "upgrade", package, old)

    def _check_relations(self, changes: list, no_deps: bool) -> None:
        final = {n: (r.version, r.manifest) for n, r in self.db.installed().items()}
        for change in changes:
            final[change.name] = (change.version, change.package.manifest)
        problems = []
        if not no_deps:
            for change in changes:
                problems += unmet_dependencies(change.name, change.package.manifest, final, self.plan)
            new_names = {c.name for c in changes}
            provided_before = {p for c in changes if c.old and c.old.installed
                               for p in c.old.manifest.get("provides", ())}
            before = {n: (r.version, r.manifest) for n, r in self.db.installed().items()}
            for name, (version, manifest) in final.items():
                if name not in new_names:
                    needs = manifest_dependencies(manifest)
                    if new_names & set(needs):
                        problems += unmet_dependencies(name, manifest, final, self.plan)
                        continue
                    for dep in sorted(provided_before & set(needs)):   # met through a provider before
                        if not _unmet_of(name, manifest, {dep}, before):
                            problems += _unmet_of(name, manifest, {dep}, final)
        for change in changes:
            problems += conflicts_with(change.name, change.package.manifest, final)
        if problems:
            raise Refused("; ".join(problems))

    def _lstat(self, path: str):
        """The root's lstat of ``path``, or None, with no system call when its directory
        is one this command creates."""
        return None if parent_of(path) in self.new_dirs else self.tree.lstat(path)

    def _ensure_dir(self, change: Change, path: str, mode: int, shown: bool = True) -> None:
        if path == "/" or path in self.made_dirs:
            return
        self._ensure_dir(change, parent_of(path), 0o755, shown)
        self.made_dirs.add(path)
        st = self._lstat(path)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            owner = self.owner.get(path)
            if owner is None or self.dropped.get(path) != owner:
                if stat.S_ISLNK(st.st_mode) and self.tree.link_leaves_root(path):
                    raise UnsafePath.symlink(path)
                raise Refused("%s needs a directory at %s, where there is %s %s" % (
                    change.name, path, "a symbolic link" if stat.S_ISLNK(st.st_mode) else "a file",
                    "owned by %s" % owner if owner else "owned by no package"))
            self.plan.set_aside(path)          # a file or link its owner drops in this command
            self.removed.add(path)
            st = None
        if st is None:
            self.new_dirs.add(path)
            self.plan.mkdir(path, mode)
            if shown:
                change.steps.append(("mkdir", path))

    def _plan_dir_mode(self, change: Change, path: str, mode: int) -> None:
        """A directory the package ships that exists with another mode gets the package's
        (an upgrade tightening 0755 to 0700 must tighten it on disk)."""
        if path in self.new_dirs or path in self.dir_modes:
            return
        st = self.tree.lstat(path)
        if st is not None and stat.S_ISDIR(st.st_mode) and not dir_mode_matches(st.st_mode, mode):
            self.dir_modes.add(path)
            self.plan.chmod(path, mode, stat.S_IMODE(st.st_mode))
            change.steps.append(("chmod", path))

    def _plan_files(self, change: Change, claims: dict, force: bool, conflicts: list) -> None:
        """Plan every member of the change's package against the root and the database:
        directories made, files and links written (config files by SPEC §8.4's table,
        unchanged files kept), conflicts collected in ``conflicts`` (``force`` takes
        files over instead), then the old version's files it drops removed.  Records
        the package's new file list in ``change.entries``."""
        package, name, plan = change.package, change.name, self.plan
        old_entries = self.db.files(name) if change.old else {}
        old_config = set(change.old.config) if change.old else set()
        is_config = config_matcher(package.manifest)
        entries = {}
        for member in package.members:
            path = member.path
            self._ensure_dir(change, parent_of(path), 0o755)
            for ancestor in _ancestors(path):
                if ancestor in entries:     # and so are all of its own ancestors
                    break
                entries[ancestor] = FileEntry("d", 0o755)
            if member.kind == "d":
                self._ensure_dir(change, path, member.mode)
                entries[path] = FileEntry("d", member.mode, explicit=True)
                self._plan_dir_mode(change, path, member.mode)
                continue
            st = self._lstat(path)
            owner = self.owner.get(path)
            config = member.kind == "f" and is_config(path)
            if st is not None and stat.S_ISDIR(st.st_mode):
                if config:
                    conflicts.append("%s is a directory on disk" % path)
                else:               # it may go in this command: decided once all is planned
                    self.dir_replacements.append((change, member))
                    entries[path] = FileEntry(member.kind, member.mode, member.size, None, member.link)
                continue
            if owner is not None and owner != name and owner not in self.changing:
                if not force:
                    conflicts.append("%s (owned by %s)" % (path, owner))
                    continue
                self.stolen.setdefault(owner, set()).add(path)
                self.plan.warn("%s takes over %s from %s" % (name, path, owner))
            if owner is None and st is not None and not config:
                if not force:
                    conflicts.append("%s (exists on disk, owned by no package)" % path)
                    continue
                self.plan.warn("%s replaces %s, which no package owned" % (name, path))
            if config:
                before = old_entries.get(path)
                packaged_before = before.digest if before is not None and before.kind == "f" \
                    and owner == name else None
                on_disk = None if st is None else (
                    self.tree.digest(path) if stat.S_ISREG(st.st_mode) else b"not a regular file")
                digest = package.config_digests[path]
                decision = decide_config_file(packaged_before, on_disk, digest)
                if decision == ConfigFileDecision.WRITE:
                    plan.put_member(path, package, member, st is not None)
                    change.steps.append(("replace" if st is not None else "write", path))
                elif decision == ConfigFileDecision.KEEP:
                    change.steps.append(("keep", path))
                else:
                    new_path = path + ".pm-new"
                    st_new = self.tree.lstat(new_path)
                    if st_new is not None and stat.S_ISDIR(st_new.st_mode):
                        conflicts.append("%s is a directory on disk" % new_path)
                        continue
                    plan.put_member(new_path, package, member, st_new is not None)
                    change.steps.append(("keep", path))
                    change.steps.append(("write-new", new_path))
                entries[path] = FileEntry("f", member.mode, member.size, digest)
            else:
                if path in old_config and owner == name and st is not None and stat.S_ISREG(st.st_mode):
                    self._save_edit(change, path, old_entries.get(path), st, conflicts)
                elif owner == name and self._unchanged(member, old_entries.get(path), st):
                    entries[path] = FileEntry("f", member.mode, member.size, member.digest)
                    plan.keep(path)
                    change.steps.append(("unchanged", path))
                    continue
                entry = entries[path] = FileEntry(member.kind, member.mode, member.size, None, member.link)
                plan.put_member(path, package, member, st is not None, entry if member.kind == "f" else None)
                change.steps.append(("replace" if st is not None else "write", path))
        for path, entry in old_entries.items():
            if path in entries or entry.kind == "d" or claims.get(path, name) != name:
                continue
            st = self.tree.lstat(path)
            if st is None:
                continue
            if path in old_config and stat.S_ISREG(st.st_mode) and self.tree.digest(path) != entry.digest:
                change.steps.append(("keep-modified", path))
                self.plan.warn("%s is no longer a config file of %s; kept because it was modified" % (path, name))
                continue
            if stat.S_ISDIR(st.st_mode) != (entry.kind == "d"):
                continue
            if path not in self.needed_dirs:   # else set aside where the directory is made
                plan.remove(path)
            self.removed.add(path)
            change.steps.append(("remove", path))
        change.gone_dirs = [p for p, e in old_entries.items() if e.kind == "d" and p not in entries]
        change.entries = entries

    def _unchanged(self, member: Member, before: FileEntry | None, st) -> bool:
        """Whether an upgrade can leave the file at ``member.path`` as it is: the package
        records its sha256 (CONTROL/sums), which is the one installed before, with the
        same mode and size, and the file on disk still has that content and mode."""
        return (member.kind == "f" and member.digest is not None and before is not None
                and before.kind == "f" and before.digest == member.digest
                and (before.mode, before.size) == (member.mode, member.size)
                and st is not None and stat.S_ISREG(st.st_mode)
                and (stat.S_IMODE(st.st_mode), st.st_size) == (member.mode, member.size)
                and self.tree.digest(member.path) == member.digest)

    def _save_edit(self, change: Change, path: str, before, st, conflicts: list) -> None:
        """A former config file the new version ships as a plain file: an edit made to
        it (on disk ≠ packaged before) is kept as ``<path>.pm-save`` (pacman's .pacsave)."""
        if before is None or before.kind != "f" or self.tree.digest(path) == before.digest:
            return
        saved = path + SAVED_SUFFIX
        st_saved = self.tree.lstat(saved)
        if st_saved is not None and stat.S_ISDIR(st_saved.st_mode):
            conflicts.append("%s is a directory on disk" % saved)
            return
        self.plan.put_bytes(saved, self.tree.read(path), stat.S_IMODE(st.st_mode), st_saved is not None)
        change.steps.append(("save", saved))

    def _plan_dir_replacements(self, conflicts: list) -> None:
        """A directory on disk where a package now has a file or symbolic link is
        replaced when everything under it goes in this command and no package keeps it
        (an upgrade turning ``test/`` into ``test -> test2``); a conflict otherwise."""
        kept = {p for p, owners in self.dir_owners.items() if owners - self.changing}
        for change, member in self.dir_replacements:
            path = member.path
            if path in kept or not self.dir_owners.get(path) or not self._emptied(path, kept):
                conflicts.append("%s is a directory on disk" % path)
                continue
            self.plan.replace_dir(path)
            self.plan.put_member(path, change.package, member, False,
                               change.entries[path] if member.kind == "f" else None)
            self.removed.add(path)
            change.steps.append(("replace", path))

    def _emptied(self, path: str, kept: set) -> bool:
        """True when every file and link under the directory ``path`` is removed by
        this command and no directory under it is kept by a package."""
        stack = [path]
        while stack:
            directory = stack.pop()
            for child in self.tree.listdir(directory):
                child_path = directory.rstrip("/") + "/" + child
                st = self.tree.lstat(child_path)
                if st is not None and stat.S_ISDIR(st.st_mode):
                    if child_path in kept:
                        return False
                    stack.append(child_path)
                elif child_path not in self.removed:
                    return False
        return True

    def _plan_dir_removals(self, changes: list) -> None:
        """Plan removal of the directories the changes leave (deepest first) that no
        package owns after this command and that will be empty once the paths this
        command removes are gone (SPEC §8.3: directories are shared)."""
        owned_after = {p for p, owners in self.dir_owners.items() if owners - self.changing}
        for change in changes:
            if change.entries:
                owned_after.update(p for p, e in change.entries.items() if e.kind == "d")
        candidates = sorted(((p, c) for c in changes for p in c.gone_dirs), key=lambda pc: pc[0], reverse=True)
        for path, change in candidates:
            if path == "/" or path in owned_after or path in self.removed:
                continue
            st = self.tree.lstat(path)
            if st is None or not stat.S_ISDIR(st.st_mode):
                continue
            children = {path.rstrip("/") + "/" + child for child in self.tree.listdir(path)}
            if children <= self.removed:
                self.plan.rmdir_later(path)
                self.removed.add(path)
                if not path.startswith(DB_DIR + "/"):       # pm's own directories are not news
                    change.steps.append(("rmdir", path))

    def _new_record(self, change: Change, reasons: dict) -> PackageRecord:
        """The database record of the package the change installs (its file list's name
        is filled in by new_packages)."""
        manifest = change.package.manifest
        is_config = config_matcher(manifest)
        reason = reasons.get(change.name)
        if reason is None:
            reason = change.old.reason if change.old else REASON_EXPLICIT
        import time
        return PackageRecord.new(
            change.version, manifest, reason, time=int(time.time()),
            config=sorted(p for p, e in change.entries.items() if e.kind == "f" and is_config(p)),
            size=sum(e.size for e in change.entries.values()))

    def _plan_scripts(self, change: Change) -> None:
        scripts = change.package.scripts
        script_dir = SCRIPTS_DIR + "/" + change.name
        known = {s: c for s, c in scripts.items() if s in KNOWN_SCRIPTS}
        if known:
            self._ensure_dir(change, script_dir, 0o755, shown=False)
        for script, content in sorted(known.items()):
            exists = self.tree.lstat(script_dir + "/" + script) is not None
            self.plan.put_bytes(script_dir + "/" + script, content, 0o755, exists)
        if change.old and change.old.installed:
            for script in self._kept_scripts(change.name):
                if script not in known:
                    self.plan.remove(script_dir + "/" + script)
        if "api-pre-install" in known:
            change.pre_script = "api-pre-install"
        if "api-post-install" in known:
            change.post_script = "api-post-install"
            change.post_content = known["api-post-install"]

    def _kept_scripts(self, name: str) -> list:
        try:
            return sorted(s for s in self.tree.listdir(SCRIPTS_DIR + "/" + name) if s in KNOWN_SCRIPTS)
        except (FileNotFoundError, NotADirectoryError):
            return []

    # -- uninstall --------------------------------------------------------------------

    def uninstall(self, names: list, options: Options) -> list:
        """The changes uninstalling ``names`` makes (dependents first); refused while an
        installed package needs one of them, unless ``options.recursive`` removes those
        too, and for an ``essential`` package, unless ``options.force_essential``;
        ``options.purge`` removes config files too."""
        purge = options.purge
        targets = []
        for name in names:
            record = self.db.get(name)
            if record is None:
                self.plan.say("%s is not installed" % name)
            elif not record.installed and not purge:
                self.plan.say("%s is already removed (its config files remain; --purge removes them)" % name)
            elif name not in targets:
                targets.append(name)
        if not targets:
            return []
        targets = self._with_dependents(targets, options.recursive)
        essential = [n for n in targets if self.db.get(n).installed
                     and self.db.get(n).manifest.get("essential") is True]
        if essential and not options.force_essential:
            raise Refused("%s %s essential: the root would be left without %s (use --force-essential)"
                          % (", ".join(essential), "is" if len(essential) == 1 else "are",
                             "it" if len(essential) == 1 else "them"))
        self.changing = set(targets)
        changes = [Change(name, "purge" if purge else "remove", None, self.db.get(name)) for name in targets]
        for change in changes:
            self._plan_removal(change, purge)
        self._plan_dir_removals(changes)
        installed = [c for c in changes if c.old.installed]
        ordered = order_by_dependencies(installed, manifests={c.name: c.old.manifest for c in installed})
        ordered.reverse()
        return ordered + [c for c in changes if c not in installed]

    def _with_dependents(self, targets: list, recursive: bool) -> list:
        """``targets`` and, with ``recursive``, the installed packages whose dependencies
        (by name or met through ``provides``) only the targets meet; refused otherwise."""
        installed = self.db.installed()
        before = {n: (r.version, r.manifest) for n, r in installed.items()}
        removing = set(targets)
        while True:
            final = {n: vm for n, vm in before.items() if n not in removing}
            providers: dict = {}                # a name -> the packages removed that provide it
            for name in sorted(removing & set(installed)):
                for provided in installed[name].manifest.get("provides", ()):
                    providers.setdefault(provided, []).append(name)
            needing = []
            for name, (version, manifest) in sorted(final.items()):
                for dep in manifest_dependencies(manifest):
                    if (dep in removing or dep in providers) and _unmet_of(name, manifest, {dep}, final) \
                            and not _unmet_of(name, manifest, {dep}, before):
                        needing.append((name, dep if dep in removing or dep in before else
                                        "%s (provided by %s)" % (dep, ", ".join(providers[dep]))))
            if not needing:
                return targets
            if not recursive:
                raise Refused("; ".join("%s is needed by %s" % (dep, name) for name, dep in needing) +
                              " (use --recursive to remove them too)")
            for name, _ in needing:
                if name not in removing:
                    removing.add(name)
                    targets.append(name)

    def _plan_removal(self, change: Change, purge: bool) -> None:
        """Files and scripts to remove for one package; without ``purge`` its config files
        stay, recorded as ``config-remaining``."""
        record = change.old
        entries = self.db.files(change.name)
        config = set(record.config)
        remaining = {}
        for path in sorted(entries, reverse=True):
            entry = entries[path]
            if entry.kind == "d":
                continue
            if path in config and not purge:
                remaining[path] = entry
                change.steps.append(("keep", path))
                continue
            self._remove_if_present(change, path, entry.kind)
            if path in config:
                self._remove_if_present(change, path + ".pm-new", "f")
        for path in list(remaining):
            for ancestor in _ancestors(path):
                remaining[ancestor] = entries.get(ancestor) or FileEntry("d", 0o755)
        change.gone_dirs = [p for p, e in entries.items() if e.kind == "d" and p not in remaining]
        if record.installed:
            script_dir = SCRIPTS_DIR + "/" + change.name
            kept = self._kept_scripts(change.name)
            for script in kept:
                self.plan.remove(script_dir + "/" + script)
                self.removed.add(script_dir + "/" + script)
            if self.tree.lstat(script_dir) is not None:
                change.gone_dirs.append(script_dir)
            if "api-pre-uninstall" in kept:
                change.pre_script = "api-pre-uninstall"
            if "api-post-uninstall" in kept:
                change.post_script = "api-post-uninstall"
                change.post_content = self.tree.read(script_dir + "/api-post-uninstall")
        if any(e.kind != "d" for e in remaining.values()):
            change.entries = remaining
            change.record = record.but(state=STATE_CONFIG_REMAINING,
                                       config=sorted(p for p in remaining if p in config))
        else:
            change.record = None

    def _remove_if_present(self, change: Change, path: str, kind: str) -> None:
        """Remove ``path`` when it is on disk as the kind recorded (a directory where a
        file was recorded is somebody else's now, and stays)."""
        st = self.tree.lstat(path)
        if st is not None and not stat.S_ISDIR(st.st_mode) and kind != "d":
            self.plan.remove(path)
            self.removed.add(path)
            change.steps.append(("remove", path))

    # -- the plan as a whole -----------------------------------------------------------

    def conclude(self, changes: list, relabel: dict) -> Plan:
        """The Plan of ``changes``, with the database's new records, the install reasons
        ``relabel`` ({name: reason}) gives installed packages the changes leave as they
        are, and the operations in their final form."""
        plan, db = self.plan, self.db
        changed = {c.name for c in changes}
        plan.changes = changes
        plan.relabel = {name: reason for name, reason in relabel.items() if name not in changed
                        and db.get(name) is not None and db.get(name).installed
                        and db.get(name).reason != reason}
        plan.packages = self.new_packages(changes) if changes else dict(db.packages)
        plan.finalize()
        for name, reason in plan.relabel.items():
            plan.packages[name] = PackageRecord(plan.packages[name], reason=reason)
        return plan

    # -- the new database -------------------------------------------------------------

    def new_packages(self, changes: list) -> dict:
        """The database records after ``changes``, with the file lists they need
        registered in the transaction (digests of staged files are filled in after
        staging by ``finish_records``)."""
        packages = dict(self.db.packages)
        for change in changes:
            if change.record is None:
                packages.pop(change.name, None)
            else:
                packages[change.name] = change.record
            if change.old:
                self.plan.obsolete_lists.append(change.old.files)
        for owner, paths in self.stolen.items():
            if owner in packages and owner not in {c.name for c in changes}:
                entries = {p: e for p, e in self.db.files(owner).items() if p not in paths}
                self.plan.obsolete_lists.append(self.db.get(owner).files)
                packages[owner] = self.db.get(owner).but(files=self.plan.add_file_list(owner, entries))
        for change in changes:
            if change.record is not None:
                change.record["files"] = self.plan.add_file_list(change.name, change.entries)
        return packages


def plan_install(db: Database, tree: TreeView, packages: list, reasons: dict, options: Options,
                 architecture: str | None = None, relabel: dict | None = None) -> Plan:
    """The Plan of installing ``packages`` (read and checked) over ``db`` and ``tree``:
    computed, never carried out, and the same for a dry run as for a real one.
    ``reasons`` ({name: reason}) are the new packages' install reasons; ``relabel``
    those of installed packages the plan may leave as they are.  Refused (PmError)
    when the install cannot be done."""
    planner = Planner(tree, db, Plan())
    return planner.conclude(planner.install(packages, reasons, options, architecture), relabel or {})


def plan_uninstall(db: Database, tree: TreeView, names: list, options: Options) -> Plan:
    """The Plan of uninstalling ``names`` (with ``options.purge``, ``recursive``,
    ``force_essential``) over ``db`` and ``tree``: computed, never carried out."""
    planner = Planner(tree, db, Plan())
    return planner.conclude(planner.uninstall(names, options), {})


def installed_bytes(package: Package) -> int:
    """The bytes the regular files of ``package`` take once installed (the sum of their sizes)."""
    return sum(m.size for m in package.members if m.kind == "f")


def summary_row(action: str, name: str, version: str, old_version: str | None, download: int,
                 new_size, old_size) -> dict:
    """One package's row of a summary: action, versions, ``download_size`` and
    ``installed_size_change`` (None when ``new_size`` is; an ``old_size`` of None counts as 0)."""
    return {"package": name, "action": action, "version": version, "old_version": old_version or None,
            "download_size": download,
            "installed_size_change": None if new_size is None else new_size - (old_size or 0)}


def change_row(change, download: int) -> dict:
    """The summary row of a planned Change."""
    old = change.old if change.old and change.old.installed else None
    new_size = installed_bytes(change.package) if change.package else 0
    old_size = old.size if old else (change.old.size if change.old and not change.package
                                                 else 0)
    return summary_row(change.action, change.name, change.version, change.old_version, download,
                        new_size, old_size)


def summarize(rows: list) -> dict:
    """The summary of a command's changes: each package's row, the bytes to download
    and the change in installed size (None when a package's size is not known)."""
    changes = [r["installed_size_change"] for r in rows]
    return {"packages": rows, "download_size": sum(r["download_size"] for r in rows),
            "installed_size_change": None if None in changes else sum(changes)}


def _signed_size(n) -> str:
    return "size unknown" if n is None else ("+" if n >= 0 else "") + human_size(n)


def summary_lines(summary: dict) -> list:
    """One line per package (``upgrade foo 1.0 -> 2.0 (1.2 MiB to download, +40.0 KiB)``)
    and a total line, as apt and pacman show before they act."""
    lines, counts = [], {}
    for row in summary["packages"]:
        head = "%s %s %s" % (row["action"], row["package"], row["version"])
        if row["old_version"] and row["action"] in ("upgrade", "downgrade", "reinstall"):
            head = "%s %s %s -> %s" % (row["action"], row["package"], row["old_version"], row["version"])
        extras = ["%s to download" % human_size(row["download_size"])] if row["download_size"] else []
        extras.append(_signed_size(row["installed_size_change"]))
        lines.append("%s (%s)" % (head, ", ".join(extras)))
        action = {"purge": "remove"}.get(row["action"], row["action"])
        counts[action] = counts.get(action, 0) + 1
    order = ("install", "upgrade", "reinstall", "downgrade", "remove")
    total = ", ".join("%d to %s" % (counts[a], a) for a in order if a in counts) or "nothing to do"
    lines.append("%s; %s to download; installed size %s" % (
        total, human_size(summary["download_size"]), _signed_size(summary["installed_size_change"])))
    return lines


def plan_summary(plan: Plan) -> dict:
    """The summary of a plan: a row per change, download and installed-size totals."""
    return summarize([change_row(c, plan.downloads.get(c.name, 0)) for c in plan.changes])


def plan_report(plan: Plan, dry_run: bool) -> dict:
    """The JSON document of a planned command (``--json``), before it is carried out."""
    return {"dry_run": dry_run, "changes": [c.as_json() for c in plan.changes], "reasons": plan.relabel,
            "fetched": [], "script_failures": [], "summary": plan_summary(plan),
            "operations": [op.as_list() for op in plan.ops]}


def refuse_writes_through_symlinks(root: Root, packages: list) -> None:
    """Refuse packages with members below a symbolic link already in the root before the
    lock is taken, so that the refusal writes nothing, not even the lock (the planner
    checks again under the lock)."""
    directories = set()
    for package in packages:
        for member in package.members:
            for ancestor in _ancestors(member.path):
                if ancestor in directories:     # and so are all of its own ancestors
                    break
                directories.add(ancestor)
            if member.kind == "d":
                directories.add(member.path)
    absent = set()
    for path in sorted(directories):          # parents before children
        if parent_of(path) in absent:
            absent.add(path)
            continue
        st = root.lstat(path)
        if st is not None and stat.S_ISLNK(st.st_mode) and root.link_leaves_root(path):
            raise UnsafePath.symlink(path)
        if st is None or not stat.S_ISDIR(st.st_mode):    # the planner decides about the rest
            absent.add(path)


def unmet_dependencies(name: str, manifest: dict, available: dict, out: Output | None) -> list:
    """Messages for each dependency of ``name`` that ``available`` ({name: (version,
    manifest)}) does not satisfy, by name or by ``provides``."""
    problems = []
    for dep, constraint in manifest_dependencies(manifest).items():
        if dep in available:
            version = Version.parse(available[dep][0])
            if version.unversioned and not constraint.is_any and out is not None:
                out.warn("%s is unversioned (oppm); assuming it satisfies %s %s" % (dep, dep, constraint))
            if constraint.allows(version, pre=True):
                continue
            problems.append("%s needs %s %s, but %s is %s" % (name, dep, constraint, dep, version))
            continue
        if constraint.is_any and any(dep in m.get("provides", ()) for _, m in available.values()):
            continue
        problems.append("%s needs %s%s, which is not installed" %
                        (name, dep, "" if constraint.is_any else " " + str(constraint)))
    return problems


def _unmet_of(name: str, manifest: dict, dependencies: set, available: dict) -> list:
    """unmet_dependencies for only the ``dependencies`` (names) of ``manifest``."""
    if not dependencies:
        return []
    wanted = {d: c for d, c in manifest.get("dependencies", {}).items() if d in dependencies}
    return unmet_dependencies(name, {"dependencies": wanted}, available, None)


def conflicts_with(name: str, manifest: dict, available: dict) -> list:
    """Messages for each conflict between ``name`` and the other ``available`` packages,
    declared on either side; a conflict with any version of a name also covers the
    packages that provide it (as the resolver holds it)."""
    problems = []
    version = Version.parse(manifest["version"])
    mine_all = manifest_dependencies(manifest, "conflicts")
    my_provides = set(manifest.get("provides", ())) - {name}
    for other, (other_version, other_manifest) in available.items():
        if other == name:
            continue
        mine = mine_all.get(other)
        if mine and mine.allows(Version.parse(other_version), pre=True):
            problems.append("%s conflicts with %s %s" % (name, other, other_version))
        for provided in other_manifest.get("provides", ()):
            if provided != other and provided in mine_all and mine_all[provided].is_any:
                problems.append("%s conflicts with %s %s, which provides %s" % (name, other, other_version, provided))
        theirs_all = manifest_dependencies(other_manifest, "conflicts")
        theirs = theirs_all.get(name)
        if theirs and theirs.allows(version, pre=True):
            problems.append("%s %s conflicts with %s" % (other, other_version, name))
        for provided in sorted(my_provides & set(theirs_all)):
            if theirs_all[provided].is_any:
                problems.append("%s %s conflicts with %s, which %s provides" % (other, other_version, provided, name))
    return problems


def order_by_dependencies(changes: list, manifests: dict | None = None) -> list:
    """``changes`` with each package after the ones it depends on (ties by name; a
    cycle is broken at its alphabetically first package)."""
    by_name = {c.name: c for c in changes}
    manifest_of = {c.name: manifests[c.name] if manifests else c.package.manifest for c in changes}
    provider = {}                      # a provided name -> a change providing it
    for name in sorted(by_name):
        for provided in manifest_of[name].get("provides", ()):
            provider.setdefault(provided, name)
    needs = {}
    for change in changes:
        wanted = (d if d in by_name else provider.get(d) for d in manifest_dependencies(manifest_of[change.name]))
        needs[change.name] = sorted({d for d in wanted if d is not None and d != change.name})
    ordered, placed, visiting = [], set(), set()

    def visit(name):
        if name in placed or name in visiting:
            return
        visiting.add(name)
        for dep in needs[name]:
            visit(dep)
        visiting.discard(name)
        placed.add(name)
        ordered.append(by_name[name])

    for name in sorted(by_name):
        visit(name)
    return ordered


# =============================================================================
# 11. Resolver
# =============================================================================
#
# pm's own resolver.  It chooses one candidate (a version from a source, a package file
# from the command line, or the installed package) for every name that some requirement
# reaches, so that every dependency holds and no two chosen packages conflict — the
# newest candidates allowed, while installed packages keep their version unless asked
# to move or forced by a requirement.
#
# The search is depth first over names, in the order requirements first reach them,
# trying each name's candidates best first.  When a name has no acceptable candidate it
# jumps back to the latest decision that caused the failure (conflict-directed
# backjumping), not merely the latest decision, so that unrelated choices are not
# retried.  The work is bounded (MAX_RESOLVER_STEPS).  When there is no solution, the
# error names the requirements that clashed and the chain of packages that led to each.

MAX_RESOLVER_STEPS = 100_000   # candidate tries; a solvable closure needs about one per package
MAX_EXPLAINED = 4              # requirements and reasons quoted in one explanation

REQUESTED = "requested"        # root requirements come from the command line...
INSTALLED = "installed"        # ...or keep an installed package installed


class Candidate:
    """One installable version of a package: from a source (``source`` and its index
    ``entry``), from a package file given on the command line (``package``), or the
    installed package (``installed``)."""

    __slots__ = ("name", "version", "manifest", "installed", "source", "entry", "package",
                 "_dependencies", "_conflicts", "unless")

    def __init__(self, manifest: dict, installed: bool = False, source=None, entry=None,
                 package=None):
        self.name = manifest["package"]
        self.version = Version.parse(manifest["version"])
        self.manifest = manifest
        self.installed, self.source, self.entry, self.package = installed, source, entry, package
        self._dependencies = self._conflicts = None
        self.unless: dict = {}   # dependencies set aside: {name: Constraint} holding only if installed

    @property
    def dependencies(self) -> dict:
        """``{name: Constraint}`` this candidate needs."""
        if self._dependencies is None:
            self._dependencies = manifest_dependencies(self.manifest)
        return self._dependencies

    @property
    def conflicts(self) -> dict:
        """``{name: Constraint}`` this candidate cannot be installed with."""
        if self._conflicts is None:
            self._conflicts = manifest_dependencies(self.manifest, "conflicts")
        return self._conflicts

    @property
    def provides(self) -> list:
        """The names the manifest's ``provides`` lists (empty when it has none)."""
        return self.manifest.get("provides", ())

    @property
    def hidden(self) -> bool:
        """True when the manifest says ``hidden = true`` (SPEC §4: no install candidate):
        providers() leave it out unless it is installed, and ``pm search`` does not offer it."""
        return self.manifest.get("hidden") is True

    def describe(self) -> str:
        """``NAME VERSION`` for messages, with `` (installed)`` for the installed package and
        `` (file)`` for a package file."""
        where = " (installed)" if self.installed else " (file)" if self.package is not None else ""
        return "%s %s%s" % (self.name, self.version, where)

    def __repr__(self):
        return "Candidate(%s)" % self.describe()


class Pool:
    """The candidates one resolution chooses from.  Add the installed packages first,
    then package files, then each source's candidates in the order of the sources: among
    equal versions the first added is preferred.  With an ``architecture``, a source's
    candidates built for another one are left out (noted in other_architectures)."""

    def __init__(self, architecture: str | None = None):
        self.architecture = architecture
        self.installed: dict = {}        # name -> the installed candidate
        self.pinned: dict = {}           # name -> the candidate of a package file
        self._by_name: dict = {}         # name -> candidates
        self._unsorted: set = set()
        self._providers: dict = {}       # name -> candidates of other names providing it
        self.other_architectures: dict = {}   # name -> an architecture only offered for

    def add(self, candidate: Candidate) -> None:
        """Add ``candidate``: as the installed one, as a package file (Refused when one of that name
        was given already) or as a source's, and as a provider of the other names it provides.  A
        source's candidate built for another architecture is left out (noted in
        other_architectures)."""
        name = candidate.name
        if candidate.source is not None and self.architecture is not None \
                and not architecture_fits(candidate.manifest, self.architecture):
            self.other_architectures.setdefault(name, candidate.manifest["architecture"])
            return
        if candidate.installed:
            self.installed[name] = candidate
        elif candidate.package is not None:
            if name in self.pinned:
                raise Refused("package %s is given twice" % name)
            self.pinned[name] = candidate
        self._by_name.setdefault(name, []).append(candidate)
        self._unsorted.add(name)
        for provided in candidate.provides:
            if provided != name:
                self._providers.setdefault(provided, []).append(candidate)

    def candidates(self, name: str) -> list:
        """The candidates named ``name``, newest first (equal versions in the order they
        were added); a package file given is the only candidate of its name."""
        pinned = self.pinned.get(name)
        if pinned is not None:
            return [pinned]
        if name in self._unsorted:
            self._by_name[name].sort(key=lambda c: c.version.key, reverse=True)   # stable
            self._unsorted.discard(name)
        return self._by_name.get(name, [])

    def providers(self, name: str) -> list:
        """Candidates of other names that provide ``name``, newest first; hidden ones
        are left out unless installed (SPEC §4: hidden is no install candidate)."""
        found = [c for c in self._providers.get(name, ()) if (c.installed or not c.hidden)
                 and self.pinned.get(c.name, c) is c]
        found.sort(key=lambda c: (c.name, c.version.key), reverse=True)
        return found

    def names(self) -> list:
        """The names of the candidates added, sorted (names only provided are not among them)."""
        return sorted(self._by_name)

    def set_aside_unmet(self) -> list:
        """Set aside the dependencies the installed packages do not meet now (as
        --no-deps may leave them), and return a message for each: a resolution then
        leaves such a package as it is instead of failing over it, and only holds the
        constraint if the dependency gets installed."""
        messages = []
        for name, candidate in sorted(self.installed.items()):
            unmet = []
            for dependency, constraint in candidate.dependencies.items():
                there = self.installed.get(dependency)
                if there is not None and constraint.allows(there.version, True):
                    continue
                if there is None and constraint.is_any and any(
                        dependency in c.provides for c in self.installed.values()):
                    continue
                unmet.append(dependency)
                messages.append("%s needs %s%s, which is not installed; left as it is" % (
                    candidate.describe(), dependency, "" if constraint.is_any else " " + str(constraint)))
            if unmet:
                candidate.unless = {d: c for d, c in candidate.dependencies.items() if d in unmet and not c.is_any}
                candidate._dependencies = {d: c for d, c in candidate.dependencies.items() if d not in unmet}
        return messages

    def knows(self, name: str) -> bool:
        """True when some candidate is named ``name`` or provides it."""
        return bool(self._by_name.get(name)) or bool(self.providers(name))


class Requirement:
    """``name`` must be installed at a version ``constraint`` allows.  ``parent`` is the
    candidate that needs it; a root requirement has none and ``origin`` says why
    (REQUESTED or INSTALLED)."""

    __slots__ = ("name", "constraint", "parent", "origin")

    def __init__(self, name: str, constraint: Constraint, parent: Candidate | None = None,
                 origin: str = REQUESTED):
        self.name, self.constraint, self.parent, self.origin = name, constraint, parent, origin

    def __repr__(self):
        return "Requirement(%s %s)" % (self.name, self.constraint)


class Unsatisfiable(Refused):
    """No choice of candidates meets every requirement; the message explains why."""


class _Frame:
    """One decision of the search: the name, its candidates in order of preference, the
    next one to try, and the decision levels blamed for the candidates that failed."""

    __slots__ = ("slot", "mark", "options", "next", "blame", "reasons", "rejected", "passed")

    def __init__(self, slot: str, mark: int):
        self.slot, self.mark = slot, mark
        self.options: list = []
        self.next = 0
        self.blame: set = set()
        self.reasons: list = []          # why candidates failed, for the explanation
        self.rejected: list = []         # candidates no requirement on the name allows
        self.passed = False              # some candidate was accepted at least once


class Resolver:
    """Chooses one candidate per needed name from a Pool (see the section comment).

    ``upgrade`` is a set of names, or True for every name, that prefer their newest
    candidate to the installed one; other installed packages keep their version unless
    a requirement needs a newer one.  Candidates older than the installed version are
    left out unless ``allow_downgrade``; ``reinstall`` names prefer a source's copy of
    the installed version.  Pre-releases are chosen only with ``pre`` or when a
    constraint names one (an installed pre-release is always acceptable).
    """

    def __init__(self, pool: Pool, pre: bool = False, allow_downgrade: bool = False,
                 upgrade=(), reinstall=(), max_steps: int = MAX_RESOLVER_STEPS):
        self.pool, self.pre, self.allow_downgrade = pool, pre, allow_downgrade
        self.upgrade, self.reinstall, self.max_steps = upgrade, set(reinstall), max_steps
        self.steps = 0

    def resolve(self, requirements: list) -> dict:
        """The chosen candidates by name (installed ones included) such that every
        requirement and every dependency of a chosen candidate holds and no chosen
        candidates conflict; raises Unsatisfiable, with an explanation, otherwise."""
        self.chosen: dict = {}        # name -> candidate (a provider may fill a virtual name)
        self.level: dict = {}         # name -> decision level of its choice
        self.criteria: dict = {}      # name -> requirements on it
        self.order: list = []         # required names, in the order requirements reached them
        self.trail: list = []         # undo log
        self.conflicting: dict = {}   # name -> [(constraint, declaring candidate, is a set-aside need)]
        self.provided: dict = {}      # name -> chosen candidates providing it
        self.failures: dict = {}      # name -> [count, explanation of its first failure]
        self.steps = 0
        self.rank = self._rank_names([r.name for r in requirements])
        self.open: list = []          # heap of (rank, name) of names needing a decision
        for requirement in requirements:
            self._require(requirement)
        frames: list = []
        while True:
            slot = self._next_open()
            if slot is None:
                return {name: c for name, c in self.chosen.items() if c.name == name}
            frame = _Frame(slot, len(self.trail))
            self._fill_options(frame)
            frames.append(frame)
            while not self._advance(frame, len(frames) - 1):
                blame = self._exhausted(frame, len(frames) - 1)
                if not blame:
                    raise Unsatisfiable("dependencies cannot be satisfied: " + self._explanation())
                target = max(blame)       # the latest decision that took part in the failure
                del frames[target + 1:]
                frame = frames[target]
                frame.blame |= blame
                self._undo(frame.mark)
                self._reopen()

    # -- the search ---------------------------------------------------------------------

    def _rank_names(self, roots: list) -> dict:
        """Number the names reachable from ``roots`` so that each comes after every name
        that may depend on it (a topological order of the names' dependency graph, over
        all their candidates; a cycle is broken anywhere).  Deciding names in this order,
        no new requirement reaches a name after its choice, so little is ever undone."""
        def successors(name):
            following = set()
            for candidate in self.pool.candidates(name):
                following.update(candidate.dependencies)
            following.update(p.name for p in self.pool.providers(name))
            following.discard(name)
            return iter(sorted(following))

        finished, seen = [], set()
        for root in reversed(roots):         # so that unrelated roots keep their order
            if root in seen:
                continue
            seen.add(root)
            stack = [(root, successors(root))]
            while stack:
                name, following = stack[-1]
                for successor in following:
                    if successor not in seen:
                        seen.add(successor)
                        stack.append((successor, successors(successor)))
                        break
                else:
                    stack.pop()
                    finished.append(name)
        return {name: rank for rank, name in enumerate(reversed(finished))}

    def _next_open(self):
        """The name to decide next: the lowest ranked one required and not chosen."""
        import heapq
        while self.open:
            _, name = heapq.heappop(self.open)
            if name in self.criteria and name not in self.chosen:
                return name
        return None

    def _reopen(self) -> None:
        """After going back, every required name not chosen is open again."""
        import heapq
        self.open = [(self.rank[name], name) for name in self.order if name not in self.chosen]
        heapq.heapify(self.open)

    def _allows(self, requirement: Requirement, candidate: Candidate) -> bool:
        """True when ``candidate`` meets ``requirement`` (a provider meets only "any")."""
        if candidate.name != requirement.name:          # a provider: only "any version"
            return requirement.constraint.is_any
        return requirement.constraint.allows(candidate.version, self.pre or candidate.installed)

    def _downgrade(self, candidate: Candidate) -> bool:
        """True when choosing ``candidate`` would move its installed package to an older
        version without ``allow_downgrade`` (files are left to the Planner to refuse)."""
        installed = self.pool.installed.get(candidate.name)
        return (installed is not None and not self.allow_downgrade and candidate is not installed
                and candidate.package is None and not candidate.version.unversioned
                and not installed.version.unversioned and candidate.version < installed.version)

    def _ordered(self, name: str) -> list:
        """The candidates named ``name`` in order of preference."""
        candidates = self.pool.candidates(name)
        installed = self.pool.installed.get(name)
        if installed is None or name in self.pool.pinned:
            return candidates
        same = [c for c in candidates if c.version == installed.version and c is not installed]
        others = [c for c in candidates if c.version != installed.version]
        if name in self.reinstall:
            same.append(installed)
        else:
            same = [installed]
        if self.upgrade is True or name in self.upgrade:
            newer = [c for c in others if c.version > installed.version]
            return newer + same + [c for c in others if c.version < installed.version]
        return same + others

    def _likely(self, name: str):
        """The installed candidate of ``name`` when it is to stay as it is, or the one
        it is to move to when it is upgraded (named, or everything upgraded): its best
        candidate the requirements so far allow; None when nothing of it is installed."""
        if name not in self.pool.installed:
            return None
        for candidate in self._ordered(name):
            if all(self._allows(r, candidate) for r in self.criteria.get(name, ())) \
                    and not self._downgrade(candidate) \
                    and (self.pre or candidate.installed or not candidate.version.prerelease):
                return candidate
        return None

    def _fill_options(self, frame: _Frame) -> None:
        """The candidates of the frame's name that its requirements allow, best first;
        the others are blamed on the decisions that made those requirements."""
        slot = frame.slot
        criteria = self.criteria[slot]
        options = []
        for candidate in self._ordered(slot):
            failing = next((r for r in criteria if not self._allows(r, candidate)), None)
            if failing is not None:
                if failing.parent is not None:
                    frame.blame.add(self.level[failing.parent.name])
                frame.rejected.append(candidate)
            elif self._downgrade(candidate):
                frame.reasons.append("%s would be a downgrade from %s (use --allow-same-version)"
                                     % (candidate.describe(), self.pool.installed[slot].version))
            else:
                options.append(candidate)
        if all(r.constraint.is_any for r in criteria):
            providers = self.pool.providers(slot)
            preferred = [p for p in providers if self.chosen.get(p.name) is p
                         or (p.name not in self.chosen and self._likely(p.name) is p)]
            options = preferred + options + [p for p in providers if p not in preferred]
        frame.options = options

    def _advance(self, frame: _Frame, level: int) -> bool:
        """Choose the frame's next acceptable candidate; False when none is left."""
        while frame.next < len(frame.options):
            candidate = frame.options[frame.next]
            frame.next += 1
            self.steps += 1
            if self.steps > self.max_steps:
                explained = self._explanation()
                raise Unsatisfiable("dependency resolution gave up after %d steps%s" % (
                    self.max_steps, "; the last problem: " + explained if self.failures else ""))
            failure = self._try(frame.slot, candidate, level)
            if failure is None:
                frame.passed = True
                return True
            blame, reason = failure
            frame.blame |= blame
            if reason and len(frame.reasons) < MAX_EXPLAINED:
                frame.reasons.append(reason)
        return False

    def _exhausted(self, frame: _Frame, level: int) -> set:
        """The decisions to blame once every candidate of the frame failed: those its
        candidates' failures named and those that required its name at all."""
        if not frame.passed:
            record = self.failures.get(frame.slot)
            if record is None:
                self.failures[frame.slot] = [1, self._explain(frame)]
            else:
                record[0] += 1
        blame = set(frame.blame)
        for requirement in self.criteria[frame.slot]:
            if requirement.parent is not None:
                blame.add(self.level[requirement.parent.name])
        blame.discard(level)
        return {b for b in blame if b < level}

    def _try(self, slot: str, candidate: Candidate, level: int):
        """Choose ``candidate`` for ``slot`` and require its dependencies; None when that
        holds, else ``(levels to blame, reason)`` with nothing changed."""
        name = candidate.name
        if name != slot:                          # a provider filling a virtual name
            current = self.chosen.get(name)
            if current is not None and current is not candidate:
                return {self.level[name]}, "%s provides %s, but %s is chosen" % (
                    candidate.describe(), slot, current.describe())
            if current is None:
                failing = next((r for r in self.criteria.get(name, ()) if not self._allows(r, candidate)), None)
                if failing is not None:
                    blame = {self.level[failing.parent.name]} if failing.parent is not None else set()
                    return blame, "%s does not fit: %s" % (candidate.describe(), self._need(failing))
                if self._downgrade(candidate):
                    return set(), None
            else:
                self._choose(slot, candidate, level)
                return None
        clash = self._clash(candidate)
        if clash is not None:
            return clash
        mark = len(self.trail)
        self._choose(slot, candidate, level)
        if name != slot:
            self._choose(name, candidate, level)
        for relations, needed in ((candidate.conflicts, False), (candidate.unless, True)):
            for other, constraint in relations.items():
                self.conflicting.setdefault(other, []).append((constraint, candidate, needed))
                self.trail.append(("conflict", other))
        for provided in candidate.provides:
            self.provided.setdefault(provided, []).append(candidate)
            self.trail.append(("provide", provided))
        for dependency, constraint in candidate.dependencies.items():
            requirement = Requirement(dependency, constraint, candidate)
            current = self._require(requirement)
            if current is not None:
                failure = {self.level[dependency]}, self._why_not(candidate, requirement, current)
                self._undo(mark)
                return failure
        return None

    def _why_not(self, candidate: Candidate, requirement: Requirement, current: Candidate) -> str:
        """Why ``candidate``'s ``requirement`` rules out the chosen ``current``: the other
        requirements that rule out every version it would accept, when they do."""
        name = requirement.name
        needs = "%s needs %s %s" % (candidate.describe(), name, requirement.constraint)
        blockers = []
        for other in self.pool.candidates(name):
            if other is current or not self._allows(requirement, other):
                continue
            failing = next((r for r in self.criteria[name][:-1] if not self._allows(r, other)), None)
            if failing is None:
                return "%s, but %s is chosen" % (needs, self._chosen_because(current))
            if failing not in blockers:
                blockers.append(failing)
        if not blockers:
            return "%s, but %s is chosen and no other version fits" % (needs, self._chosen_because(current))
        return "%s, but %s" % (needs, "; ".join(self._need(b) for b in blockers[:MAX_EXPLAINED]))

    def _clash(self, candidate: Candidate):
        """``(levels, reason)`` when ``candidate`` conflicts with a chosen package (declared
        on either side; a conflict with any version of a name also covers its providers),
        or breaks a dependency set aside (Pool.set_aside_unmet)."""
        for other, constraint in candidate.unless.items():
            chosen = self.chosen.get(other)
            if chosen is not None and chosen.name == other and not constraint.allows(chosen.version, True):
                return {self.level[other]}, "%s needs %s %s, but %s is chosen" % (
                    candidate.describe(), other, constraint, self._chosen_because(chosen))
        for other, constraint in candidate.conflicts.items():
            chosen = self.chosen.get(other)
            if chosen is not None and chosen.name == other and chosen is not candidate \
                    and constraint.allows(chosen.version, True):
                return {self.level[other]}, "%s conflicts with %s" % (candidate.describe(), chosen.describe())
            if constraint.is_any:
                for provider in self.provided.get(other, ()):
                    if provider is not candidate:
                        return {self.level[provider.name]}, "%s conflicts with %s, which provides %s" % (
                            candidate.describe(), provider.describe(), other)
        for constraint, declaring, needed in self.conflicting.get(candidate.name, ()):
            if declaring is candidate or needed == constraint.allows(candidate.version, True):
                continue
            if needed:
                return {self.level[declaring.name]}, "%s needs %s %s" % (
                    declaring.describe(), candidate.name, constraint)
            return {self.level[declaring.name]}, "%s conflicts with %s" % (
                declaring.describe(), candidate.describe())
        for provided in candidate.provides:
            for constraint, declaring, needed in self.conflicting.get(provided, ()):
                if declaring is not candidate and not needed and constraint.is_any:
                    return {self.level[declaring.name]}, "%s conflicts with %s, which %s provides" % (
                        declaring.describe(), provided, candidate.describe())
        return None

    def _require(self, requirement: Requirement):
        """Add a requirement; the chosen candidate it rules out, if any (the requirement
        is then added all the same, and the caller undoes it)."""
        name = requirement.name
        criteria = self.criteria.get(name)
        if criteria is None:
            import heapq
            criteria = self.criteria[name] = []
            self.order.append(name)
            rank = self.rank.get(name)
            if rank is None:                # reached only through a candidate's provides
                rank = self.rank[name] = len(self.rank) + (1 << 40)
            heapq.heappush(self.open, (rank, name))
        criteria.append(requirement)
        self.trail.append(("require", name))
        chosen = self.chosen.get(name)
        if chosen is not None and not self._allows(requirement, chosen):
            return chosen
        return None

    def _choose(self, slot: str, candidate: Candidate, level: int) -> None:
        """Record ``candidate`` as the choice for ``slot`` made at decision ``level``."""
        self.chosen[slot] = candidate
        self.level[slot] = level
        self.trail.append(("choose", slot))

    def _undo(self, mark: int) -> None:
        """Take back every change recorded after the trail had ``mark`` entries."""
        trail = self.trail
        while len(trail) > mark:
            kind, name = trail.pop()
            if kind == "require":
                criteria = self.criteria[name]
                criteria.pop()
                if not criteria:
                    del self.criteria[name]
                    self.order.pop()
            elif kind == "choose":
                del self.chosen[name]
                del self.level[name]
            elif kind == "conflict":
                self.conflicting[name].pop()
            else:
                self.provided[name].pop()

    # -- explaining a failure -----------------------------------------------------------

    def _chain(self, candidate: Candidate) -> str:
        """Why ``candidate`` is chosen: ``requested``, ``installed``, or ``needed by`` the
        chain of packages that leads to it from one of those."""
        links, seen = [], set()
        while candidate is not None and candidate.name not in seen and len(links) < 8:
            seen.add(candidate.name)
            criteria = self.criteria.get(candidate.name)
            first = criteria[0] if criteria else None
            if first is None or first.parent is None:
                origin = first.origin if first is not None else REQUESTED
                return "needed by " + " <- ".join(links + [origin]) if links else origin
            candidate = first.parent
            links.append("%s %s" % (candidate.name, candidate.version))
        return "needed by " + " <- ".join(links + ["..."])

    def _chosen_because(self, candidate: Candidate) -> str:
        """``name version (why)`` of a chosen candidate."""
        return "%s %s (%s)" % (candidate.name, candidate.version, self._chain(candidate))

    def _need(self, requirement: Requirement) -> str:
        """A requirement for people: who needs what, and why that one is there."""
        wanted = requirement.name if requirement.constraint.is_any else \
            "%s %s" % (requirement.name, requirement.constraint)
        if requirement.parent is not None:
            return "%s needs %s" % (self._chosen_because(requirement.parent), wanted)
        if requirement.origin == INSTALLED:
            return "%s is installed" % wanted
        return "%s %s" % (requirement.origin, wanted)

    def _explain(self, frame: _Frame) -> str:
        """One line on why no candidate of the frame's name could be chosen."""
        slot = frame.slot
        criteria = [r for r in self.criteria[slot] if r.parent is not None or r.origin != INSTALLED]
        needs = [self._need(r) for r in criteria or self.criteria[slot]]
        if len(needs) > MAX_EXPLAINED:
            needs = needs[:MAX_EXPLAINED] + ["and %d more" % (len(needs) - MAX_EXPLAINED)]
        known = self.pool.candidates(slot)
        if not known and not self.pool.providers(slot):
            return "%s is not available from any source: %s" % (slot, "; ".join(needs))
        parts = needs + frame.reasons[:MAX_EXPLAINED]
        if frame.rejected:
            shown = []
            for candidate in frame.rejected[:6]:
                text = candidate.describe()
                if candidate.version.prerelease and not self.pre and all(
                        r.constraint.allows(candidate.version, True) for r in self.criteria[slot]):
                    text += " (a pre-release: use --pre)"
                shown.append(text)
            more = len(frame.rejected) - len(shown)
            parts.append("available: " + ", ".join(shown) + (" and %d more" % more if more > 0 else ""))
        return "no acceptable version of %s: %s" % (slot, "; ".join(parts))

    def _explanation(self) -> str:
        """The failure met most often (the one that blocked the search), first seen."""
        if not self.failures:
            return "no candidates"
        count, text = max(self.failures.values(), key=lambda record: record[0])
        return text


def unneeded_packages(installed: dict) -> list:
    """Names of installed packages recorded as dependencies that no explicitly installed
    package needs any more, directly or through others, by name or by ``provides`` (an
    essential package counts as explicit).  ``installed`` maps names to database records."""
    providers: dict = {}
    for name, record in installed.items():
        for provided in record.manifest.get("provides", ()):
            providers.setdefault(provided, []).append(name)
    needed = {name for name, record in installed.items() if record.reason != REASON_DEPENDENCY
              or record.manifest.get("essential") is True}      # an essential package stays
    stack = list(needed)
    while stack:
        for dependency in installed[stack.pop()].manifest.get("dependencies", {}):
            for name in [dependency] if dependency in installed else providers.get(dependency, ()):
                if name not in needed:
                    needed.add(name)
                    stack.append(name)
    return sorted(name for name in installed if name not in needed)


def resolve_requests(pool: Pool, requests: list, upgrade=(), pre: bool = False,
                     allow_downgrade: bool = False, reinstall=(), out: Output | None = None) -> tuple:
    """Resolve what a command asks for: ``requests`` (root Requirements) and the package
    files in the pool, while every installed package stays installed (dependencies an
    installed package already lacks are set aside, with a warning on ``out``).
    ``upgrade`` names (or True) prefer their newest candidates; requested names always
    do.  Returns ``(chosen, explicit)``: the candidates by name, and the names the
    requests were answered with (a requested virtual name is answered by its provider)."""
    for message in pool.set_aside_unmet():
        if out is not None:
            out.warn(message)
    any_version = Constraint.parse("*")
    # The installed packages come first: they are the context a request is explained in.
    requirements = [Requirement(name, any_version, None, INSTALLED) for name in sorted(pool.installed)]
    requirements += [Requirement(name, any_version) for name in sorted(pool.pinned)]
    requirements += requests
    if upgrade is not True:
        upgrade = set(upgrade) | {r.name for r in requests}
    resolver = Resolver(pool, pre, allow_downgrade, upgrade, reinstall)
    chosen = resolver.resolve(requirements)
    explicit = {resolver.chosen[r.name].name for r in requests} | set(pool.pinned)
    return chosen, explicit


# =============================================================================
# 12. Repositories
# =============================================================================
#
# A source is a directory, a file:// URL or an http(s):// URL holding packages and the
# indexes tools/repoPackager.py writes: index.msgpack.zst (zstd-compressed msgpack, what
# pm reads), index.json (the same, for people; pm reads it where zstandard is missing)
# and manifest (the OpenOS Lua index of pm-get).  Each entry names a package file with
# its size and sha256.  Local sources are read in place by every command, as apk does;
# remote ones are read from var/cache/pm/indexes, where `pm update` puts them.  A package
# from a remote source is downloaded into var/cache/pm/packages (resuming a partial
# download) and checked against its index entry before pm opens it; a local one is
# checked through the very descriptor pm then reads it from.  A dry run downloads into a
# temporary directory outside the root and writes nothing under it.

SOURCES_LIST = "/etc/pm/sources.list"
SOURCES_DIR = "/etc/pm/sources.list.d"
GITHUB_PAGES, GITHUB_RAW = "https://github.com/", "https://raw.githubusercontent.com/"   # as pm-get maps them
CACHE_DIR = "/var/cache/pm"
INDEX_CACHE_DIR = CACHE_DIR + "/indexes"
PACKAGE_CACHE_DIR = CACHE_DIR + "/packages"
INDEX_FORMAT = 1
INDEX_MSGPACK, INDEX_JSON, INDEX_LUA = "index.msgpack.zst", "index.json", "manifest"
PARTIAL_SUFFIX = ".part"
HTTP_TIMEOUT = 30.0          # default --timeout: seconds a transfer may go below MIN_TRANSFER_RATE
DOWNLOAD_CHUNK = 64 * 1024   # bytes read from the network at a time
FILENAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+~-]{0,199}$(?!\n)"
SHA256_PATTERN = r"^[0-9a-f]{64}$(?!\n)"


class Source:
    """One repository: ``url`` as written, ``kind`` (``dir`` or ``http``), ``location``
    (a host directory, or the URL without its trailing slash), ``trusted`` (an index
    without checksums or signature is accepted), ``transient`` (given with --repository:
    its index is read for this command only, never cached) and ``signed_by`` (the key
    number, hex, its index must be signed by; None when not pinned)."""

    def __init__(self, url: str, trusted: bool = False, transient: bool = False, where: str = "",
                 signed_by: str | None = None, origin: str = ""):
        import urllib.parse
        self.url, self.trusted, self.transient = url, trusted, transient
        self.signed_by = signed_by.lower() if signed_by else None
        self.origin = origin        # the sources file that lists it ("" for --repository)
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme in ("http", "https") and parsed.netloc:
            self.kind, self.location = "http", url.rstrip("/")
            if url.startswith(GITHUB_PAGES):    # as pm-get reads it: the raw files of that tree
                self.location = (GITHUB_RAW + self.location[len(GITHUB_PAGES):]).replace(
                    "/tree/", "/").replace("/blob/", "/")
        elif parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
            self.kind, self.location = "dir", urllib.parse.unquote(parsed.path)
        elif not parsed.scheme and url.startswith("/"):
            self.kind, self.location = "dir", url
        else:
            raise InvalidInput("%sunsupported source %r (a directory, file://, http:// or https:// URL)"
                               % (where, url))
        if self.kind == "dir":
            if not self.location.startswith("/"):
                raise InvalidInput("%sa directory source needs an absolute path: %r" % (where, url))
            self.location = os.path.normpath(self.location)

    @property
    def slug(self) -> str:
        """The source's name in the cache: readable, and unique by a hash of the URL."""
        import re
        readable = re.sub(r"[^A-Za-z0-9.-]+", "_", self.location.split("://", 1)[-1]).strip("_")[:60]
        return "%s-%s" % (readable or "source", sha256_bytes(self.location.encode()).hex()[:12])

    def __repr__(self):
        return "Source(%s)" % self.url


def sources_files(root: Root) -> str:
    """Where pm looks for sources in ``root``, for a message."""
    return "%s or %s/*.list" % (root.host_path(SOURCES_LIST), root.host_path(SOURCES_DIR))


def read_sources(root: Root, extra=()) -> list:
    """The sources of the root, in order: each etc/pm/sources.list.d/*.list by name, then
    etc/pm/sources.list (which OpenOS pm-get also reads: one repository URL a line, each
    holding a Lua ``manifest`` index), then ``extra`` URLs (--repository, taken relative
    to the working directory).  Lines are ``[OPTION ...] URL``, the options
    ``trusted=yes|no`` and ``signed-by=KEYNUM``; ``#`` starts a comment; the first file
    listing a repository gives its options.  A malformed line is InvalidInput naming the
    file and line."""
    files = []
    try:
        files += [SOURCES_DIR + "/" + n for n in sorted(root.listdir(SOURCES_DIR)) if n.endswith(".list")]
    except (FileNotFoundError, NotADirectoryError):
        pass
    files.append(SOURCES_LIST)
    sources, seen = [], set()
    for path in files:
        try:
            data = root.read(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            data = None
        if data is None:
            continue
        for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            source = _source_line(line, "%s line %d: " % (root.host_path(path), number), path)
            if source is not None and source.location not in seen:
                seen.add(source.location)
                sources.append(source)
    for url in extra:
        if "://" not in url:
            url = os.path.abspath(url)
        source = Source(url, trusted=False, transient=True, where="--repository: ")
        if source.location not in seen:
            seen.add(source.location)
            sources.append(source)
    return sources


def _source_line(line: str, where: str, origin: str = ""):
    line = line.split("#", 1)[0].strip()
    if not line:
        return None
    options = {}
    if line.startswith("["):
        end = line.find("]")
        if end < 0:
            raise InvalidInput(where + "unclosed '[' in the options")
        for option in line[1:end].split():
            key, sep, value = option.partition("=")
            if not (key == "trusted" and value in ("yes", "no")
                    or key == "signed-by" and _matches(KEYNUM_PATTERN, value)):
                raise InvalidInput(where + "unknown option %r (known: trusted=yes|no, signed-by=KEYNUM "
                                   "with the 16 hex digits pm key list shows)" % option)
            options[key] = value
        line = line[end + 1:].strip()
    if not line or len(line.split()) != 1:
        raise InvalidInput(where + "expected '[trusted=yes] URL' or '[signed-by=KEYNUM] URL'")
    if options.get("trusted") == "yes" and "signed-by" in options:
        raise UsageError(where + "signed-by= and trusted=yes contradict each other: a source is either "
                         "pinned to a key or accepted unsigned")
    return Source(line, trusted=options.get("trusted") == "yes", where=where, signed_by=options.get("signed-by"),
                  origin=origin)


# -- signatures and trust --------------------------------------------------------------
#
# Keys and signatures are those of OpenBSD signify and OpenWrt usign (ed25519): a file of
# two lines, "untrusted comment: ..." and the base64 of "Ed", an 8-byte key number and
# the 32-byte public key (a key) or the 64-byte signature of a file's bytes (INDEX.sig).
# The keys a root trusts are the files in etc/pm/keys.  Once one is there (or pm.conf
# says require_signatures = yes), a source's index must come with a signature by a
# trusted key (by its [signed-by=KEYNUM] where the line names one), unless the line says
# [trusted=yes].  A signed index carries `serial` and `valid_until`; var/lib/pm/trust/
# keeps, per source, the serial and content digest of the newest signed index pm
# accepted: outside the cache, so wiping var/cache/pm does not let an older index back.

KEYS_DIR = "/etc/pm/keys"
TRUST_DIR = DB_DIR + "/trust"
SIGNATURE_SUFFIX = ".sig"
SIGNIFY_ALGORITHM = b"Ed"
SIGNIFY_COMMENT = "untrusted comment: "
KEYNUM_PATTERN = r"^[0-9a-fA-F]{16}$(?!\n)"
VALID_UNTIL_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
SIGNED_KINDS = (INDEX_MSGPACK, INDEX_JSON)     # the Lua index stays unsigned (OpenOS cannot check)


def parse_signify(data: bytes, what: str, length: int) -> tuple:
    """(comment, decoded bytes) of a signify file of ``length`` decoded bytes starting
    with "Ed"; InvalidInput naming ``what`` for anything else."""
    import base64
    import binascii
    if len(data) > MAX_SIGNIFY_FILE:
        raise InvalidInput("%s is larger than %d bytes: not a signify file" % (what, MAX_SIGNIFY_FILE))
    try:
        lines = data.decode("ascii").split("\n")
    except UnicodeDecodeError:
        raise InvalidInput("%s is not a signify file (not ASCII text)" % what) from None
    if lines[-1] == "":
        lines.pop()
    if len(lines) != 2 or not lines[0].startswith(SIGNIFY_COMMENT) or has_control_chars(lines[0]):
        raise InvalidInput("%s is not a signify file (expected an 'untrusted comment: ...' line and "
                           "one base64 line)" % what)
    try:
        raw = base64.b64decode(lines[1], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("%s is not a signify file (its second line is not base64)" % what) from None
    if len(raw) != length or raw[:2] != SIGNIFY_ALGORITHM:
        raise InvalidInput("%s is not an ed25519 signify file (%d bytes, %r; expected %d, 'Ed')"
                           % (what, len(raw), raw[:2], length))
    return lines[0][len(SIGNIFY_COMMENT):], raw


def signify_text(comment: str, raw: bytes) -> bytes:
    """A signify file: the comment line and the base64 line."""
    import base64
    return ("%s%s\n%s\n" % (SIGNIFY_COMMENT, comment, base64.b64encode(raw).decode())).encode("ascii")


class SignifyKey:
    """A public key: ``keynum`` (8 bytes), ``public`` (32), ``comment`` and its ``file``."""

    def __init__(self, keynum: bytes, public: bytes, comment: str, file: str = ""):
        self.keynum, self.public, self.comment, self.file = keynum, public, comment, file

    @property
    def number(self) -> str:
        """The key number as pm shows it and sources.list pins it: 16 hex digits."""
        return self.keynum.hex()

    @classmethod
    def parse(cls, data: bytes, what: str, file: str = "") -> "SignifyKey":
        """The key of the signify public key file ``data``; InvalidInput naming
        ``what`` when it is not one."""
        comment, raw = parse_signify(data, what, 2 + 8 + 32)
        return cls(raw[2:10], raw[10:], comment, file)

    def as_json(self) -> dict:
        """The key in --json: ``keynum`` (16 hex digits), ``comment`` and ``file``."""
        return {"keynum": self.number, "comment": self.comment, "file": self.file}


def trusted_keys(root: Root) -> list:
    """The keys in etc/pm/keys (every regular file not starting with a dot, and not a
    temporary file of `pm key add`), by file name; a file that is not a signify public
    key is InvalidInput naming it."""
    try:
        names = sorted(n for n in root.listdir(KEYS_DIR) if not n.startswith(".") and not n.endswith(".tmp"))
    except (FileNotFoundError, NotADirectoryError):
        return []
    if len(names) > MAX_TRUSTED_KEYS:
        raise InvalidInput("%s holds more than %d files" % (root.host_path(KEYS_DIR), MAX_TRUSTED_KEYS))
    keys = []
    for name in names:
        path = KEYS_DIR + "/" + name
        st = root.lstat(path)
        if st is None or not stat.S_ISREG(st.st_mode):
            continue
        data = root.read(path)
        if data is not None:
            keys.append(SignifyKey.parse(data, "the trusted key " + root.host_path(path), root.host_path(path)))
    return keys


def _signature_tool() -> list | None:
    import shutil
    for name in ("signify", "signify-openbsd", "usign"):
        found = shutil.which(name)
        if found:
            return [found]
    return None


def ed25519_verify(key: SignifyKey, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` (64 bytes) is the key's signature of ``message``: with the
    ``cryptography`` package, else with a signify or usign command on PATH."""
    try:
        import importlib
        ed25519 = importlib.import_module("cryptography.hazmat.primitives.asymmetric.ed25519")
        invalid = importlib.import_module("cryptography.exceptions").InvalidSignature
    except ImportError:
        return _verify_with_tool(key, signature, message)
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(key.public).verify(signature, message)
        return True
    except (invalid, ValueError):
        return False


def _verify_with_tool(key: SignifyKey, signature: bytes, message: bytes) -> bool:
    import subprocess
    import tempfile
    tool = _signature_tool()
    if tool is None:
        raise PmError("checking signed indexes needs the Python package 'cryptography' (pip install "
                      "cryptography), or a signify or usign command on PATH")
    with tempfile.TemporaryDirectory(prefix="pm-verify-") as work:
        files = {"key.pub": signify_text("pm", SIGNIFY_ALGORITHM + key.keynum + key.public),
                 "index.sig": signify_text("pm", SIGNIFY_ALGORITHM + key.keynum + signature),
                 "index": message}
        for name, data in files.items():
            with open(os.path.join(work, name), "wb") as f:
                f.write(data)
        command = tool + ["-V", "-q", "-p", os.path.join(work, "key.pub"), "-x", os.path.join(work, "index.sig"),
                          "-m", os.path.join(work, "index")]
        try:
            proc = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, timeout=SIGNATURE_TOOL_SECONDS)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise PmError("cannot run %s to check a signature: %s" % (tool[0], e)) from None
    return proc.returncode == 0


def _yes_no(settings: dict, name: str, default: bool, root: Root) -> bool:
    value = settings.get(name)
    if value is None or value == "":
        return default
    if value not in ("yes", "no"):
        raise InvalidInput("%s: %s = %r: expected yes or no" % (root.host_path(PM_CONF), name, value))
    return value == "yes"


class Trust:
    """What a root trusts: ``keys`` (etc/pm/keys) and the policy of pm.conf:
    ``required`` (require_signatures, default: yes once a key is trusted) and ``fresh``
    (require_fresh: an expired index is refused rather than used with a warning)."""

    def __init__(self, root: Root):
        self.root = root
        self.keys = trusted_keys(root)
        settings = read_settings(root)
        self.required = _yes_no(settings, "require_signatures", bool(self.keys), root)
        self.fresh = _yes_no(settings, "require_fresh", False, root)

    def needs_signature(self, source: Source) -> bool:
        """Whether the index of ``source`` must be signed: the source is pinned to a key
        (signed-by), or signatures are required and it is not marked trusted=yes."""
        return source.signed_by is not None or (self.required and not source.trusted)

    def check(self, source: Source, kind: str, data: bytes, signature: bytes | None,
              out: Output) -> SignifyKey | None:
        """The trusted key whose signature of the index ``data`` is ``signature``, or
        None when the source needs none; InvalidInput naming the source and why when
        the signature is missing, malformed, wrong or by a key not trusted."""
        if not self.needs_signature(source):
            if source.trusted and self.required:
                out.warn("%s is marked [trusted=yes]: its index is used without a signature check" % source.url)
            return None

        def refuse(why):
            raise InvalidInput("%s: refused: %s" % (source.url, why))
        if kind not in SIGNED_KINDS:
            refuse("it offers only the unsigned %s index, and its index must be signed" % kind)
        if signature is None:
            refuse("%s has no signature (%s)%s" % (kind, kind + SIGNATURE_SUFFIX,
                   " and the source is pinned to key %s" % source.signed_by if source.signed_by
                   else "; signatures are required once a key is trusted (etc/pm/keys)"))
        try:
            _, raw = parse_signify(signature, kind + SIGNATURE_SUFFIX, 2 + 8 + 64)
        except InvalidInput as e:
            refuse("malformed signature: " + e.message)
        keynum = raw[2:10].hex()
        if source.signed_by is not None and keynum != source.signed_by:
            refuse("%s is signed by key %s, but the source is pinned to key %s (signed-by)"
                   % (kind, keynum, source.signed_by))
        key = next((k for k in self.keys if k.number == keynum), None)
        if key is None:
            refuse("%s is signed by key %s, which is not trusted (pm key add FILE.pub)" % (kind, keynum))
        if not ed25519_verify(key, raw[10:], data):
            refuse("the signature %s does not match %s: tampered with, or not signed by key %s"
                   % (kind + SIGNATURE_SUFFIX, kind, keynum))
        return key

    def check_serial(self, source: Source, meta: dict, content: str, out: Output) -> dict:
        """The trust record of a signed index (serial, valid_until, content digest)
        after the rollback and freeze checks against the record pm keeps."""
        def refuse(why):
            raise InvalidInput("%s: refused: %s" % (source.url, why))
        serial, valid_until = meta.get("serial", 0), meta.get("valid_until")
        if not isinstance(serial, int) or isinstance(serial, bool) or not 0 <= serial <= MAX_SERIAL:
            refuse("the index has a bad serial %r" % (serial,))
        if valid_until is not None:
            expires = parse_valid_until(valid_until)
            if expires is None:
                refuse("the index has a bad valid_until %r (expected YYYY-MM-DDTHH:MM:SSZ)" % (valid_until,))
        record = read_trust_record(self.root, source)
        if record is not None:
            if serial < record["serial"]:
                refuse("the index (serial %d) is older than the one already trusted (serial %d): replay?"
                       % (serial, record["serial"]))
            if serial == record["serial"] and content != record["content"]:
                refuse("the index has serial %d like the one already trusted, but other contents: replay, "
                       "or a repository rebuilt without a new serial?" % serial)
        self.check_fresh(source, valid_until, out)
        return {"url": source.location, "serial": serial, "valid_until": valid_until, "content": content}

    def check_fresh(self, source: Source, valid_until, out: Output, cached: bool = False) -> None:
        """Refuse an expired index (require_fresh = yes), or warn naming its age.  A
        cached one is refused as a PmError: the source is left out, the command goes on."""
        import time
        what = "the cached index of %s" % source.url if cached else "the index of %s" % source.url
        error = PmError if cached else InvalidInput
        if valid_until is None:
            if self.fresh:
                raise error("%s: refused: %s has no valid_until, and require_fresh = yes"
                                   % (source.url, what))
            return
        expires = parse_valid_until(valid_until)
        age = time.time() - expires if expires is not None else 0
        if age > 0:
            if self.fresh:
                raise error("%s: refused: %s expired %s ago (valid_until %s), and require_fresh = yes"
                                   % (source.url, what, describe_age(age), valid_until))
            out.warn("%s expired %s ago (valid_until %s); using it" % (what, describe_age(age), valid_until))


def parse_valid_until(text) -> float | None:
    """The POSIX time of a ``valid_until`` (UTC, YYYY-MM-DDTHH:MM:SSZ), or None."""
    import calendar
    import time
    if not isinstance(text, str) or len(text) != 20:
        return None
    try:
        return float(calendar.timegm(time.strptime(text, VALID_UNTIL_FORMAT)))
    except (ValueError, OverflowError):
        return None


def describe_age(seconds: float) -> str:
    """``3 days``, ``5 hours``, ``12 minutes``: an age in seconds for a message (days from two days
    on, hours from two hours on, at least one minute)."""
    if seconds >= 2 * 86400:
        return "%d days" % (seconds // 86400)
    if seconds >= 2 * 3600:
        return "%d hours" % (seconds // 3600)
    return "%d minutes" % max(1, seconds // 60)


def index_content_digest(entries: list, meta: dict) -> str:
    """A digest of what an index says, whichever file (msgpack or JSON) said it."""
    import json
    text = json.dumps({"packages": entries, "serial": meta.get("serial", 0), "valid_until": meta.get("valid_until")},
                      sort_keys=True, separators=(",", ":"), default=repr)
    return sha256_bytes(text.encode("utf-8")).hex()


def read_trust_record(root: Root, source: Source) -> dict | None:
    """What pm last accepted of a source's signed indexes (var/lib/pm/trust/SLUG), or None."""
    import json
    path = TRUST_DIR + "/" + source.slug
    data = root.read(path)
    if data is None:
        return None
    try:
        record = json.loads(data.decode("utf-8"))
        if record["url"] != source.location:
            return None
        serial = record["serial"]
        if not isinstance(serial, int) or isinstance(serial, bool) or not isinstance(record["content"], str):
            raise ValueError
        return record
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise InvalidInput("the trust record %s is damaged; remove it to accept the next signed index of %s "
                           "whatever its serial" % (root.host_path(path), source.url)) from None


def write_trust_record(root: Root, source: Source, record: dict, sync: bool) -> None:
    """Replace the trust record of ``source`` (var/lib/pm/trust/SLUG; the directory is made when
    missing) by ``record`` as JSON, atomically; fsynced with ``sync``."""
    import json
    atomic_write(root.dir_fd(TRUST_DIR, 0o755), source.slug,
                 (json.dumps(record, sort_keys=True) + "\n").encode("utf-8"), sync, kind="trust")


# -- indexes ---------------------------------------------------------------------------

class LuaIndexParser(LuaLiteralParser):
    """The OpenOS Lua index: one table of manifests, so many more values than one manifest."""

    max_items = MAX_INDEX_ITEMS


def parse_index(data: bytes, kind: str, source: Source, out: Output, meta: dict | None = None) -> list:
    """The entries of an index file (``kind`` is its file name): dicts with ``filename``,
    ``size``, ``sha256`` (hex; None only from a trusted source) and ``manifest``.  Every
    field is checked; anything malformed is InvalidInput naming the source.  ``meta``,
    when given, receives the index's ``serial`` and ``valid_until`` (checked by Trust)."""
    where = "the index %s of %s" % (kind, source.url)
    if len(data) > MAX_INDEX_BYTES:
        raise InvalidInput("%s is larger than %d bytes" % (where, MAX_INDEX_BYTES))
    try:
        if kind == INDEX_MSGPACK:
            document = _unpack_index(data)
        elif kind == INDEX_JSON:
            import json
            # An upper bound of the values the text holds, counted before json allocates any.
            values = 1 + sum(data.count(c) for c in (b",", b":", b"[", b"{"))
            if values > MAX_INDEX_ITEMS:
                raise InvalidInput("holds more than %d values" % MAX_INDEX_ITEMS)
            document = json.loads(data.decode("utf-8"))
        else:
            table = LuaIndexParser(data.decode("utf-8").lstrip("\ufeff")).parse()
            document = {"format": INDEX_FORMAT, "packages": _lua_index_entries(table)}
    except InvalidInput as e:
        raise InvalidInput("%s: %s" % (where, e.message)) from None
    except (ValueError, TypeError, UnicodeDecodeError, RecursionError) as e:
        raise InvalidInput("%s is malformed (%s)" % (where, e)) from None
    if not isinstance(document, dict) or document.get("format") != INDEX_FORMAT \
            or not isinstance(document.get("packages"), list):
        raise InvalidInput("%s is not a format %d pm index" % (where, INDEX_FORMAT))
    if len(document["packages"]) > MAX_INDEX_ENTRIES:
        raise InvalidInput("%s lists more than %d packages" % (where, MAX_INDEX_ENTRIES))
    entries = [_checked_entry(raw, where, source) for raw in document["packages"]]
    if meta is not None:
        meta.update((k, document[k]) for k in ("serial", "valid_until") if k in document)
    unchecked = sum(1 for e in entries if e["sha256"] is None)
    if unchecked:
        out.warn("%s has no checksums for %d package%s; accepted because the source is "
                 "trusted=yes" % (where, unchecked, "" if unchecked == 1 else "s"))
    return entries


class _LimitedReader:
    """A file-like view of a decompressing stream that fails past ``limit`` bytes."""

    def __init__(self, inner, limit: int, errors: tuple):
        self.inner, self.limit, self.errors, self.produced = inner, limit, errors, 0

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` decompressed bytes (everything up to the limit when ``n`` is negative);
        InvalidInput when the data is corrupt or expands past ``limit``."""
        try:
            data = self.inner.read(min(n, self.limit + 1 - self.produced) if n >= 0 else self.limit + 1)
        except self.errors as e:
            raise InvalidInput("corrupt zstd data (%s)" % e) from None
        self.produced += len(data)
        if self.produced > self.limit:
            raise InvalidInput("expands past %d bytes" % self.limit)
        return data


def _count_values(value, budget: int) -> int:
    """The values in ``value`` (containers included); InvalidInput past ``budget``."""
    count, stack = 0, [value]
    while stack:
        node = stack.pop()
        count += 1
        if count > budget:
            raise InvalidInput("holds more than %d values" % MAX_INDEX_ITEMS)
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


def _unpack_index(data: bytes) -> dict:
    """A msgpack index decompressed and decoded as a stream, bounded before it
    allocates: MAX_INDEX_BYTES decompressed, MAX_INDEX_ENTRY_BYTES per entry, and
    MAX_INDEX_ITEMS values in all, counted entry by entry."""
    zstd = lazy_import("zstandard", "reading a repository index")
    import io
    _check_zstd_frames(io.BytesIO(data))
    reader = _LimitedReader(zstd.ZstdDecompressor().stream_reader(data, read_across_frames=True),
                            MAX_INDEX_BYTES, (zstd.ZstdError,))
    return _unpack_bounded(reader, "packages")


def _unpack_bounded(reader, list_key: str) -> dict:
    """A msgpack map read from the file-like ``reader`` as a stream, its ``list_key``
    list entry by entry: MAX_INDEX_ENTRY_BYTES per entry, MAX_INDEX_ITEMS values in all."""
    msgpack = _msgpack()
    unpacker = msgpack.Unpacker(reader, raw=False, strict_map_key=True, read_size=1 << 16,
                                max_buffer_size=MAX_INDEX_ENTRY_BYTES)
    try:
        budget = MAX_INDEX_ITEMS
        document = {}
        for _ in range(unpacker.read_map_header()):
            key = unpacker.unpack()
            if key == list_key:
                length = unpacker.read_array_header()
                if length > MAX_INDEX_ENTRIES:
                    raise InvalidInput("lists more than %d packages" % MAX_INDEX_ENTRIES)
                budget -= 1
                packages = []
                for _ in range(length):
                    entry = unpacker.unpack()
                    budget -= _count_values(entry, budget)
                    packages.append(entry)
                value = packages
            else:
                value = unpacker.unpack()
                budget -= _count_values(value, budget)
            document[key] = value
        try:
            unpacker.unpack()
        except msgpack.OutOfData:
            return document
        raise InvalidInput("has data after its end")
    except msgpack.OutOfData:
        raise InvalidInput("is truncated") from None
    except msgpack.exceptions.BufferFull:
        raise InvalidInput("has an entry larger than %d bytes" % MAX_INDEX_ENTRY_BYTES) from None
    except msgpack.UnpackException as e:
        raise InvalidInput("is malformed (%s)" % (e or type(e).__name__)) from None


def _lua_index_entries(table) -> list:
    """Entries from an OpenOS index ``{name = {manifest..., archiveName = "x.tar"}}``."""
    if not isinstance(table, dict):
        raise InvalidInput("not a table of packages")
    entries = []
    for name in sorted(table):
        fields = table[name]
        if not isinstance(fields, dict):
            raise InvalidInput("the entry %r is not a table" % (name,))
        manifest = {k: v for k, v in fields.items() if k not in ("archiveName", "size", "sha256")}
        for field in ("configFiles", "provides"):      # Lua's {} is an empty list too
            if manifest.get(field) == {}:
                manifest[field] = []
        entries.append({"filename": fields.get("archiveName"), "size": fields.get("size"),
                        "sha256": fields.get("sha256"), "manifest": manifest})
    return entries


def _checked_entry(raw, where: str, source: Source) -> dict:
    if not isinstance(raw, dict):
        raise InvalidInput("%s: an entry is not a table" % where)
    manifest = raw.get("manifest")
    try:
        validate_manifest(manifest)
    except InvalidInput as e:
        raise InvalidInput("%s: entry %r: %s" % (where, raw.get("filename"), e.message)) from None
    label = "%s: %s %s" % (where, manifest["package"], manifest["version"])
    filename, size, digest = raw.get("filename"), raw.get("size"), raw.get("sha256")
    if not _matches(FILENAME_PATTERN, filename):
        raise InvalidInput("%s: bad file name %r" % (label, filename))
    if digest is None and size is None and source.trusted:
        return {"filename": filename, "size": None, "sha256": None, "manifest": manifest}
    if digest is None or size is None:
        hint = "" if source.origin != SOURCES_LIST else (
            "; %s is pm-get's file too: list it as '[trusted=yes] %s' in a file of %s/, which pm reads first"
            % (SOURCES_LIST, source.url, SOURCES_DIR))
        raise InvalidInput("%s: no size and sha256 (mark the source [trusted=yes] to accept "
                           "an index without checksums%s)" % (label, hint))
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_TOTAL_BYTES:
        raise InvalidInput("%s: bad size %r" % (label, size))
    if not _matches(SHA256_PATTERN, digest):
        raise InvalidInput("%s: bad sha256 %r" % (label, digest))
    installed_size = raw.get("installed_size")       # optional: what the files take, for summaries
    if installed_size is not None and (not isinstance(installed_size, int) or isinstance(installed_size, bool)
                                       or not 0 <= installed_size <= MAX_TOTAL_BYTES):
        raise InvalidInput("%s: bad installed_size %r" % (label, installed_size))
    return {"filename": filename, "size": size, "sha256": digest, "manifest": manifest,
            "installed_size": installed_size}


def _index_kinds() -> tuple:
    """The index files to look for, best first (the msgpack one needs zstandard)."""
    import importlib.util
    if importlib.util.find_spec("zstandard") is not None:
        return (INDEX_MSGPACK, INDEX_JSON, INDEX_LUA)
    return (INDEX_JSON, INDEX_LUA)


def fetch_index(source: Source, out: Output, trust: Trust | None = None) -> list:
    """Read a source's index from the source itself (directory or network), checked
    against what the root trusts when ``trust`` is given."""
    return fetch_checked_index(source, out, trust)[0]


def _read_source_file(source: Source, name: str, limit: int) -> bytes | None:
    if source.kind == "dir":
        return _read_local(os.path.join(source.location, name), limit)
    return http_get(source.location + "/" + name, limit)


def fetch_checked_index(source: Source, out: Output, trust: Trust | None) -> tuple:
    """(entries, trust record) of a source's index: the record (serial, valid_until,
    digest, key) when its signature was checked, else None."""
    unsigned = None                   # the first index found without its signature
    for kind in _index_kinds():
        if unsigned is not None and kind not in SIGNED_KINDS:
            break
        data = _read_source_file(source, kind, MAX_INDEX_BYTES)
        if data is not None:
            out.detail("read %s from %s" % (kind, source.url))
            if trust is None or not trust.needs_signature(source):
                if trust is not None:
                    trust.check(source, kind, data, None, out)      # the [trusted=yes] warning
                return parse_index(data, kind, source, out), None
            signature = None
            if kind in SIGNED_KINDS:
                signature = _read_source_file(source, kind + SIGNATURE_SUFFIX, MAX_SIGNIFY_FILE)
                if signature is None:         # another index of the source may be signed
                    unsigned = unsigned or (kind, data)
                    continue
            key = trust.check(source, kind, data, signature, out)
            meta = {}
            entries = parse_index(data, kind, source, out, meta)
            record = trust.check_serial(source, meta, index_content_digest(entries, meta), out)
            record["keynum"] = key.number
            return entries, record
    if unsigned is not None:
        trust.check(source, unsigned[0], unsigned[1], None, out)    # refused: no signature
    raise PmError("%s has no index (%s); build one with tools/repoPackager.py"
                  % (source.url, ", ".join(_index_kinds())))


def _read_local(path: str, limit: int) -> bytes | None:
    try:
        with open_host_file(path) as f:
            data = f.read(limit + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if len(data) > limit:
        raise InvalidInput("%s is larger than %d bytes" % (path, limit))
    return data


def cached_index(root: Root, source: Source, trust: Trust | None = None, out: Output | None = None) -> list | None:
    """A remote source's entries as `pm update` stored them, or None (also when
    ``trust`` needs a signature the cached index was not checked against)."""
    try:
        st = root.lstat(INDEX_CACHE_DIR + "/" + source.slug)
        if st is not None and st.st_size > 2 * MAX_INDEX_BYTES:
            raise InvalidInput("the cached index %s is damaged; run pm update" %
                               root.host_path(INDEX_CACHE_DIR + "/" + source.slug))
        data = root.read(INDEX_CACHE_DIR + "/" + source.slug)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if data is None:
        return None
    try:
        import io
        if len(data) > 2 * MAX_INDEX_BYTES:
            raise ValueError("too large")
        document = _unpack_bounded(io.BytesIO(data), "entries")
        if document.get("format") != INDEX_FORMAT or document.get("url") != source.location:
            return None
        entries = document["entries"]
        if not source.trusted and any(e["sha256"] is None for e in entries):
            return None               # cached while the source was trusted=yes
        if trust is not None and trust.needs_signature(source):
            keynum = document.get("keynum")
            if not any(k.number == keynum for k in trust.keys) or \
                    source.signed_by is not None and keynum != source.signed_by:
                if out is not None:
                    out.warn("the cached index of %s was not signed by a key trusted now; run pm update"
                             % source.url)
                return None
            record = read_trust_record(root, source)
            meta = {"serial": document.get("serial", 0), "valid_until": document.get("valid_until")}
            if record is None or record.get("keynum") != keynum or \
                    index_content_digest(entries, meta) != record["content"]:
                if out is not None:
                    out.warn("the cached index of %s is not the one pm last accepted (%s); run pm update"
                             % (source.url, root.host_path(TRUST_DIR)))
                return None
            trust.check_fresh(source, document.get("valid_until"), out or Output(verbosity=-1), cached=True)
        elif trust is not None and source.trusted and trust.required and out is not None:
            out.warn("%s is marked [trusted=yes]: its index is used without a signature check" % source.url)
        return entries
    except (ValueError, TypeError, KeyError, AttributeError, InvalidInput):
        raise InvalidInput("the cached index %s is damaged; run pm update" %
                           root.host_path(INDEX_CACHE_DIR + "/" + source.slug)) from None


def store_index(root: Root, source: Source, entries: list, sync: bool, record: dict | None = None) -> None:
    """Keep a remote source's checked entries in the cache, all at once, with the key
    and valid_until of a signed index (``record``)."""
    document = {"format": INDEX_FORMAT, "url": source.location, "entries": entries}
    if record is not None:
        document.update(keynum=record["keynum"], serial=record["serial"], valid_until=record["valid_until"])
    data = _msgpack().packb(document, use_bin_type=True)
    try:
        atomic_write(root.dir_fd(INDEX_CACHE_DIR, 0o755), source.slug, data, sync, kind="cache")
    except OSError as e:
        raise PmError("keeping the index of %s in %s failed: %s" % (
            source.url, root.host_path(INDEX_CACHE_DIR + "/" + source.slug), e.strerror or e)) from None


def source_entries(root: Root, source: Source, out: Output, trust: Trust | None = None) -> list:
    """The entries a command sees: a local or transient source read now, a remote one
    from the cache (with a warning when `pm update` has not fetched it yet), checked
    against what the root trusts."""
    trust = trust or Trust(root)
    if source.kind == "dir" or source.transient:
        return fetch_index(source, out, trust)
    entries = cached_index(root, source, trust, out)
    if entries is None:
        out.warn("no index of %s in the cache; run pm update%s" % (
            source.url, " (it is listed in %s)" % source.origin if source.origin else ""))
        return []
    return entries


def update_sources(root: Root, sources: list, out: Output, dry_run: bool, sync: bool,
                   lock=None) -> list:
    """`pm update`: fetch every source's index and keep the remote ones in the cache
    (unless ``dry_run``); remove what the cache holds of sources no longer listed and
    packages their indexes no longer list.  Returns one report per source; a source
    that fails keeps its old cache and reports its error.  Every index is fetched and
    checked before ``lock()``, when given, is called to take the root's lock for the cache."""
    reports, fetched = [], []
    trust = Trust(root)
    for source in sources:
        report = {"url": source.url, "kind": source.kind, "packages": None, "error": None,
                  "exit_code": EXIT_OK, "serial": None, "signed_by": None, "origin": source.origin}
        try:
            entries, record = fetch_checked_index(source, out, trust)
            report["packages"] = len(entries)
            if record is not None:
                report["serial"], report["signed_by"] = record["serial"], record["keynum"]
            if not dry_run and not source.transient and (source.kind == "http" or record is not None):
                fetched.append((source, entries, record, report))
        except PmError as e:
            report["error"], report["exit_code"] = e.message, e.exit_code
        reports.append(report)
    if lock is not None:
        lock()
    for source, entries, record, report in fetched:
        try:
            if source.kind == "http":
                store_index(root, source, entries, sync, record)
                _prune(root, PACKAGE_CACHE_DIR + "/" + source.slug, {e["filename"] for e in entries})
            if record is not None:
                write_trust_record(root, source, record, sync)
        except PmError as e:
            report["error"], report["exit_code"] = e.message, e.exit_code
    if not dry_run:
        wanted = {s.slug for s in sources}
        _prune(root, INDEX_CACHE_DIR, wanted)
        try:
            for slug in root.listdir(PACKAGE_CACHE_DIR):
                if slug not in wanted:
                    _prune(root, PACKAGE_CACHE_DIR + "/" + slug, ())
                    root.rmdir(PACKAGE_CACHE_DIR + "/" + slug)
        except (FileNotFoundError, NotADirectoryError):
            pass
    return reports


def _prune(root: Root, directory: str, wanted) -> None:
    """Remove the files of a cache directory not ``wanted`` (a partial download counts
    as its file)."""
    try:
        names = root.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return
    for name in names:
        base = name[:-len(PARTIAL_SUFFIX)] if name.endswith(PARTIAL_SUFFIX) else name
        if base not in wanted:
            root.unlink(directory + "/" + name)


def build_pool(root: Root, db: Database, out: Output, sources: list, packages=(),
               any_architecture: bool = False) -> Pool:
    """A Pool of the installed packages, the package files given (``packages``) and
    every candidate the sources offer for the root's architecture (any, with
    ``any_architecture``).  A source that cannot be reached is left out with a warning
    (an unmounted medium, a server down); a malformed index is InvalidInput."""
    pool = Pool(None if any_architecture else root_architecture(root))
    for name, record in sorted(db.installed().items()):
        pool.add(Candidate(record.manifest, installed=True))
    for package in packages:
        pool.add(Candidate(package.manifest, package=package))
    trust = Trust(root) if sources else None
    for source in sources:
        try:
            entries = source_entries(root, source, out, trust)
        except InvalidInput:
            raise
        except PmError as e:
            out.warn("%s; its packages are not offered" % e.message)
            continue
        for entry in entries:
            pool.add(Candidate(entry["manifest"], source=source, entry=entry))
    return pool


# -- fetching packages -----------------------------------------------------------------

_TLS = {"root": None, "ca": None, "context": None}


def configure_tls(root: Root | None, ca: str | None) -> None:
    """Where https:// certificates are checked: the CA bundle ``ca`` (--ca, a host
    path), else ``ca = PATH`` in the root's pm.conf (a path within the root), else
    the system's CAs."""
    _TLS.update(root=root, ca=ca, context=None)


def ssl_context():
    """The TLS context of every https:// transfer, made once: certificates and host
    names are always checked; a CA bundle that cannot be read is an error, never a
    fallback to no verification."""
    if _TLS["context"] is None:
        import ssl
        ca = _TLS["ca"]
        if ca is None and _TLS["root"] is not None:
            setting = read_settings(_TLS["root"]).get("ca")
            if setting:
                ca = _TLS["root"].host_path("/" + setting.lstrip("/"))
        try:
            if ca is None:
                context = ssl.create_default_context()
            elif os.path.isdir(ca):
                context = ssl.create_default_context(capath=ca)
            else:
                context = ssl.create_default_context(cafile=ca)
        except (OSError, ssl.SSLError) as e:
            raise PmError("cannot use the CA bundle %s: %s" % (ca, getattr(e, "strerror", None) or e)) from None
        context.check_hostname, context.verify_mode = True, ssl.CERT_REQUIRED
        _TLS["context"] = context
    return _TLS["context"]


def tls_problem(url: str, error) -> str | None:
    """One line naming the host and the reason when ``error`` is a TLS failure."""
    import ssl
    import urllib.parse
    if not isinstance(error, ssl.SSLError):
        return None
    host = urllib.parse.urlsplit(url).hostname
    if isinstance(error, ssl.SSLCertVerificationError):
        reason = error.verify_message or error.reason or str(error)
        return "cannot fetch %s: the TLS certificate of %s is not trusted: %s" % (url, host, reason)
    return "cannot fetch %s: TLS with %s failed: %s" % (url, host, error.reason or error)


def http_get(url: str, limit: int) -> bytes | None:
    """The body of ``url`` (at most ``limit`` bytes), or None when it is not found."""
    with TransferClock(url, limit) as clock:
        response = _http_open(url, {}, accept=(404, 410), clock=clock)
        if response is None:
            return None
        with response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > limit:
                raise InvalidInput("%s is larger than %d bytes" % (url, limit))
            body = bytearray()
            while True:
                chunk = _http_read(response, url, clock)
                if not chunk:
                    break
                if len(body) + len(chunk) > limit:
                    raise InvalidInput("%s is larger than %d bytes" % (url, limit))
                body += chunk
    if length is not None and length.isdigit() and int(length) != len(body):
        raise PmError("transfer of %s was interrupted after %d of %s bytes" % (url, len(body), length))
    return bytes(body)


class TransferTimeout(PmError):
    """A transfer went too slowly or too long (exit 1, as every network failure)."""


class TransferClock:
    """The time limits of one HTTP transfer: within every ``timeout`` seconds (connecting
    and the headers included) at least MIN_TRANSFER_RATE bytes a second must arrive, and
    the whole transfer ends by ``timeout + limit / MIN_TRANSFER_RATE`` seconds.  A
    server sending a byte now and then never trips a per-read socket timeout, so a
    SIGALRM timer checks the clock while pm waits on the network (main thread only;
    elsewhere the clock is checked after every chunk and the socket timeout remains)."""

    def __init__(self, url: str, limit: int, timeout: float | None = None):
        import time
        self.url = url
        self.timeout = float(timeout if timeout is not None else transfer_settings["timeout"])
        now = time.monotonic()
        self.deadline = now + self.timeout + limit / MIN_TRANSFER_RATE
        self.started, self.window_start, self.window_bytes = now, now, 0
        self.waiting = False
        self._previous = None

    def __enter__(self):
        import signal
        import threading
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
            self._previous = signal.signal(signal.SIGALRM, self._alarm)
            tick = min(1.0, self.timeout / 4)
            signal.setitimer(signal.ITIMER_REAL, tick, tick)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            import signal
            signal.setitimer(signal.ITIMER_REAL, 0, 0)
            signal.signal(signal.SIGALRM, self._previous)
            self._previous = None
        return False

    def _alarm(self, signum, frame) -> None:
        if self.waiting:
            self.check()

    def check(self) -> None:
        """Raise TransferTimeout when the transfer is past its deadline, or when a
        ``timeout`` window ended with fewer than MIN_TRANSFER_RATE bytes a second; a window
        that has ended starts the next one."""
        import time
        now = time.monotonic()
        if now > self.deadline:
            self.waiting = False
            raise TransferTimeout("cannot fetch %s: the transfer took longer than %d seconds "
                                  "(--timeout)" % (self.url, self.deadline - self.started))
        if now - self.window_start >= self.timeout:
            if self.window_bytes < MIN_TRANSFER_RATE * self.timeout:
                self.waiting = False
                raise TransferTimeout("cannot fetch %s: fewer than %d bytes in %g seconds (too slow; "
                                      "see --timeout)" % (self.url, MIN_TRANSFER_RATE * self.timeout,
                                                          self.timeout))
            self.window_start, self.window_bytes = now, 0

    def call(self, action, *args):
        """``action(*args)``, a wait on the network that the clock may interrupt."""
        self.waiting = True
        try:
            return action(*args)
        finally:
            self.waiting = False

    def received(self, n: int) -> None:
        """Count ``n`` bytes arrived in the current window, then check() (TransferTimeout)."""
        self.window_bytes += n
        self.check()


# Settings of this run for every transfer (section 17 sets them from --timeout or pm.conf).
transfer_settings = {"timeout": HTTP_TIMEOUT}


def _http_open(url: str, headers: dict, accept: tuple = (), clock: TransferClock | None = None):
    """The response to a GET of ``url``; None for an HTTP error status in ``accept``.
    Every failure — refused, malformed or hostile answers included — is one PmError
    naming the URL (exit 1)."""
    import http.client
    import urllib.error
    import urllib.request
    request = urllib.request.Request(url, headers=dict(headers, **{"User-Agent": "pm/" + __version__}))
    timeout = clock.timeout if clock is not None else transfer_settings["timeout"]
    try:
        context = ssl_context() if url.lower().startswith("https:") else None
        opener = lambda: urllib.request.urlopen(request, timeout=timeout, context=context)  # noqa: E731
        return clock.call(opener) if clock is not None else opener()
    except urllib.error.HTTPError as e:
        e.close()
        if e.code in accept:
            return None
        raise PmError("cannot fetch %s: HTTP %d %s" % (url, e.code, _printable(e.reason))) from None
    except urllib.error.URLError as e:
        if tls_problem(url, e.reason):
            raise PmError(tls_problem(url, e.reason)) from None
        reason = getattr(e.reason, "strerror", None) or e.reason
        raise PmError("cannot fetch %s: %s" % (url, _printable(reason))) from None
    except http.client.HTTPException as e:
        raise PmError("cannot fetch %s: a malformed HTTP answer (%s)"
                      % (url, _printable(e) or type(e).__name__)) from None
    except (OSError, ValueError) as e:
        raise PmError(tls_problem(url, e) or "cannot fetch %s: %s" % (url, _printable(e))) from None


def _printable(reason) -> str:
    """A server's words for one line of a message: control characters out, and short."""
    text = "".join(c if c.isprintable() else " " for c in str(reason))
    return text if len(text) <= 200 else text[:200] + "..."


def _http_read(response, url: str, clock: TransferClock | None = None) -> bytes:
    import http.client
    try:
        read = getattr(response, "read1", response.read)    # what has arrived, not a full chunk
        chunk = clock.call(read, DOWNLOAD_CHUNK) if clock is not None else read(DOWNLOAD_CHUNK)
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise PmError("transfer of %s was interrupted (%s)" % (url, _printable(e) or type(e).__name__)) from None
    if clock is not None:
        clock.received(len(chunk))
    return chunk


def package_url(source: Source, entry: dict) -> str:
    """Where the package of the index ``entry`` is: a host path in a directory source, else the
    source's URL and the quoted file name."""
    import urllib.parse
    if source.kind == "dir":
        return os.path.join(source.location, entry["filename"])
    return source.location + "/" + urllib.parse.quote(entry["filename"])


def verify_file(file, entry: dict, what: str) -> None:
    """InvalidInput unless the open ``file`` has the size and sha256 of its index
    ``entry`` (an entry of a trusted source without checksums is accepted)."""
    if entry["sha256"] is None:
        return
    size = os.fstat(file.fileno()).st_size
    if size != entry["size"]:
        raise InvalidInput("%s has %d bytes, but the index says %d: refused" % (what, size, entry["size"]))
    file.seek(0)
    if sha256_fd(file.fileno()).hex() != entry["sha256"]:
        raise InvalidInput("%s does not match the sha256 of the index: refused" % what)
    file.seek(0)


class Fetcher:
    """Brings the packages of chosen candidates to pm: opens local ones in place and
    downloads remote ones into the cache, or, for a dry run (``scratch``), into a
    temporary directory outside the root that ``close()`` removes."""

    def __init__(self, root: Root, out: Output, scratch: bool):
        self.root, self.out, self.scratch = root, out, scratch
        self._scratch_dir = None

    def close(self) -> None:
        """Remove the dry run's scratch directory with what was downloaded into it; nothing without
        one (calling it again is harmless)."""
        if self._scratch_dir is not None:
            import shutil
            shutil.rmtree(self._scratch_dir, ignore_errors=True)
            self._scratch_dir = None

    def fetch(self, candidate: Candidate, allow_setuid: bool = False) -> Package:
        """The checked Package of a candidate from a source; InvalidInput (exit 3) when
        it does not match its index entry, which is then not kept."""
        source, entry = candidate.source, candidate.entry
        if source.kind == "dir":
            path = package_url(source, entry)
            try:
                file = open_host_file(path)
            except FileNotFoundError:
                raise PmError("cannot read %s: %s" % (path, os.strerror(errno.ENOENT))) from None
            label = path
            try:
                verify_file(file, entry, label)
            except BaseException:
                file.close()
                raise
        else:
            label = package_url(source, entry)
            file = self._download(source, entry, label)
        checking = Progress(self.out, "checking " + os.path.basename(entry["filename"]), 0, unit="")
        try:
            package = Package(label, allow_setuid, file=file)
        except BaseException:
            file.close()
            raise
        finally:
            checking.finish()
        if (package.name, package.version.text) != (candidate.name, candidate.version.text):
            package.close()
            raise InvalidInput("%s holds %s %s, but the index of %s says %s %s" % (
                label, package.name, package.version, source.url, candidate.name, candidate.version))
        return package

    def _cache_dir(self, source: Source) -> int:
        """A new descriptor of the directory downloads of ``source`` go to."""
        if self.scratch:
            if self._scratch_dir is None:
                import tempfile
                self._scratch_dir = tempfile.mkdtemp(prefix="pm-dry-run-")
            return os.open(self._scratch_dir, _O_DIR)
        return os.dup(self.root.dir_fd(PACKAGE_CACHE_DIR + "/" + source.slug, 0o755))

    def _cached(self, source: Source, entry: dict, label: str):
        """The cached copy of the entry's file, open, when it is complete and matches;
        one that does not match is removed (except by a dry run)."""
        if entry["sha256"] is None:
            return None
        try:
            dir_fd = self.root.dir_fd(PACKAGE_CACHE_DIR + "/" + source.slug)
            fd = self.root._open_file(PACKAGE_CACHE_DIR + "/" + source.slug + "/" + entry["filename"])
        except (FileNotFoundError, NotADirectoryError):
            return None
        if fd is None:
            return None
        file = os.fdopen(fd, "rb", buffering=1 << 16)
        try:
            verify_file(file, entry, label)
            self.out.detail("using the cached %s" % entry["filename"])
            return file
        except InvalidInput:
            file.close()
            if not self.scratch:
                os.unlink(entry["filename"], dir_fd=dir_fd)
            return None

    def _download(self, source: Source, entry: dict, url: str):
        """An open, complete and checked copy of the entry's file: the cached one, or a
        download that resumes a partial one.  A copy that does not match its entry is
        removed and refused (after one fresh try when the download was resumed)."""
        cached = self._cached(source, entry, url)
        if cached is not None:
            return cached
        name, part = entry["filename"], entry["filename"] + PARTIAL_SUFFIX
        dir_fd = self._cache_dir(source)
        try:
            for attempt in (1, 2):
                resumed = self._transfer(url, dir_fd, part, entry)
                file = os.fdopen(os.open(part, _O_READ, dir_fd=dir_fd), "rb", buffering=1 << 16)
                try:
                    verify_file(file, entry, url)
                except InvalidInput:
                    file.close()
                    os.unlink(part, dir_fd=dir_fd)
                    if resumed and attempt == 1:
                        self.out.detail("the resumed download of %s did not match; starting again" % url)
                        continue
                    raise
                os.rename(part, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                return file
        finally:
            os.close(dir_fd)
        raise AssertionError("unreachable")

    def _transfer(self, url: str, dir_fd: int, part: str, entry: dict) -> bool:
        """Download ``url`` into ``part``, continuing what an interrupted run left there
        (HTTP Range) or starting over when the server cannot; True when it continued.
        The body stops at the size the index gives; an interruption keeps the partial
        file and is a PmError telling to run again, unless it cannot be resumed (no size
        in the index, a full disk, a server answering out of bounds): then it goes."""
        expected = entry["size"]
        fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                     0o664, dir_fd=dir_fd)
        keep = False
        try:
            import fcntl
            fcntl.flock(fd, fcntl.LOCK_EX)      # another pm downloading the same file: wait for it
            offset = os.fstat(fd).st_size
            if expected is None or offset >= expected:
                offset = 0
            _check_free_space(fd, url, (expected or 0) - offset)
            with TransferClock(url, (expected if expected is not None else MAX_TOTAL_BYTES) - offset) as clock:
                response = _http_open(url, {"Range": "bytes=%d-" % offset}, accept=(416,),
                                      clock=clock) if offset else None
                if response is None:
                    offset = 0
                    response = _http_open(url, {}, clock=clock)
                with response:
                    if offset and response.status == 206 and \
                            response.headers.get("Content-Range", "").startswith("bytes %d-" % offset):
                        self.out.detail("resuming %s at byte %d" % (url, offset))
                    elif response.status == 200:
                        offset = 0
                    else:                         # a range pm did not ask for: start over next time
                        os.ftruncate(fd, 0)
                        raise PmError("cannot fetch %s: unexpected HTTP %d; run the command again"
                                      % (url, response.status))
                    length = response.headers.get("Content-Length", "")
                    if expected is not None and length.isdigit() and offset + int(length) > expected:
                        raise InvalidInput("%s has %d bytes, but the index says %d: refused"
                                           % (url, offset + int(length), expected))
                    os.ftruncate(fd, offset)
                    os.lseek(fd, offset, os.SEEK_SET)
                    received = offset
                    progress = Progress(self.out, "downloading " + os.path.basename(entry["filename"]),
                                        expected or 0, unit="bytes")
                    progress.step(offset)
                    while True:
                        chunk = _http_read(response, url, clock)
                        if not chunk:
                            break
                        if expected is not None and received + len(chunk) > expected:
                            raise InvalidInput("%s sends more than the %d bytes the index says: refused"
                                               % (url, expected))
                        if expected is None:          # no size to stop at: the bounds of a package
                            if received + len(chunk) > MAX_TOTAL_BYTES:
                                raise InvalidInput("%s is larger than %d bytes" % (url, MAX_TOTAL_BYTES))
                            _check_free_space(fd, url, len(chunk))
                        received += len(chunk)
                        write_all(fd, chunk)
                        progress.step(len(chunk))
                    progress.finish()
            if expected is not None and received < expected:
                raise PmError("the download of %s was interrupted after %d of %d bytes; run the "
                              "command again to resume it" % (url, received, expected))
            keep = True
            return offset > 0
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise PmError("cannot download %s: no space left on the device of %s" % (
                    url, "the package cache" if not self.scratch else "the temporary directory")) from None
            raise
        except PmError as e:            # resumed by the next run only when the index gives the size
            keep = expected is not None and not isinstance(e, InvalidInput) and os.fstat(fd).st_size > 0
            raise
        finally:
            if not keep:
                try:
                    os.unlink(part, dir_fd=dir_fd)
                except OSError:
                    pass
            os.close(fd)


def _check_free_space(fd: int, url: str, needed: int) -> None:
    """PmError when writing ``needed`` more bytes beside ``fd`` would leave less than
    CACHE_RESERVE_BYTES free (a download never fills the disk)."""
    try:
        st = os.fstatvfs(fd)
    except OSError:
        return
    free = st.f_bavail * st.f_frsize
    if needed > 0 and free - needed < CACHE_RESERVE_BYTES:
        raise PmError("cannot download %s: it needs %d bytes, and only %d are free (pm keeps %d "
                      "free); free some space and run the command again" % (url, needed, free, CACHE_RESERVE_BYTES))


def upgradable_packages(root: Root, db: Database, sources: list) -> list:
    """``[{package, installed, available}]``: the installed packages of which ``sources``
    offer a newer release (prereleases left out), by name."""
    pool = build_pool(root, db, Output(verbosity=-1), sources)
    rows = []
    for name, installed in sorted(pool.installed.items()):
        newest = next((c for c in pool.candidates(name) if not c.version.prerelease), None)
        if newest is not None and newest.version > installed.version:
            rows.append({"package": name, "installed": installed.version.text, "available": newest.version.text})
    return rows


def search_packages(pool: Pool, words: list) -> list:
    """``[{package, version, description, installed, source}]``: the newest offered
    release (a prerelease only when nothing else is offered) of each package whose name,
    title or description holds every word (case-insensitive); hidden packages left out."""
    words = [w.lower() for w in words]
    rows = []
    for name in pool.names():
        offered = [c for c in pool.candidates(name) if not c.installed and not c.hidden]
        if not offered:
            continue
        newest = next((c for c in offered if not c.version.prerelease), offered[0])
        manifest = newest.manifest
        haystack = " ".join([name, str(manifest.get("name", "")), str(manifest.get("description", ""))]).lower()
        if not all(word in haystack for word in words):
            continue
        installed = pool.installed.get(name)
        rows.append({"package": name, "version": newest.version.text, "description": manifest.get("description", ""),
                     "installed": installed.version.text if installed else None, "source": newest.source.url})
    return rows


def clean_cache(root: Root, dry_run: bool, out: Output) -> tuple:
    """Empty the download cache (var/cache/pm/packages), as apt-get clean does; the
    indexes stay.  Returns ``(files removed, bytes freed)``; a dry run removes nothing and
    counts what it would.  Each file is named with -v."""
    removed, freed = 0, 0
    try:
        slugs = sorted(root.listdir(PACKAGE_CACHE_DIR))
    except (FileNotFoundError, NotADirectoryError):
        slugs = []
    for slug in slugs:
        directory = PACKAGE_CACHE_DIR + "/" + slug
        info = root.lstat(directory)
        if info is None:
            continue
        if not stat.S_ISDIR(info.st_mode):          # nothing but directories belongs here
            names, directory = [slug], PACKAGE_CACHE_DIR
        else:
            names = sorted(root.listdir(directory))
        for name in names:
            path = directory + "/" + name
            info = root.lstat(path)
            if info is None or stat.S_ISDIR(info.st_mode):
                continue
            out.detail("%s %s" % ("would remove" if dry_run else "remove", root.host_path(path)))
            if dry_run or root.unlink(path):
                removed += 1
                freed += info.st_size
        if directory != PACKAGE_CACHE_DIR and not dry_run:
            root.rmdir(directory)
    return removed, freed


def trust_key(root: Root, key: SignifyKey, data: bytes, filename: str, sync: bool) -> bool:
    """Trust ``key`` (read from ``filename``, whose bytes are ``data``): written to
    etc/pm/keys under its file's name (or KEYNUM.pub); False when it is trusted already.
    Refused when another key of its number is trusted, or the name is taken.  ``key.file``
    is set to where it is kept."""
    already = [k for k in trusted_keys(root) if k.number == key.number]
    if already and already[0].public != key.public:
        raise Refused("another key with the number %s is already trusted (%s); pm key remove %s first"
                      % (key.number, already[0].file, key.number))
    if already:
        key.file = already[0].file
        return False
    name = os.path.basename(filename)
    if not name.endswith(".pub") or not _matches(FILENAME_PATTERN, name) or root.lstat(KEYS_DIR + "/" + name):
        name = key.number + ".pub"
    if root.lstat(KEYS_DIR + "/" + name):
        raise Refused("%s already exists and is not this key" % root.host_path(KEYS_DIR + "/" + name))
    atomic_write(root.dir_fd(KEYS_DIR, 0o755), name, data, sync, kind="key")
    key.file = root.host_path(KEYS_DIR + "/" + name)
    return True


def distrust_key(root: Root, keynum: str, sync: bool) -> list:
    """Remove the trusted keys numbered ``keynum`` (16 hex digits) from etc/pm/keys and
    return them; Refused when none is."""
    removed = [k for k in trusted_keys(root) if k.number == keynum.lower()]
    if not removed:
        raise Refused("key %s is not trusted (pm key list shows the trusted keys)" % keynum.lower())
    dir_fd = root.dir_fd(KEYS_DIR)
    for key in removed:
        os.unlink(os.path.basename(key.file), dir_fd=dir_fd)
    if sync:
        fsync_dir(dir_fd)
    return removed


# =============================================================================
# 13. OPM and the ODA
# =============================================================================
#
# The ODA (after OSCAR's database) keeps, per node or image and package, the stage an
# admin requested and the stage reached.  ``pm opm sync`` walks a node's rows up (or
# down) the stages, each stage gated by the cluster's install progress, and commits
# the stage reached after each one, so that a sync killed at any point resumes where it
# stopped.  SQLite by default (one machine: a server and its images), PostgreSQL when a
# cluster's nodes share one; the same SQL runs on both.  Installs and uninstalls are
# carried out by the caller's actions (the command layer's transactions).

OPM_STAGES = ("should_not_be_installed", "should_be_installed", "run-configurator",
              "install-bin-pkgs", "post-image", "post-clients", "post-install")
CLUSTER_STEPS = ("none", "setup-wizard", "build_image", "addclients", "post_install", "test_install")
# The cluster progress each stage waits for, as the OPM document's brackets give them:
# setup-wizard for the first two stages that do something (should_be_installed and
# run-configurator; should_not_be_installed, the way back, waits for it too), then one
# wizard step for each later stage.
STAGE_GATES = {"should_not_be_installed": "setup-wizard", "should_be_installed": "setup-wizard",
               "run-configurator": "setup-wizard", "install-bin-pkgs": "build_image",
               "post-image": "addclients", "post-clients": "post_install",
               "post-install": "test_install"}
OPM_ROLES = ("server", "client", "image")
# From which stage on a node of each role has the package installed: a server installs
# it to run its scripts; clients and images get the binary packages only.
INSTALLED_FROM = {"server": "should_be_installed", "client": "install-bin-pkgs",
                  "image": "install-bin-pkgs"}
# The package's scripts a server runs at each stage (kept by the install, section 9).
STAGE_SCRIPTS = {"run-configurator": ("api-pre-configure", "api-post-configure"),
                 "post-image": ("api-post-image",), "post-clients": ("api-post-clients",),
                 "post-install": ("api-post-deploy",)}

OPM_CONF = "/etc/opm.conf"
ODA_FILE = DB_DIR + "/oda.sqlite"
ODA_SCHEMA_VERSION = 2
SQLITE_BUSY_SECONDS = 120      # how long an SQLite ODA write waits for another writer


def stage_index(stage: str) -> int:
    """The position of ``stage`` in OPM_STAGES (their order on the way up); ValueError
    for an unknown stage."""
    return OPM_STAGES.index(stage)


def valid_node_name(name) -> bool:
    """Node and image names follow the package name rules (host names fit in them)."""
    return _matches(NAME_PATTERN, name)


def _in_list(values) -> str:
    return "(%s)" % ", ".join("'%s'" % v for v in values)


# Each entry upgrades the schema by one version; ``{serial}`` is the dialect's
# auto-numbered key.  Never edit a released entry, nor the lists it checks against
# (stages, roles, steps): a change to them is a new entry.
ODA_MIGRATIONS = [
    [
        "CREATE TABLE oda_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE nodes (name TEXT PRIMARY KEY,"
        " role TEXT NOT NULL CHECK (role IN %s)," % _in_list(OPM_ROLES) +
        " image_path TEXT, server TEXT, added DOUBLE PRECISION NOT NULL,"
        " synced DOUBLE PRECISION)",
        "CREATE TABLE package_status ("
        " node TEXT NOT NULL REFERENCES nodes (name) ON DELETE CASCADE,"
        " package TEXT NOT NULL,"
        " requested TEXT NOT NULL CHECK (requested IN %s)," % _in_list(OPM_STAGES) +
        " current TEXT NOT NULL CHECK (current IN %s)," % _in_list(OPM_STAGES) +
        " status TEXT NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'error')),"
        " error TEXT, previous TEXT, updated DOUBLE PRECISION NOT NULL,"
        " PRIMARY KEY (node, package))",
        "CREATE TABLE cluster_progress (id INTEGER PRIMARY KEY CHECK (id = 1),"
        " step TEXT NOT NULL CHECK (step IN %s)," % _in_list(CLUSTER_STEPS) +
        " updated DOUBLE PRECISION NOT NULL)",
        "INSERT INTO cluster_progress (id, step, updated) VALUES (1, 'none', 0)",
        "CREATE TABLE inventory ("
        " node TEXT NOT NULL REFERENCES nodes (name) ON DELETE CASCADE,"
        " package TEXT NOT NULL, version TEXT NOT NULL, state TEXT NOT NULL, reason TEXT,"
        " PRIMARY KEY (node, package))",
        "CREATE TABLE events (id {serial}, time DOUBLE PRECISION NOT NULL, node TEXT NOT NULL,"
        " package TEXT NOT NULL, stage TEXT NOT NULL, direction TEXT NOT NULL,"
        " outcome TEXT NOT NULL, detail TEXT, host TEXT, pid INTEGER)",
        "CREATE INDEX events_by_node ON events (node, package)",
        "CREATE TABLE sync_locks (node TEXT PRIMARY KEY, host TEXT NOT NULL,"
        " pid INTEGER NOT NULL, started TEXT NOT NULL, since DOUBLE PRECISION NOT NULL)",
    ],
    [
        # the digest of the inventory last written: a sync rewrites it only when it changed
        "ALTER TABLE nodes ADD COLUMN inventory_digest TEXT",
        # the hot queries: nodes by role, rows by package and stage, rows by status
        # (the errors), events by time (pruning)
        "CREATE INDEX nodes_by_role ON nodes (role, name)",
        "CREATE INDEX package_status_by_stage ON package_status (package, current, status, requested)",
        "CREATE INDEX package_status_by_status ON package_status (status, node)",
        "CREATE INDEX events_by_time ON events (time)",
    ],
]
assert len(ODA_MIGRATIONS) == ODA_SCHEMA_VERSION


class OdaError(PmError):
    """The ODA could not be reached or answered with an error; ``sqlstate`` is the
    server's error code, when it gave one."""

    def __init__(self, message: str, sqlstate: str | None = None):
        super().__init__(message)
        self.sqlstate = sqlstate


# Errors a busy server gives that are over when the herd has passed: too many clients,
# out of connection slots, starting up or shutting down, a serialization failure, a
# deadlock.  A connection refused (a restart, a full listen queue) gives no code.
ODA_RETRY_SQLSTATES = ("53300", "53400", "57P01", "57P03", "08001", "08004", "08006", "40001", "40P01")
ODA_RETRY_MESSAGES = ("connection refused", "too many clients", "remaining connection slots",
                      "no more connections allowed", "the database system is starting up",
                      "the database system is shutting down", "server closed the connection",
                      "pgbouncer cannot connect to server", "server login has been failing")


def oda_retryable(error: OdaError) -> bool:
    """Whether ``error`` is one a busy server gives that is over after a backoff: its SQLSTATE is in
    ODA_RETRY_SQLSTATES or its message holds one of ODA_RETRY_MESSAGES."""
    if error.sqlstate in ODA_RETRY_SQLSTATES:
        return True
    message = error.message.lower()
    return any(text in message for text in ODA_RETRY_MESSAGES)


def backoff_delay(attempt: int) -> float:
    """The wait before retry number ``attempt`` (0, 1, ...): exponential, capped, and
    jittered (a random half to whole of it) so that a herd spreads out."""
    import random
    return min(ODA_BACKOFF_MAX, ODA_BACKOFF_FIRST * 2 ** min(attempt, 30)) * random.uniform(0.5, 1.0)


def redacted_url(url: str) -> str:
    """``url`` without its password, for messages."""
    import re
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def _process_start(pid: int) -> str:
    """A token that tells a process from a later one with the same pid (Linux: its start
    time in clock ticks); '' where /proc is missing."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return fields[19].decode()
    except (OSError, IndexError):
        return ""


def _process_alive(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not started or _process_start(pid) in ("", started)


class Oda:
    """A connection to the ODA and the statements pm runs on it.  SQL is written once with
    ``?`` placeholders; the PostgreSQL dialect turns them into ``%s``.  Every write runs
    in ``with oda.writing():`` (BEGIN IMMEDIATE on SQLite, a transaction on PostgreSQL);
    single-row statements touch only their own columns, so that a sync and an admin's
    request never overwrite each other.

    No state is kept in the server's session between transactions (no session locks, no
    prepared statements, nothing SET), so that the ODA works behind a pooler such as
    PgBouncer in transaction mode.  Within ``deadline`` seconds, connecting to a server
    that refuses or is full, and statements that lost a serialization race, are retried
    with jittered exponential backoff."""

    def __init__(self, url: str, create: bool = False, deadline: float = 0.0):
        import socket
        import time
        self.url = url
        self.host = socket.gethostname()
        self.started = _process_start(os.getpid())
        self.deadline = time.monotonic() + max(0.0, deadline)
        self.statements = 0           # statements sent on this connection (for tests and benchmarks)
        self.rowcount = 0             # rows the last statement changed
        self._transaction = False     # inside writing() or a stage's transaction
        self._schema_checked = False
        self._schema_name: str | None = None
        if url.startswith("sqlite:"):
            self.dialect = "sqlite"
            self._connect_sqlite(url, create)
        elif url.startswith(("postgresql:", "postgres:")):
            self.dialect = "postgresql"
            self._connect_postgresql(url)
        else:
            raise UsageError("the ODA URL %s is neither sqlite:///PATH nor postgresql://..."
                             % redacted_url(url))

    def _connect_sqlite(self, url: str, create: bool) -> None:
        import sqlite3
        path = url[len("sqlite:"):]
        if not path.startswith("//"):
            raise UsageError("an SQLite ODA URL is sqlite:///ABSOLUTE/PATH, not %s" % url)
        path = "/" + path.lstrip("/")
        self.errors = (sqlite3.Error,)
        for name in (path, path + "-journal", path + "-wal", path + "-shm"):
            try:
                st = os.lstat(name)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as e:
                raise OdaError("cannot open the ODA %s: %s" % (name, e.strerror)) from None
            if stat.S_ISLNK(st.st_mode):
                raise UnsafePath("%s is a symbolic link; pm does not open the ODA through it" % name)
            if not stat.S_ISREG(st.st_mode):
                raise InvalidInput("%s is %s, not an SQLite file" % (name, file_kind(st.st_mode)))
        if not create and not os.path.isfile(path):
            raise Refused("there is no ODA at %s; pm opm init creates it" % path)
        try:
            self.conn = sqlite3.connect(path, timeout=SQLITE_BUSY_SECONDS, isolation_level=None,
                                        check_same_thread=False)
            self.conn.execute("PRAGMA foreign_keys = ON")
            if create:
                self.conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.Error as e:
            raise OdaError("cannot open the ODA %s: %s" % (path, e)) from None

    def _connect_postgresql(self, url: str) -> None:
        psycopg = lazy_import("psycopg", "a PostgreSQL ODA")
        self.errors = (psycopg.Error,)
        # prepare_threshold=None: no server-side prepared statements, which a pooler in
        # transaction mode would hand to another client's session.  The application name
        # tells who holds a node's lock (pg_stat_activity).
        name = ("pm pid %d on %s" % (os.getpid(), self.host))[:63]
        attempt = 0
        while True:
            try:
                self.conn = psycopg.connect(url, autocommit=True, prepare_threshold=None,
                                            application_name=name)
                return
            except psycopg.Error as e:
                error = OdaError("cannot connect to the ODA at %s: %s"
                                 % (redacted_url(url), " ".join(str(e).split())), getattr(e, "sqlstate", None))
            self._wait_to_retry(error, attempt)
            attempt += 1

    def _wait_to_retry(self, error: OdaError, attempt: int) -> None:
        """Sleep before another try, or raise ``error`` when it is not worth retrying or
        the deadline has passed."""
        import time
        delay = backoff_delay(attempt)
        if not oda_retryable(error) or time.monotonic() + delay > self.deadline:
            raise error
        time.sleep(delay)

    def close(self) -> None:
        """Close the connection to the ODA."""
        self.conn.close()

    # -- statements ---------------------------------------------------------------------

    def _dialect_sql(self, sql: str) -> str:
        if self.dialect == "postgresql":
            return sql.replace("?", "%s").replace("{serial}", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
        return sql.replace("{serial}", "INTEGER PRIMARY KEY AUTOINCREMENT")

    def _error(self, e) -> OdaError:
        return OdaError("the ODA at %s: %s" % (redacted_url(self.url), " ".join(str(e).split())),
                        getattr(e, "sqlstate", None))

    def execute(self, sql: str, params=()) -> list:
        """Run one statement; its rows (tuples), or [] when it returns none.  Outside a
        transaction, a statement that lost a serialization race or a deadlock is run
        again (it did nothing)."""
        sql = self._dialect_sql(sql)
        attempt = 0
        while True:
            self.statements += 1
            try:
                cursor = self.conn.execute(sql, tuple(params))
                self.rowcount = cursor.rowcount
                return cursor.fetchall() if cursor.description else []
            except self.errors as e:
                error = self._error(e)
            if self._transaction or error.sqlstate not in ("40001", "40P01"):
                raise error
            self._wait_to_retry(error, attempt)
            attempt += 1

    def stream(self, sql: str, params=()):
        """The rows of one query, fetched ODA_FETCH_ROWS at a time (a server-side cursor on
        PostgreSQL, SQLite's own stepping): memory does not grow with the result."""
        sql = self._dialect_sql(sql)
        self.statements += 1
        try:
            if self.dialect == "sqlite":
                cursor = self.conn.execute(sql, tuple(params))
                while True:
                    rows = cursor.fetchmany(ODA_FETCH_ROWS)
                    if not rows:
                        return
                    yield from rows
            else:
                with self.conn.transaction():
                    with self.conn.cursor(name="pm_stream") as cursor:
                        cursor.itersize = ODA_FETCH_ROWS
                        cursor.execute(sql, tuple(params))
                        yield from cursor
        except self.errors as e:
            raise self._error(e) from None

    def writing(self):
        """A write transaction: committed when the block ends, rolled back on error.
        Inside another transaction (a stage's), it is part of that one."""
        import contextlib

        @contextlib.contextmanager
        def transaction():
            if self._transaction:
                yield
                return
            self.execute("BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN")
            self._transaction = True
            try:
                yield
            except BaseException:
                self._transaction = False
                try:
                    self.execute("ROLLBACK")
                except OdaError:
                    pass          # the connection is gone: the server rolled back
                raise
            self._transaction = False
            self.execute("COMMIT")
        return transaction()

    def atomically(self, work):
        """``work()`` in one write transaction, run again from the start when it lost a
        serialization race or a deadlock (until the deadline); its result."""
        attempt = 0
        while True:
            try:
                with self.writing():
                    return work()
            except OdaError as e:
                if self._transaction or e.sqlstate not in ("40001", "40P01"):
                    raise
                self._wait_to_retry(e, attempt)
                attempt += 1

    # -- schema -------------------------------------------------------------------------

    def _has_table(self, name: str) -> bool:
        if self.dialect == "sqlite":
            return bool(self.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)))
        return self.execute("SELECT to_regclass(?)", (name,))[0][0] is not None

    def schema_version(self) -> int:
        """The schema version of the ODA; 0 when pm's tables are not there."""
        if not self._has_table("oda_meta"):
            return 0
        return self._version_value(self.execute("SELECT value FROM oda_meta WHERE key = 'schema_version'"))

    def _version_value(self, rows) -> int:
        try:
            return int(rows[0][0]) if rows else 0
        except (TypeError, ValueError):
            raise InvalidInput("the ODA at %s has a schema version that is not a number: %r"
                               % (redacted_url(self.url), rows[0][0])) from None

    def migrate(self) -> int:
        """Create or upgrade the schema to ODA_SCHEMA_VERSION in one transaction; returns
        the version it had.  Concurrent inits wait for each other."""
        with self.writing():
            if self.dialect == "postgresql":
                self.execute("SELECT pg_advisory_xact_lock(?)", (self._lock_key("\0schema"),))
            old = self.schema_version()
            if old > ODA_SCHEMA_VERSION:
                raise Refused("the ODA at %s has schema version %d; this pm knows up to %d"
                              % (redacted_url(self.url), old, ODA_SCHEMA_VERSION))
            for statements in ODA_MIGRATIONS[old:]:
                for statement in statements:
                    self.execute(statement)
            if old < ODA_SCHEMA_VERSION:
                self.execute("INSERT INTO oda_meta (key, value) VALUES ('schema_version', ?)"
                             " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                             (str(ODA_SCHEMA_VERSION),))
        return old

    def require_schema(self) -> "Oda":
        """Check the schema version, once per connection, in one statement; an ODA of an
        older version pm knows is upgraded (as pm opm init would)."""
        if self._schema_checked:
            return self
        try:
            version = self._version_value(self.execute("SELECT value FROM oda_meta WHERE key = 'schema_version'"))
        except OdaError:
            version = self.schema_version()       # no oda_meta: not an ODA, or an empty one
        if 0 < version < ODA_SCHEMA_VERSION:
            self.migrate()
            version = self.schema_version()
        if version != ODA_SCHEMA_VERSION:
            what = "has no pm schema" if version == 0 else \
                "has schema version %d, this pm uses %d" % (version, ODA_SCHEMA_VERSION)
            hint = "; pm opm init creates it" if version < ODA_SCHEMA_VERSION else ""
            raise Refused("the ODA at %s %s%s" % (redacted_url(self.url), what, hint))
        self._schema_checked = True
        return self

    # -- nodes --------------------------------------------------------------------------

    NODE_COLUMNS = ("name", "role", "image_path", "server", "added", "synced")

    def node(self, name: str) -> dict | None:
        """The node ``name`` (a dict of NODE_COLUMNS), or None when the ODA has no such node."""
        rows = self.execute("SELECT %s FROM nodes WHERE name = ?" % ", ".join(self.NODE_COLUMNS), (name,))
        return dict(zip(self.NODE_COLUMNS, rows[0])) if rows else None

    def nodes(self, role: str | None = None) -> list:
        """The nodes (dicts of NODE_COLUMNS) by name; only those of ``role`` when it is given."""
        sql = "SELECT %s FROM nodes" % ", ".join(self.NODE_COLUMNS)
        rows = self.execute(sql + " WHERE role = ? ORDER BY name", (role,)) if role else \
            self.execute(sql + " ORDER BY name")
        return [dict(zip(self.NODE_COLUMNS, row)) for row in rows]

    def images_of(self, server: str) -> list:
        """The images a server's sync handles: those given to it, and those of no server."""
        rows = self.execute("SELECT %s FROM nodes WHERE role = 'image' AND (server = ? OR server IS NULL)"
                            " ORDER BY name" % ", ".join(self.NODE_COLUMNS), (server,))
        return [dict(zip(self.NODE_COLUMNS, row)) for row in rows]

    def sync_view(self, name: str) -> dict | None:
        """What a sync of ``name`` needs, in one query: the node (with the digest of its
        inventory), the cluster progress and its rows; None when there is no such node."""
        return next(iter(self._sync_views("n.name = ?", (name,))), None)

    def images_view(self, server: str) -> list:
        """sync_view of every image ``server`` handles, in one query."""
        return self._sync_views("n.role = 'image' AND (n.server = ? OR n.server IS NULL)", (server,))

    def _sync_views(self, where: str, params) -> list:
        views: dict = {}
        rows = self.execute(
            "SELECT %s, n.inventory_digest, p.step, %s FROM nodes n JOIN cluster_progress p ON p.id = 1"
            " LEFT JOIN package_status s ON s.node = n.name WHERE %s ORDER BY n.name, s.package"
            % (", ".join("n." + c for c in self.NODE_COLUMNS),
               ", ".join("s." + c for c in self.ROW_COLUMNS), where), params)
        width = len(self.NODE_COLUMNS)
        for row in rows:
            node = dict(zip(self.NODE_COLUMNS, row[:width]))
            view = views.setdefault(node["name"], {"node": node, "inventory_digest": row[width],
                                                   "progress": row[width + 1], "rows": []})
            if row[width + 2] is not None:
                view["rows"].append(dict(zip(self.ROW_COLUMNS, row[width + 2:])))
        return list(views.values())

    def add_node(self, name: str, role: str, image_path: str | None, server: str | None) -> None:
        """Add the node ``name`` in one transaction; a client also gets a request for
        install-bin-pkgs of every package a server took past post-clients.  Refused
        when the node exists."""
        import time
        with self.writing():
            if self.node(name):
                raise Refused("node %s is already in the ODA" % name)
            self.execute("INSERT INTO nodes (name, role, image_path, server, added) VALUES (?, ?, ?, ?, ?)",
                         (name, role, image_path, server, time.time()))
            if role == "client":
                # a client that joins late gets what the servers already gave the others
                for package in self.assigned_packages():
                    self._raise_request(name, package, "install-bin-pkgs")

    def remove_node(self, name: str) -> None:
        """Remove the node with everything the ODA keeps of it: its rows and inventory
        (by cascade), its events and its lock row."""
        with self.writing():
            if not self.node(name):
                raise Refused("node %s is not in the ODA" % name)
            self.execute("DELETE FROM events WHERE node = ?", (name,))
            self.execute("DELETE FROM sync_locks WHERE node = ?", (name,))
            self.execute("DELETE FROM nodes WHERE name = ?", (name,))

    # -- package rows -------------------------------------------------------------------

    ROW_COLUMNS = ("node", "package", "requested", "current", "status", "error", "previous", "updated")

    def rows(self, node: str | None = None) -> list:
        """The package rows (dicts of ROW_COLUMNS) of ``node`` by package, or of every
        node by node and package."""
        sql = "SELECT %s FROM package_status" % ", ".join(self.ROW_COLUMNS)
        rows = self.execute(sql + " WHERE node = ? ORDER BY package", (node,)) if node else \
            self.execute(sql + " ORDER BY node, package")
        return [dict(zip(self.ROW_COLUMNS, row)) for row in rows]

    def row(self, node: str, package: str) -> dict | None:
        """The package row (a dict of ROW_COLUMNS) of ``package`` on ``node``, or None."""
        rows = self.execute("SELECT %s FROM package_status WHERE node = ? AND package = ?"
                            % ", ".join(self.ROW_COLUMNS), (node, package))
        return dict(zip(self.ROW_COLUMNS, rows[0])) if rows else None

    def stage_view(self, node: str, package: str) -> tuple | None:
        """(row, cluster progress) in one query, or None when the row is gone."""
        rows = self.execute("SELECT %s, p.step FROM package_status s JOIN cluster_progress p ON p.id = 1"
                            " WHERE s.node = ? AND s.package = ?"
                            % ", ".join("s." + c for c in self.ROW_COLUMNS), (node, package))
        return (dict(zip(self.ROW_COLUMNS, rows[0][:-1])), rows[0][-1]) if rows else None

    def request(self, node: str, package: str, stage: str) -> None:
        """Ask for ``stage``; the request it replaces becomes ``previous``."""
        import time
        with self.writing():
            if not self.node(node):
                raise Refused("node %s is not in the ODA (pm opm node add %s --role ...)" % (node, node))
            self.execute(
                "INSERT INTO package_status (node, package, requested, current, status, updated)"
                " VALUES (?, ?, ?, 'should_not_be_installed', 'ok', ?)"
                " ON CONFLICT (node, package) DO UPDATE SET"
                " previous = CASE WHEN package_status.requested = excluded.requested"
                " THEN package_status.previous ELSE package_status.requested END,"
                " requested = excluded.requested, updated = excluded.updated",
                (node, package, stage, time.time()))

    def _raise_request(self, node: str, package: str, stage: str) -> None:
        """Request ``stage`` unless the row already asks for it or more."""
        import time
        lower = _in_list(OPM_STAGES[:stage_index(stage)])
        self.execute(
            "INSERT INTO package_status (node, package, requested, current, status, updated)"
            " VALUES (?, ?, ?, 'should_not_be_installed', 'ok', ?)"
            " ON CONFLICT (node, package) DO UPDATE SET previous = package_status.requested,"
            " requested = excluded.requested, updated = excluded.updated"
            " WHERE package_status.requested IN " + lower,
            (node, package, stage, time.time()))

    # The nodes a server's stage works on, as SQL over ``nodes``: every client, the
    # images the server handles.
    CLIENTS = "SELECT name FROM nodes WHERE role = 'client'"
    IMAGES = "SELECT name FROM nodes WHERE role = 'image' AND (server = ? OR server IS NULL)"

    def assign_all(self, selection: str, params, package: str, stage: str) -> int:
        """A server's work for other nodes, every node of ``selection`` (CLIENTS, IMAGES)
        in one statement however many they are: raise their request for ``package`` to
        ``stage``, or, for should_not_be_installed, take the package away from those that
        have it requested.  Returns how many rows it changed."""
        import time
        if stage == OPM_STAGES[0]:
            self.execute("UPDATE package_status SET previous = requested, requested = ?, updated = ?"
                         " WHERE package = ? AND requested <> ? AND node IN (%s)" % selection,
                         (stage, time.time(), package, stage) + tuple(params))
        else:
            lower = _in_list(OPM_STAGES[:stage_index(stage)])
            self.execute(
                "INSERT INTO package_status (node, package, requested, current, status, updated)"
                " SELECT name, ?, ?, 'should_not_be_installed', 'ok', ? FROM (%s) AS chosen WHERE true"
                " ON CONFLICT (node, package) DO UPDATE SET previous = package_status.requested,"
                " requested = excluded.requested, updated = excluded.updated"
                " WHERE package_status.requested IN %s" % (selection, lower),
                (package, stage, time.time()) + tuple(params))
        return max(self.rowcount, 0)

    def assigned_packages(self) -> list:
        """Packages a server has taken past post-clients: every client should have them."""
        reached = _in_list(OPM_STAGES[stage_index("post-clients"):])
        return [row[0] for row in self.execute(
            "SELECT DISTINCT s.package FROM package_status s JOIN nodes n ON n.name = s.node"
            " WHERE n.role = 'server' AND s.current IN " + reached + " ORDER BY s.package")]

    def reach(self, node: str, package: str, stage: str, direction: str, detail: str) -> None:
        """Commit ``stage`` as the row's current stage, with its event."""
        import time
        with self.writing():
            self.execute("UPDATE package_status SET current = ?, updated = ? WHERE node = ? AND package = ?",
                         (stage, time.time(), node, package))
            self._event(node, package, stage, direction, "ok", detail)

    def fail(self, node: str, package: str, stage: str, direction: str, message: str) -> None:
        """Mark the row in error: syncs skip it until ``clear``."""
        import time
        with self.writing():
            self.execute("UPDATE package_status SET status = 'error', error = ?, updated = ?"
                         " WHERE node = ? AND package = ?", (message, time.time(), node, package))
            self._event(node, package, stage, direction, "error", message)

    def clear(self, node: str, package: str) -> bool:
        """Clear a row's error; False when it had none.  Refused when there is no row."""
        import time
        with self.writing():
            row = self.row(node, package)
            if row is None:
                raise Refused("%s has no request for %s" % (node, package))
            if row["status"] != "error":
                return False
            self.execute("UPDATE package_status SET status = 'ok', error = NULL, updated = ?"
                         " WHERE node = ? AND package = ?", (time.time(), node, package))
            self._event(node, package, row["current"], "clear", "ok", "error cleared: " + (row["error"] or ""))
        return True

    def _event(self, node, package, stage, direction, outcome, detail) -> None:
        import time
        self.execute("INSERT INTO events (time, node, package, stage, direction, outcome, detail, host, pid)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (time.time(), node, package, stage, direction, outcome, detail, self.host, os.getpid()))

    EVENT_COLUMNS = ("id", "time", "node", "package", "stage", "direction", "outcome", "detail", "host", "pid")

    def events(self, node: str | None = None) -> list:
        """The events (dicts of EVENT_COLUMNS) of ``node``, or of every node, in the order they
        were written, as a list."""
        return list(self.stream_events(node))

    def stream_events(self, node: str | None = None):
        """The events (dicts of EVENT_COLUMNS) of ``node``, or of every node, in the order they were
        written, streamed (memory does not grow with their number)."""
        sql = "SELECT %s FROM events" % ", ".join(self.EVENT_COLUMNS)
        rows = self.stream(sql + " WHERE node = ? ORDER BY id", (node,)) if node else \
            self.stream(sql + " ORDER BY id")
        return (dict(zip(self.EVENT_COLUMNS, row)) for row in rows)

    def prune_events(self, before: float, node: str | None = None) -> int:
        """Delete the events older than ``before`` (a time stamp), of one node or all;
        how many it deleted."""
        if node is None:
            self.execute("DELETE FROM events WHERE time < ?", (before,))
        else:
            self.execute("DELETE FROM events WHERE node = ? AND time < ?", (node, before))
        return max(self.rowcount, 0)

    # -- operators' views: streamed, or aggregated by the server --------------------------

    def stream_rows(self, node: str | None = None):
        """The package rows (dicts of ROW_COLUMNS) of ``node`` by package, or of every node by node
        and package, streamed."""
        sql = "SELECT %s FROM package_status" % ", ".join(self.ROW_COLUMNS)
        rows = self.stream(sql + " WHERE node = ? ORDER BY package", (node,)) if node else \
            self.stream(sql + " ORDER BY node, package")
        return (dict(zip(self.ROW_COLUMNS, row)) for row in rows)

    def row_widths(self, node: str | None = None) -> tuple:
        """How many rows there are and the longest node, package, requested and current
        (for a table printed as it streams)."""
        sql = "SELECT count(*), max(length(node)), max(length(package)), max(length(requested))," \
              " max(length(current)) FROM package_status"
        row = self.execute(sql + " WHERE node = ?", (node,))[0] if node else self.execute(sql)[0]
        return tuple(value or 0 for value in row)

    def summary(self, node: str | None = None) -> list:
        """Per package and stage reached: how many rows are there, in error or not, and
        how many of them are at their request; rows in error first."""
        sql = "SELECT package, current, status, count(*)," \
              " sum(CASE WHEN requested = current THEN 1 ELSE 0 END) FROM package_status"
        group = " GROUP BY package, current, status"
        rows = self.execute(sql + " WHERE node = ?" + group, (node,)) if node else self.execute(sql + group)
        result = [{"package": package, "stage": stage, "status": status, "nodes": count, "done": int(done or 0)}
                  for package, stage, status, count, done in rows]
        result.sort(key=lambda r: (r["status"] != "error", r["package"], stage_index(r["stage"])))
        return result

    def stream_attention(self, limit: int):
        """The rows in error, then those not yet at their request, at most ``limit``."""
        return (dict(zip(self.ROW_COLUMNS, row)) for row in self.stream(
            "SELECT %s FROM package_status WHERE status = 'error' OR requested <> current"
            " ORDER BY CASE WHEN status = 'error' THEN 0 ELSE 1 END, node, package LIMIT ?"
            % ", ".join(self.ROW_COLUMNS), (limit,)))

    def attention_count(self) -> int:
        """How many rows are in error or not yet at their request (what stream_attention lists)."""
        return self.execute("SELECT count(*) FROM package_status WHERE status = 'error' OR requested <> current")[0][0]

    # -- cluster progress and inventory -------------------------------------------------

    def progress(self) -> str:
        """The cluster's install progress: one of CLUSTER_STEPS."""
        return self.execute("SELECT step FROM cluster_progress WHERE id = 1")[0][0]

    def set_progress(self, step: str) -> None:
        """Set the cluster's install progress to ``step`` in one transaction; the ODA refuses a step
        not in CLUSTER_STEPS (OdaError)."""
        import time
        with self.writing():
            self.execute("UPDATE cluster_progress SET step = ?, updated = ? WHERE id = 1", (step, time.time()))

    @staticmethod
    def inventory_digest(packages: dict) -> str:
        """A digest of an inventory: equal digests, equal inventories."""
        import json
        records = [[name, packages[name]["version"], packages[name]["state"], packages[name].get("reason")]
                   for name in sorted(packages)]
        return sha256_bytes(json.dumps(records).encode("utf-8")).hex()

    def write_inventory(self, node: str, packages: dict, known_digest: str | None = None) -> bool:
        """Replace the node's inventory by ``packages`` (the records of its database),
        unless its digest is ``known_digest`` (the one on the node row): then nothing is
        written.  Whether it wrote."""
        import time
        digest = self.inventory_digest(packages)
        if digest == known_digest:
            return False

        def work():
            # The node row locked first: two syncs of one node that both found the
            # inventory changed write it one after the other, the second seeing the
            # first's digest (without it, both delete the old rows, and the second's
            # insert meets the first's committed ones).
            lock = "" if self.dialect == "sqlite" else " FOR UPDATE"
            rows = self.execute("SELECT inventory_digest FROM nodes WHERE name = ?" + lock, (node,))
            if not rows or rows[0][0] == digest:
                return False
            self.execute("DELETE FROM inventory WHERE node = ?", (node,))
            names = sorted(packages)
            for start in range(0, len(names), ODA_INSERT_ROWS):
                chunk = names[start:start + ODA_INSERT_ROWS]
                values = []
                for name in chunk:
                    record = packages[name]
                    values += [node, name, record["version"], record["state"], record.get("reason")]
                self.execute("INSERT INTO inventory (node, package, version, state, reason) VALUES "
                             + ", ".join(["(?, ?, ?, ?, ?)"] * len(chunk)), values)
            self.execute("UPDATE nodes SET synced = ?, inventory_digest = ? WHERE name = ?",
                         (time.time(), digest, node))
            return True
        return self.atomically(work)

    def inventory(self, node: str) -> dict:
        """The inventory the ODA holds of ``node``: ``{package: {version, state, reason}}``, ``{}``
        when none was written."""
        return {row["package"]: {"version": row["version"], "state": row["state"], "reason": row["reason"]}
                for row in self.stream_inventory(node)}

    INVENTORY_COLUMNS = ("node", "package", "version", "state", "reason")

    def stream_inventory(self, node: str | None = None):
        """Every node's inventory (or one node's), in one query."""
        sql = "SELECT %s FROM inventory" % ", ".join(self.INVENTORY_COLUMNS)
        rows = self.stream(sql + " WHERE node = ? ORDER BY package", (node,)) if node else \
            self.stream(sql + " ORDER BY node, package")
        return (dict(zip(self.INVENTORY_COLUMNS, row)) for row in rows)

    # -- node locks ---------------------------------------------------------------------
    #
    # PostgreSQL: each stage runs in a transaction that takes the node's transaction-
    # scoped advisory lock first (pg_try_advisory_xact_lock), so that nothing outlives the
    # transaction: a pooler may hand the session to another client afterwards, and a
    # killed sync's lock goes with its transaction.  The holder is named by its
    # connection's application name.  SQLite (one machine): a row in sync_locks naming
    # the holder's host, pid and process start, taken over once that process is gone;
    # taking and releasing it update the row in place (pid 0: free).  A sync that finds
    # nothing to do takes no lock at all.

    def _lock_key(self, name: str) -> int:
        schema = self.execute("SELECT current_schema()")[0][0] if self.dialect == "postgresql" else ""
        digest = sha256_bytes(("%s\0%s" % (schema, name)).encode("utf-8"))
        return int.from_bytes(digest[:8], "big", signed=True)

    def _node_keys(self, name: str) -> tuple:
        """The two 31-bit keys of the node's advisory lock (in the schema in use)."""
        if self._schema_name is None:
            self._schema_name = self.execute("SELECT current_schema()")[0][0] or ""
        digest = sha256_bytes(("%s\0node\0%s" % (self._schema_name, name)).encode("utf-8"))
        return (int.from_bytes(digest[:4], "big") & 0x7FFFFFFF, int.from_bytes(digest[4:8], "big") & 0x7FFFFFFF)

    def stage_transaction(self, name: str, wait: float | None):
        """A block in which one stage of ``name`` runs, holding its lock.  PostgreSQL: one
        transaction holding the node's advisory lock, committed at the end (the stage's
        row and event with it); LockHeld past ``wait`` seconds (None: wait as long as
        the other's stage takes).  SQLite: the node lock is held for the whole sync
        (lock_node), each write is its own transaction."""
        import contextlib
        import time

        @contextlib.contextmanager
        def block():
            if self.dialect == "sqlite":
                yield
                return
            keys = self._node_keys(name)
            deadline = time.monotonic() + max(0.0, wait or 0.0)
            while True:
                self.execute("BEGIN")
                self._transaction = True
                try:
                    if wait is None:
                        self.execute("SELECT pg_advisory_xact_lock(?, ?)", keys)
                        taken = True
                    else:
                        taken = self.execute("SELECT pg_try_advisory_xact_lock(?, ?)", keys)[0][0]
                except BaseException:
                    self._transaction = False
                    self.execute("ROLLBACK")
                    raise
                if taken:
                    break
                self._transaction = False
                self.execute("ROLLBACK")
                holder = self._lock_holder(keys)
                if time.monotonic() >= deadline:
                    raise LockHeld("node %s is being synced by %s; try again or use --wait SECONDS" % (name, holder))
                time.sleep(ODA_LOCK_POLL)
            try:
                yield
            except BaseException:
                self._transaction = False
                try:
                    self.execute("ROLLBACK")
                except OdaError:
                    pass
                raise
            self._transaction = False
            self.execute("COMMIT")
        return block()

    def _lock_holder(self, keys: tuple) -> str:
        rows = self.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database"
            " WHERE datname = current_database()) AND l.classid = ?::bigint::oid AND l.objid = ?::bigint::oid"
            " AND l.objsubid = 2", keys)
        holder = rows[0][0] if rows else ""
        return holder[len("pm "):] if holder.startswith("pm pid ") else "another pm process"

    def lock_node(self, name: str, wait: float) -> None:
        """Take the node's sync lock, waiting up to ``wait`` seconds; LockHeld after that.
        PostgreSQL: nothing to do here (stage_transaction locks)."""
        import time
        if self.dialect == "postgresql":
            return
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            holder = self._try_lock(name)
            if holder is None:
                return
            if time.monotonic() >= deadline:
                raise LockHeld("node %s is being synced by %s; try again or use --wait SECONDS" % (name, holder))
            time.sleep(ODA_LOCK_POLL)

    def _try_lock(self, name: str) -> str | None:
        """Take the SQLite lock row now; None when taken, else who holds it."""
        import time
        with self.writing():
            rows = self.execute("SELECT host, pid, started FROM sync_locks WHERE node = ?", (name,))
            if rows and rows[0][1]:
                host, pid, started = rows[0]
                if host != self.host or _process_alive(pid, started):
                    return "pid %s on %s" % (pid, host)
            self.execute("INSERT INTO sync_locks (node, host, pid, started, since) VALUES (?, ?, ?, ?, ?)"
                         " ON CONFLICT (node) DO UPDATE SET host = excluded.host, pid = excluded.pid,"
                         " started = excluded.started, since = excluded.since",
                         (name, self.host, os.getpid(), self.started, time.time()))
        return None

    def unlock_node(self, name: str) -> None:
        """Release the node's SQLite sync lock when this process holds it (its row's pid set to 0);
        nothing on PostgreSQL, where the lock ends with the stage's transaction."""
        if self.dialect == "sqlite":
            self.execute("UPDATE sync_locks SET pid = 0 WHERE node = ? AND host = ? AND pid = ?",
                         (name, self.host, os.getpid()))


def read_opm_conf(root: Root) -> tuple | None:
    """``(role, name)`` from the root's etc/opm.conf, or None when it has none."""
    data = root.read(OPM_CONF)
    if data is None:
        return None
    lines = [line.strip() for line in data.decode("utf-8", "replace").splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if len(lines) != 2 or lines[0] not in OPM_ROLES or not valid_node_name(lines[1]):
        raise InvalidInput("%s: expected two lines, server|client|image then the node's name"
                           % root.host_path(OPM_CONF))
    return lines[0], lines[1]


class OpmSync:
    """One ``pm opm sync``: walks the rows of a node (and a server's images) through the
    stages, in the roles' ways (SPEC §11), recording every stage in the ODA.  ``actions``
    installs and uninstalls: ``actions.install(root_path, package)`` and
    ``actions.uninstall(root_path, package)`` do it as one pm transaction on that root,
    raising PmError when it fails (the command layer supplies them)."""

    def __init__(self, oda: Oda, actions, out: Output, wait: float, retention: float | None = None):
        self.oda, self.actions, self.out, self.wait = oda, actions, out, wait
        self.retention = retention        # seconds of events to keep, or None to keep them all
        self.report: list[dict] = []
        self.busy: list[str] = []         # nodes or roots left alone because another pm held them
        self.stages_run = 0
        self.held: set = set()            # nodes whose lock this sync has had: it waits for it again

    def sync(self, view: dict, root_path: str) -> None:
        """Sync the node of ``view`` (Oda.sync_view), installing under ``root_path``, or
        under its image path for an image; a server then syncs its images.  A node with
        nothing to do costs no write: no lock, and its inventory is written only when it
        changed."""
        import time
        node = view["node"]
        self._sync_view(view, root_path, False)
        if node["role"] == "server":
            for image in self.oda.images_view(node["name"]):
                self._sync_view(image, image["node"]["image_path"], True)
        if self.retention is not None and self.stages_run:
            self.oda.prune_events(time.time() - self.retention, None if node["role"] == "server" else node["name"])

    def _sync_view(self, view: dict, root_path: str, image_of_server: bool) -> None:
        node = view["node"]
        name = node["name"]
        if node["role"] == "image":
            root_path = node["image_path"]
        todo = []
        for row in view["rows"]:
            entry = {"node": name, "package": row["package"], "from": row["current"],
                     "requested": row["requested"], "stages": [], "waiting_for": None,
                     "current": row["current"], "status": row["status"], "error": row["error"]}
            self.report.append(entry)
            if row["status"] == "error":
                self.out.say("%s %s: skipped: in error since an earlier sync (%s); pm opm clear %s %s"
                             % (name, row["package"], row["error"], name, row["package"]))
            elif row["requested"] != row["current"] and self._gate_open(name, row, view["progress"], entry):
                todo.append(entry)
        if todo:
            try:
                self.oda.lock_node(name, self.wait)
                try:
                    for entry in todo:
                        self._walk(node, entry["package"], root_path, entry)
                finally:
                    self.oda.unlock_node(name)
            except LockHeld as e:
                if not image_of_server:
                    raise
                self.out.warn(e.message + "; its rows were left for now")
                self.busy.append(name)
        self._write_inventory(node, root_path, view["inventory_digest"])

    def _gate_open(self, name: str, row: dict, progress: str, entry: dict) -> bool:
        """Whether the row's next stage may run at this cluster progress; says why not."""
        current, requested = stage_index(row["current"]), stage_index(row["requested"])
        stage = OPM_STAGES[current + 1] if requested > current else row["requested"]
        gate = STAGE_GATES[stage]
        if CLUSTER_STEPS.index(progress) >= CLUSTER_STEPS.index(gate):
            return True
        entry["waiting_for"] = gate
        self.out.say("%s %s: %s waits for the cluster to reach %s (it is at %s)"
                     % (name, row["package"], stage, gate, progress))
        return False

    def _walk(self, node: dict, package: str, root_path: str, entry: dict) -> None:
        """Step the row toward its request one stage at a time, each stage in its own
        stage_transaction, re-reading the row and the cluster progress first (an admin
        or another sync may have changed either meanwhile)."""
        name = node["name"]
        while True:
            # Once this sync has had the node's lock, another sync may take it between
            # two stages (PostgreSQL): this one then waits for that stage, not fails.
            with self.oda.stage_transaction(name, None if name in self.held else self.wait):
                self.held.add(name)
                found = self.oda.stage_view(name, package)
                if found is None:
                    return
                row, progress = found
                entry.update(current=row["current"], status=row["status"], error=row["error"])
                if row["status"] == "error" or row["requested"] == row["current"]:
                    return
                current, requested = stage_index(row["current"]), stage_index(row["requested"])
                up = requested > current
                stage = OPM_STAGES[current + 1] if up else row["requested"]
                gate = STAGE_GATES[stage]
                if CLUSTER_STEPS.index(progress) < CLUSTER_STEPS.index(gate):
                    entry["waiting_for"] = gate
                    self.out.say("%s %s: %s waits for the cluster to reach %s (it is at %s)"
                                 % (name, package, stage, gate, progress))
                    return
                direction = "up" if up else "down"
                try:
                    if up:
                        detail = self._stage_up(node, package, stage, root_path)
                    else:
                        detail = self._stage_down(node, package, row["current"], stage, root_path)
                except LockHeld as e:     # another pm command works on the root: not an error of the row
                    self.out.warn("%s %s: %s left for the next sync: %s" % (name, package, stage, e.message))
                    entry["waiting_for"] = "the lock of " + root_path
                    self.busy.append(root_path)
                    return
                except (PmError, OSError) as e:
                    if isinstance(e, OdaError):
                        raise
                    message = e.message if isinstance(e, PmError) else \
                        "%s%s" % (e.strerror or e, ": " + e.filename if getattr(e, "filename", None) else "")
                    self.oda.fail(name, package, stage, direction, message)
                    self.stages_run += 1
                    entry.update(status="error", error=message)
                    self.out.say(ERROR_PREFIX + "%s %s: %s failed: %s (skipped until pm opm clear %s %s)"
                                 % (name, package, stage, message, name, package))
                    return
                self.oda.reach(name, package, stage, direction, detail)
                self.stages_run += 1
            entry["stages"].append(stage)
            entry["current"] = stage
            self.out.result("%s %s: %s%s" % (name, package, stage, " (%s)" % detail if detail else ""))
            if stage == row["requested"]:
                return                    # at its request (a request changed since is the next sync's)

    def _stage_up(self, node: dict, package: str, stage: str, root_path: str) -> str:
        """Carry out ``stage`` on the node; returns what was done, for the event log."""
        role, done = node["role"], []
        if stage == INSTALLED_FROM[role]:
            self._check_root(node, root_path)
            self.actions.install(root_path, package)
            done.append("installed")
        if role != "server":
            return ", ".join(done)
        for script in STAGE_SCRIPTS.get(stage, ()):
            if self._run_script(root_path, package, script, stage):
                done.append("ran " + script)
        if stage == "install-bin-pkgs":
            images = [i["name"] for i in self.oda.images_of(node["name"])]
            if images:
                self.oda.assign_all(Oda.IMAGES, (node["name"],), package, stage)
                done.append("gave it to images " + ", ".join(images))
        if stage == "post-clients":
            # one statement for every client, however many there are
            given = self.oda.assign_all(Oda.CLIENTS, (), package, "install-bin-pkgs")
            if given:
                done.append("gave it to %d client%s" % (given, "" if given == 1 else "s"))
        return ", ".join(done)

    def _stage_down(self, node: dict, package: str, current: str, stage: str, root_path: str) -> str:
        """Go back from ``current`` to ``stage``: uninstall when the package is no longer
        installed at ``stage`` for this role (the uninstall runs its scripts)."""
        role = node["role"]
        installed_from = stage_index(INSTALLED_FROM[role])
        if not stage_index(stage) < installed_from <= stage_index(current):
            return ""
        self._check_root(node, root_path)
        self.actions.uninstall(root_path, package)
        done = ["uninstalled"]
        if role == "server":
            taken = self.oda.assign_all(Oda.IMAGES, (node["name"],), package, OPM_STAGES[0]) + \
                self.oda.assign_all(Oda.CLIENTS, (), package, OPM_STAGES[0])
            if taken:
                done.append("took it back from %d node%s" % (taken, "" if taken == 1 else "s"))
        return ", ".join(done)

    @staticmethod
    def _check_root(node: dict, root_path: str) -> None:
        if not os.path.isdir(root_path):
            what = "image root" if node["role"] == "image" else "root"
            raise Refused("the %s %s of %s is not a directory" % (what, root_path, node["name"]))

    def _run_script(self, root_path: str, package: str, script: str, stage: str) -> bool:
        """Run one OPM script the package keeps on the server, if it has it."""
        root = Root(root_path)
        try:
            record = Database(root).load().get(package)
            if record is None or not record.installed:
                raise Refused("%s is not installed under %s" % (package, root_path))
            content = root.read(SCRIPTS_DIR + "/" + package + "/" + script)
        finally:
            root.close()
        if content is None:
            return False
        error = run_script(root_path, content, script, package, record.version, "", stage, self.out)
        if error:
            raise Refused(error)
        return True

    def _write_inventory(self, node: dict, root_path: str, known_digest: str | None) -> None:
        """Write back what is installed under the node's root when it differs from what
        the ODA has (nothing when it has no root yet, as an image whose directory is
        still to be made)."""
        if not os.path.isdir(root_path):
            return
        root = Root(root_path)
        try:
            packages = Database(root).load().packages
        finally:
            root.close()
        self.oda.write_inventory(node["name"], packages, known_digest)


# =============================================================================
# 14. Site management
# =============================================================================
#
# For the software managers of shared areas (SPEC §13, §14): installed packages against
# a vulnerability list (checked before an install: check_install_vulnerabilities) and
# whether this user can manage this root (doctor).  Everything here reads.

MAX_VULNERABILITY_LIST = 64 << 20     # pkgsrc's list is a few MB; bounds a hostile server
VULNERABILITY_CHECKS = ("warn", "always", "never")   # pm.conf check_vulnerabilities


def read_location(location: str, what: str, limit: int) -> bytes:
    """The bytes of a host file or of a ``file://``, ``http://`` or ``https://`` URL, at
    most ``limit`` of them; Refused when it cannot be read."""
    import urllib.parse
    parsed = urllib.parse.urlsplit(location)
    if parsed.scheme not in ("", "file", "http", "https"):
        raise UsageError("%s %s: only http, https and file URLs are supported" % (what, location))
    try:
        if parsed.scheme in ("http", "https"):
            data = http_get(location, limit)
        else:
            data = _read_local(urllib.parse.unquote(parsed.path) if parsed.scheme else location, limit)
    except InvalidInput as e:
        raise InvalidInput("the %s: %s" % (what, e.message)) from None
    except PmError as e:
        raise Refused("cannot read the %s: %s" % (what, e.message)) from None
    if data is None:
        raise Refused("cannot read the %s %s: not found" % (what, location))
    return data


class Vulnerability:
    """One entry of a vulnerability list: versions ``constraint`` of package ``name``
    have a problem of ``kind`` described at ``url``."""

    __slots__ = ("name", "constraint", "kind", "url", "line")

    def __init__(self, name: str, constraint: Constraint, kind: str, url: str, line: int):
        self.name, self.constraint, self.kind, self.url, self.line = name, constraint, kind, url, line

    def describe(self, version: str) -> str:
        """The warning for package ``name`` at ``version``: the kind of problem, the versions
        affected and the URL."""
        return "%s %s has a %s vulnerability (%s %s), see %s" % (
            self.name, version, self.kind, self.name, self.constraint, self.url)

    def as_json(self) -> dict:
        """The entry in --json: package, constraint, type, url and its line in the list."""
        return {"package": self.name, "constraint": str(self.constraint), "type": self.kind,
                "url": self.url, "line": self.line}


class VulnerabilityList:
    """A vulnerability list, one entry per line: ``NAME CONSTRAINT TYPE URL`` (the
    constraint may contain blanks: ``>=1.2, <1.4``), ``#`` comments.  Malformed lines
    are kept in ``malformed`` as ``(line number, problem)`` instead of hiding the rest."""

    def __init__(self, source: str, text: str):
        self.source = source
        self.entries: dict[str, list] = {}
        self.malformed: list[tuple] = []
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            problem = self._add(line, number)
            if problem:
                self.malformed.append((number, problem))

    def _add(self, line: str, number: int) -> str | None:
        fields = line.split()
        if len(fields) < 4:
            return "expected NAME CONSTRAINT TYPE URL"
        name, kind, url = fields[0], fields[-2], fields[-1]
        if not valid_package_name(name):
            return "bad package name %r" % name
        if "://" not in url:
            return "the last field must be a URL, not %r" % url
        try:
            constraint = Constraint.parse(" ".join(fields[1:-2]), name)
        except InvalidInput as e:
            return e.message
        self.entries.setdefault(name, []).append(Vulnerability(name, constraint, kind, url, number))
        return None

    @classmethod
    def load(cls, root: Root, location: str | None) -> "VulnerabilityList":
        """The list at ``location`` (a host path or URL, from the command line), or else
        the one pm.conf names (``vulnerabilities =``: a URL, or a path within the root)."""
        if location is None:
            location = read_settings(root).get("vulnerabilities")
            if not location:
                raise UsageError("no vulnerability list: give --vulns FILE|URL or set "
                                 "'vulnerabilities = ...' in %s" % root.host_path(PM_CONF))
            if "://" not in location:
                location = root.host_path("/" + location.lstrip("/"))
        data = read_location(location, "vulnerability list", MAX_VULNERABILITY_LIST)
        return cls(location, data.decode("utf-8", "replace"))

    def affecting(self, name: str, version: str) -> list:
        """The entries that ``name`` at ``version`` is affected by (an unversioned
        package is assumed affected, as it satisfies every constraint)."""
        parsed = Version.parse(version)
        return [v for v in self.entries.get(name, ()) if v.constraint.allows(parsed, pre=True)]

    def malformed_summary(self) -> str:
        """One line saying how many lines of the list are malformed, with the
        numbers of the first ten."""
        lines = ", ".join(str(n) for n, _ in self.malformed[:10])
        more = " and %d more" % (len(self.malformed) - 10) if len(self.malformed) > 10 else ""
        return "the vulnerability list %s has %s (%s%s)" % (
            self.source, counted(len(self.malformed), "malformed line"), lines, more)


def check_install_vulnerabilities(root: Root, out: Output, installs: list) -> None:
    """The install-time audit: warn about each ``(name, version)`` about to be installed
    that the vulnerability list of pm.conf names; refuse instead with
    ``check_vulnerabilities = always`` (pkgsrc's CHECK_VULNERABILITIES)."""
    if not installs:
        return
    settings = read_settings(root)
    mode = settings.get("check_vulnerabilities", "warn")
    if mode not in VULNERABILITY_CHECKS:
        raise InvalidInput("%s: check_vulnerabilities must be %s, not %r"
                           % (root.host_path(PM_CONF), ", ".join(VULNERABILITY_CHECKS), mode))
    if mode == "never":
        return
    if not settings.get("vulnerabilities"):
        if mode == "always":
            raise Refused("check_vulnerabilities = always, but %s names no vulnerability list; "
                          "nothing was changed" % root.host_path(PM_CONF))
        return
    try:
        vulnerabilities = VulnerabilityList.load(root, None)
    except PmError as e:
        if mode == "always":
            raise Refused("cannot check for vulnerabilities (%s); nothing was changed" % e.message) from None
        out.warn("cannot check for vulnerabilities: %s" % e.message)
        return
    if vulnerabilities.malformed:
        out.warn(vulnerabilities.malformed_summary() + "; pm audit shows them")
    found = [v.describe(version) for name, version in installs
             for v in vulnerabilities.affecting(name, version)]
    if found and mode == "always":
        raise Refused("; ".join(found) + " (check_vulnerabilities = always); nothing was changed")
    for message in found:
        out.warn(message)


def verify_package(root: Root, db: Database, name: str) -> tuple:
    """``(damage, modified_config)`` of one installed package (``pm verify``): lists of
    ``(path, problem)`` for each owned path whose kind, mode, link target or content no
    longer matches the database, and each config file changed since it was installed."""
    config = set(db.get(name).config)
    damage, modified = [], []
    for path, entry in sorted(db.files(name).items()):
        try:
            st = root.lstat(path)
        except UnsafePath as e:
            damage.append((path, e.message))
            continue
        if st is None:
            damage.append((path, "missing"))
            continue
        kind = "d" if stat.S_ISDIR(st.st_mode) else "l" if stat.S_ISLNK(st.st_mode) else \
            "f" if stat.S_ISREG(st.st_mode) else "?"
        if kind != entry.kind:
            damage.append((path, "is no longer a %s" % {"f": "file", "d": "directory", "l": "symlink"}[entry.kind]))
        elif kind == "d":
            if entry.explicit and not dir_mode_matches(st.st_mode, entry.mode):
                damage.append((path, "mode changed from %04o to %04o" % (entry.mode, stat.S_IMODE(st.st_mode))))
        elif kind == "l":
            if root.readlink(path) != entry.link:
                damage.append((path, "symlink target changed"))
        elif kind == "f":
            if path in config:
                if st.st_size != entry.size or root.digest(path) != entry.digest:
                    modified.append((path, "modified config file"))
                continue
            if stat.S_IMODE(st.st_mode) != entry.mode:
                damage.append((path, "mode changed from %04o to %04o" % (entry.mode, stat.S_IMODE(st.st_mode))))
            if st.st_size != entry.size or root.digest(path) != entry.digest:
                damage.append((path, "content changed"))
    return damage, modified


class Finding:
    """One line of ``pm doctor``: which ``check``, its ``status`` (ok, note, or problem:
    something needs action) and a sentence for people."""

    OK, NOTE, PROBLEM = "ok", "note", "problem"

    def __init__(self, check: str, status: str, message: str):
        self.check, self.status, self.message = check, status, message

    def as_json(self) -> dict:
        """The finding in --json: check, status and message."""
        return {"check": self.check, "status": self.status, "message": self.message}


def _some(root: Root, paths: list, shown: int = 5) -> str:
    """The first few of ``paths`` under ``root`` as host paths, for a one-line message."""
    more = " and %d more" % (len(paths) - shown) if len(paths) > shown else ""
    return ", ".join(root.host_path(p) for p in paths[:shown]) + more


def diagnose(root: Root, shared: bool) -> list:
    """Every Finding about ``root``: access for this user (and for a group with
    ``shared``), database, journal, staging debris, lock, optional modules.  Reads only:
    unlike other commands it does not recover an interrupted transaction."""
    try:
        root.dir_fd("/")
    except PmError as e:
        return [Finding("root", Finding.PROBLEM, e.message)]
    findings = []
    db, db_problem = Database(root), None
    try:
        db.load()
    except InvalidInput as e:
        db_problem = e.message
    holder = RootLock(root).holder()
    directories = _managed_directories(root, db)
    findings += _access_findings(root, directories)
    if shared:
        findings += _shared_findings(root, directories)
    findings += _database_findings(db, db_problem)
    journal, journal_findings = _journal_findings(root, db, holder)
    findings += journal_findings
    findings += _debris_findings(root, db, directories, journal, holder)
    try:
        leftovers = read_leftovers(root)
        findings.append(Finding("leftovers", Finding.PROBLEM, "%s could not be removed after a "
                                "transaction (pm recover tries again): %s" % (
                                    counted(len(leftovers), "path"), _some(root, [p for _, p in leftovers])))
                        if leftovers else Finding("leftovers", Finding.OK, "no leftovers of past transactions"))
    except InvalidInput as e:
        findings.append(Finding("leftovers", Finding.PROBLEM, e.message))
    try:
        lock_st = root.lstat(DB_DIR + "/lock")
    except PmError:
        lock_st = None
    if lock_st is not None and not stat.S_ISREG(lock_st.st_mode):
        findings.append(Finding("lock", Finding.PROBLEM, "%s is %s, not pm's lock file"
                                % (root.host_path(DB_DIR + "/lock"), file_kind(lock_st.st_mode))))
    else:
        findings.append(Finding("lock", Finding.OK, "the lock is free") if holder is None else
                        Finding("lock", Finding.NOTE, "the lock is held by %s" % RootLock.who(holder)))
    try:
        settings = read_settings(root)
    except InvalidInput as e:
        settings = {}
        findings.append(Finding("settings", Finding.PROBLEM, e.message))
    findings += _module_findings(settings)
    return findings


def _managed_directories(root: Root, db: Database) -> list:
    """The existing directories pm writes in under ``root``: the root, its own state
    directories, and those holding installed packages' files, sorted."""
    wanted = {"/", DB_DIR, FILES_DIR, SCRIPTS_DIR}
    for name in db.packages:
        try:
            entries = db.files(name)
        except InvalidInput:
            continue
        for path, entry in entries.items():
            wanted.add(path if entry.kind == "d" else parent_of(path))
    if root_exists(root, SCRIPTS_DIR):
        wanted.update(SCRIPTS_DIR + "/" + name for name in root.listdir(SCRIPTS_DIR))
    found = []
    for path in sorted(wanted):
        try:
            st = root.lstat(path)
        except UnsafePath:
            continue
        if st is not None and stat.S_ISDIR(st.st_mode):
            found.append(path)
    return found


def _access_findings(root: Root, directories: list) -> list:
    """Can this user create, rename and remove entries where pm writes?"""
    mode = os.W_OK | os.X_OK
    effective = os.access in os.supports_effective_ids
    where = [d for d in directories if not os.access(root.host_path(d), mode, effective_ids=effective)]
    if not root_exists(root, DB_DIR):                  # pm makes var/lib/pm in the nearest one
        nearest = next((p for p in ("/var/lib", "/var") if root_exists(root, p)), "/")
        if not os.access(root.host_path(nearest), mode, effective_ids=effective):
            where.append(nearest)
    lock = DB_DIR + "/lock"
    if root_exists(root, lock) and not os.access(root.host_path(lock), os.W_OK, effective_ids=effective):
        where.append(lock)
    who = "uid %d" % os.geteuid()
    if not where:
        return [Finding("access", Finding.OK, "%s can write where pm writes in %s (%s)"
                        % (who, root.path, counted(len(directories), "directory", "directories")))]
    why = ""
    try:
        if os.statvfs(root.path).f_flag & getattr(os, "ST_RDONLY", 1):
            why = " (the root is on a read-only filesystem)"
    except OSError:
        pass
    return [Finding("access", Finding.PROBLEM, "%s cannot write %s pm writes in%s: %s"
                    % (who, counted(len(where), "place"), why, _some(root, sorted(where))))]


def _shared_findings(root: Root, directories: list) -> list:
    """What a software area shared by a group needs (pkgsrc on grid sites): umask 002,
    group-writable directories and lock, a group this user is in."""
    findings = []
    umask = process_umask()
    if umask & 0o020:
        findings.append(Finding("umask", Finding.PROBLEM, "the umask is %04o; a shared area needs "
                                "group-writable files: run 'umask 002' first" % umask))
    else:
        findings.append(Finding("umask", Finding.OK, "the umask is %04o" % umask))
    top = os.stat(root.path)
    groups = {os.getegid(), *os.getgroups()}
    if top.st_gid not in groups:
        findings.append(Finding("group", Finding.PROBLEM, "the root belongs to group %s, which this "
                                "user is not in" % _group_name(top.st_gid)))
    else:
        findings.append(Finding("group", Finding.OK, "the root belongs to group %s, one of this user's"
                                % _group_name(top.st_gid)))
    closed = [d for d in directories if not os.stat(root.host_path(d)).st_mode & 0o020]
    lock = root.lstat(DB_DIR + "/lock")
    if lock is not None and not lock.st_mode & 0o020:
        closed.append(DB_DIR + "/lock")
    if closed:
        findings.append(Finding("group-write", Finding.PROBLEM, "%s pm writes in not group-writable "
                                "(chmod g+w): %s" % (counted(len(closed), "place"), _some(root, closed))))
    else:
        findings.append(Finding("group-write", Finding.OK, "every place pm writes in is group-writable"))
    if not top.st_mode & stat.S_ISGID:
        findings.append(Finding("setgid", Finding.NOTE, "the root has no setgid bit: new files get "
                                "the creator's group, not the root's (chmod g+s keeps it)"))
    return findings


def _group_name(gid: int) -> str:
    try:
        import grp
        return grp.getgrgid(gid).gr_name
    except (ImportError, KeyError):
        return str(gid)


def _database_findings(db: Database, problem: str | None) -> list:
    if problem:
        return [Finding("database", Finding.PROBLEM, problem)]
    findings = []
    for name in sorted(db.packages):
        try:
            db.files(name)
        except InvalidInput as e:
            findings.append(Finding("database", Finding.PROBLEM, e.message))
    for entry in db.pending:
        what = "%s of %s" % (entry["script"], entry["package"])
        findings.append(Finding("scripts", Finding.PROBLEM, "%s %s; pm recover runs it again"
                                % (what, "failed" if entry.get("error") else "has not run yet")))
    if not findings:
        installed = len(db.installed())
        findings.append(Finding("database", Finding.OK, "the database is readable: %s installed"
                                % counted(installed, "package")))
    return findings


def _journal_findings(root: Root, db: Database, holder: str | None) -> tuple:
    """``(journal or None, findings)`` about an interrupted transaction."""
    try:
        journal = read_journal(root)
    except InvalidInput as e:
        return None, [Finding("journal", Finding.PROBLEM, e.message)]
    if journal is None:
        return None, [Finding("journal", Finding.OK, "no interrupted transaction")]
    if holder is not None:
        return journal, [Finding("journal", Finding.NOTE, "a transaction is in progress (%s)"
                                 % RootLock.who(holder))]
    fate = "finishes" if db.txid == journal["txid"] else "undoes"
    return journal, [Finding("journal", Finding.PROBLEM, "a transaction was interrupted; pm recover "
                             "(or the next pm command that changes the root) %s it" % fate)]


def _debris_findings(root: Root, db: Database, directories: list, journal: dict | None,
                     holder: str | None) -> list:
    """Staging files (named STAGING_PREFIX…) and temporary database files: those of the
    journal's transaction are recovery's to remove; any others are debris."""
    current = journal["txid"] if journal else None
    places = set(directories)
    if journal:
        places.update(parent_of(op.path) for op in journal["ops"])
    ours, stray = [], []
    for directory in sorted(places):
        try:
            names = root.listdir(directory)
        except (FileNotFoundError, NotADirectoryError, UnsafePath):
            continue
        for name in names:
            path = directory.rstrip("/") + "/" + name
            if name.startswith(STAGING_PREFIX):
                txid = name[len(STAGING_PREFIX):].split(".", 1)[0]
                (ours if txid == current else stray).append(path)
            elif directory == DB_DIR and name in ("journal.tmp", "status.tmp"):
                (ours if current else stray).append(path)
    if root_exists(root, FILES_DIR):
        referenced = {r["files"] for r in db.packages.values()}
        if journal:
            referenced.update(journal["lists"] + journal["obsolete"])
        stray += [FILES_DIR + "/" + n for n in sorted(root.listdir(FILES_DIR)) if n not in referenced]
    findings = []
    if ours:
        whose = "the transaction in progress" if holder else "the interrupted transaction (pm recover removes them)"
        findings.append(Finding("staging", Finding.NOTE if holder else Finding.PROBLEM, "%s of %s: %s"
                                % (counted(len(ours), "staging file"), whose, _some(root, ours))))
    if stray and holder is None:
        findings.append(Finding("staging", Finding.PROBLEM, "%s of no transaction (safe to delete): %s"
                                % (counted(len(stray), "leftover file"), _some(root, stray))))
    elif stray:
        findings.append(Finding("staging", Finding.NOTE, "%s, perhaps of the transaction in progress: %s"
                                % (counted(len(stray), "staging file"), _some(root, stray))))
    if not findings:
        findings.append(Finding("staging", Finding.OK, "no leftover staging files"))
    return findings


def _module_findings(settings: dict) -> list:
    """Which of pm's runtime modules are importable here (SPEC §2)."""
    import importlib
    findings = []

    def present(module):
        try:
            return importlib.import_module(module)
        except ImportError:
            return None

    msgpack = present("msgpack")
    if msgpack is None:
        findings.append(Finding("msgpack", Finding.PROBLEM, "msgpack is missing: pm cannot read its "
                                "database (pip install msgpack)"))
    elif getattr(msgpack.Packer, "__module__", "").endswith("_cmsgpack"):
        findings.append(Finding("msgpack", Finding.OK, "msgpack %s with its C extension"
                                % ".".join(str(n) for n in getattr(msgpack, "version", ()))))
    else:
        findings.append(Finding("msgpack", Finding.NOTE, "msgpack runs without its C extension "
                                "(pure Python: slower on large databases)"))
    findings.append(Finding("semver", Finding.OK, "semver is present") if present("semver") else
                    Finding("semver", Finding.PROBLEM, "semver is missing: pm cannot read versions "
                            "(pip install semver)"))
    findings.append(Finding("zstandard", Finding.OK, "zstandard is present (.tar.zst packages)")
                    if present("zstandard") else
                    Finding("zstandard", Finding.NOTE, "zstandard is missing: .tar.zst packages "
                            "cannot be read (pip install zstandard)"))
    wants_postgres = any(v.startswith(("postgres://", "postgresql://")) for v in settings.values())
    if present("psycopg"):
        findings.append(Finding("psycopg", Finding.OK, "psycopg is present (PostgreSQL ODA)"))
    else:
        findings.append(Finding("psycopg", Finding.PROBLEM if wants_postgres else Finding.NOTE,
                                "psycopg is missing: %s (pip install psycopg)" % (
                                    "pm.conf names a PostgreSQL database" if wants_postgres
                                    else "needed only for a PostgreSQL ODA")))
    return findings


# -- prerequisites (install_prereq's prereq.cfg) ---------------------------------------

PREREQ_CONFIG = "prereq.cfg"


# =============================================================================
# 15. Prerequisites: prereq.cfg files
# =============================================================================
#
# OSCAR's install_prereq: a prereq.cfg names, per distribution, packages to install or
# remove and commands to run.  This section reads those files and this root's identity;
# section 16 applies them (apply_prereq, undo_prereq).

MAX_PREREQ_CONFIG = 1 << 20           # a prereq.cfg or order file is a few lines


class PrereqEntry:
    """One line of a prereq.cfg block: ``install`` a package name or file, ``remove``
    (``!name``) or ``command`` (``:bash: …`` or ``sh: …``, run by ``shell``)."""

    INSTALL, REMOVE, COMMAND = "install", "remove", "command"

    def __init__(self, kind: str, text: str, line: int, shell: str | None = None):
        self.kind, self.text, self.line, self.shell = kind, text, line, shell

    def __str__(self):
        if self.kind == self.REMOVE:
            return "!" + self.text
        if self.kind == self.COMMAND:
            return (":bash: " if self.shell == "bash" else "sh: ") + self.text
        return self.text


class PrereqBlock:
    """A ``[distro:version:arch]`` block: each field a ``|``-list of alternatives in
    which ``*`` matches anything; the entries below it in order."""

    def __init__(self, header: str, line: int):
        import re
        self.header, self.line = header, line
        fields = header[1:-1].split(":")
        if len(fields) != 3 or not all(fields):
            raise ValueError("a block header is [distro:version:architecture]")
        self.patterns = []
        for field in fields:
            alternatives = (".*".join(re.escape(p) for p in alt.split("*")) for alt in field.split("|"))
            self.patterns.append(re.compile("(?:%s)\\Z" % "|".join(alternatives), re.IGNORECASE))
        self.entries: list = []

    def of(self, kind: str) -> list:
        """The entries of one kind, in order."""
        return [e for e in self.entries if e.kind == kind]

    def matches(self, system: dict) -> bool:
        """Whether the block applies to ``system`` (``distro``, ``version``, ``arch``): each value
        matches one of its field's alternatives whole, case ignored."""
        values = (system["distro"], system["version"], system["arch"])
        return all(p.match(v) for p, v in zip(self.patterns, values))


def parse_prereq_config(text: str, source: str) -> list:
    """The blocks of a prereq.cfg; InvalidInput naming the line of the first mistake."""
    blocks = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue

        def bad(problem):
            return InvalidInput("%s line %d: %s" % (source, number, problem))

        if line.startswith("["):
            if not line.endswith("]"):
                raise bad("a block header is [distro:version:architecture]")
            try:
                blocks.append(PrereqBlock(line, number))
            except ValueError as e:
                raise bad(str(e)) from None
            continue
        if not blocks:
            raise bad("%r comes before any [distro:version:architecture] header" % line)
        for prefix, shell in ((":bash:", "bash"), ("sh:", "sh")):
            if line.startswith(prefix):
                command = line[len(prefix):].strip()
                if not command:
                    raise bad("an empty command")
                blocks[-1].entries.append(PrereqEntry(PrereqEntry.COMMAND, command, number, shell))
                break
        else:
            if any(c.isspace() for c in line):
                raise bad("one package name or package file per line, not %r" % line)
            if line.startswith("!"):
                if not valid_package_name(line[1:]):
                    raise bad("bad package name %r" % line[1:])
                blocks[-1].entries.append(PrereqEntry(PrereqEntry.REMOVE, line[1:], number))
            else:
                blocks[-1].entries.append(PrereqEntry(PrereqEntry.INSTALL, line, number))
    return blocks


def read_os_release(root: Root) -> dict:
    """The ``KEY=value`` pairs of the root's os-release (etc/, else usr/lib/), or {}."""
    import shlex
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            data = root.read(path)
        except (FileNotFoundError, NotADirectoryError, UnsafePath):
            data = None
        if data is None:
            continue
        values = {}
        for line in data.decode("utf-8", "replace").splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and key and not key.startswith("#"):
                try:
                    values[key] = " ".join(shlex.split(value))
                except ValueError:
                    values[key] = value
        return values
    return {}


def system_identity(root: Root) -> dict:
    """What prereq.cfg headers match: the root's distribution ID and VERSION_ID, and its
    architecture (``architecture =`` in pm.conf, else this machine's)."""
    release = read_os_release(root)
    arch = read_settings(root).get("architecture") or os.uname().machine
    return {"distro": release.get("ID", ""), "version": release.get("VERSION_ID", ""), "arch": arch}


def prereq_directories(paths: list) -> list:
    """The prerequisite directories to process, in order: each PATH is a directory
    holding a prereq.cfg (or that file itself), or an order file listing such
    directories one per line (relative to the order file; ``#`` comments)."""
    found = []
    for path in paths:
        if os.path.isdir(path):
            found.append(_prereq_directory(path, path))
        elif os.path.basename(path) == PREREQ_CONFIG and os.path.isfile(path):
            found.append(os.path.dirname(os.path.abspath(path)))
        elif os.path.isfile(path):
            base = os.path.dirname(os.path.abspath(path))
            text = read_location(path, "order file", MAX_PREREQ_CONFIG).decode("utf-8", "replace")
            for number, line in enumerate(text.splitlines(), 1):
                line = line.strip()
                if line and not line.startswith("#"):
                    found.append(_prereq_directory(os.path.join(base, line), "%s line %d" % (path, number)))
        else:
            raise Refused("%s: no such prerequisite directory or order file" % path)
    return found


def _prereq_directory(path: str, where: str) -> str:
    if not os.path.isfile(os.path.join(path, PREREQ_CONFIG)):
        raise Refused("%s: %s has no %s" % (where, path, PREREQ_CONFIG))
    return os.path.abspath(path)


def read_prereq_block(directory: str, system: dict) -> PrereqBlock | None:
    """The first block of ``directory``'s prereq.cfg matching ``system`` (only that one
    counts, as with install_prereq), or None."""
    path = os.path.join(directory, PREREQ_CONFIG)
    text = read_location(path, "prerequisite file", MAX_PREREQ_CONFIG).decode("utf-8", "replace")
    return next((b for b in parse_prereq_config(text, path) if b.matches(system)), None)


def prereq_package_file(directory: str, entry: PrereqEntry) -> str | None:
    """The package file an install line names, in the prerequisite directory (a bare
    file name may also be found below it), or None when the line names a package."""
    text = entry.text
    direct = os.path.join(directory, text)
    if os.path.isfile(direct):
        return direct
    if "/" not in text and not text.endswith(PACKAGE_SUFFIXES):
        return None
    where = "%s/%s line %d" % (directory, PREREQ_CONFIG, entry.line)
    matches = []
    if "/" not in text:
        for top, dirs, files in os.walk(directory):
            dirs.sort()
            if text in files:
                matches.append(os.path.join(top, text))
    if len(matches) > 1:
        raise InvalidInput("%s: %s matches several files: %s" % (where, text, ", ".join(matches)))
    if not matches:
        raise Refused("%s: no package file %s in %s" % (where, text, directory))
    return matches[0]


def run_prereq_command(entry: PrereqEntry, directory: str, root_path: str, out: Output) -> str | None:
    """Run a ``:bash:`` or ``sh:`` line in the prerequisite directory with PM_ROOT set;
    None on success, else a one-line error.  Its stdout goes to stderr."""
    import subprocess
    env = dict(os.environ, PM_ROOT=root_path, PM_PREREQ_DIR=directory)
    for name in ("PM_FAULT", "PM_FAULT_COUNT"):
        env.pop(name, None)
    out.detail("running %s" % entry)
    sys.stdout.flush()
    try:
        result = subprocess.run([entry.shell, "-c", entry.text], cwd=directory, env=env,
                                stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno())
    except OSError as e:
        return "%s/%s line %d: %s could not run: %s" % (directory, PREREQ_CONFIG, entry.line,
                                                         entry.shell, e.strerror)
    if result.returncode != 0:
        return "%s/%s line %d: %r failed (%s)" % (directory, PREREQ_CONFIG, entry.line, entry.text,
                                                 describe_exit(result.returncode))
    return None


# =============================================================================
# 16. Operations: install, upgrade, uninstall, autoremove, prerequisites
# =============================================================================
#
# Every command that changes packages is read -> plan -> apply: read the database, the
# package files and what the sources offer (fetching what is chosen); plan (section 10:
# a Plan value, computed without changing anything); apply it (a dry run prints it, a real
# run runs the pre-scripts, the Transaction and the post-scripts).  The command line
# (section 17), prerequisite files and OPM's syncs (NodeActions) all come through here;
# nothing here parses arguments or prints a JSON document.


class Session:
    """One command's hold on a root: its output, its lock and its database, read after
    an interrupted transaction was recovered (SPEC §9)."""

    def __init__(self, root_path: str, out: Output, sync: bool = True, wait: float = 0.0,
                 sources=(), assume_yes: bool = False, recover_on_read: bool = True):
        self.root = Root(root_path)
        self.out = out
        self.sync = sync                      # fsync (not with --unsafe-io)
        self.wait = wait                      # seconds to wait for the lock
        self.lock = RootLock(self.root)
        self.extra_sources = list(sources)    # --repository URL
        self.assume_yes = assume_yes          # -y: no question before a change
        self.recover_on_read = recover_on_read

    def on_root(self, root_path: str, out: Output) -> "Session":
        """A session on another root with this one's settings (a node's image in a sync)."""
        return Session(root_path, out, self.sync, self.wait, self.extra_sources, self.assume_yes)

    def close(self) -> None:
        """Release the root's lock (when held) and close the root's directory descriptors."""
        self.lock.release()
        self.root.close()

    def database(self, dry_run: bool, command: str) -> Database:
        """The database ``command`` works on: only read for a dry run, else read under
        the lock (write_db)."""
        return self.read_db() if dry_run else self.write_db(command)

    def read_db(self) -> Database:
        """The database for a command that changes nothing.  An interrupted transaction
        is recovered first when nobody holds the lock and the root is writable; else the
        last committed state is read, which is always whole."""
        interrupted = root_exists(self.root, JOURNAL) or root_exists(self.root, JOURNAL + ".tmp")
        if self.recover_on_read and interrupted \
                and os.access(self.root.host_path(DB_DIR), os.W_OK) and self.lock.try_acquire():
            try:
                recover(self.root, self.out)
            finally:
                self.lock.release()
        return self._warn_pending(Database(self.root).load())

    def write_db(self, command: str) -> Database:
        """Take the lock (waiting up to ``wait``), recover, and return the database."""
        self.lock.acquire(self.wait, command)
        recover(self.root, self.out)
        return self._warn_pending(Database(self.root).load())

    def check_snapshot(self, db: Database) -> None:
        """Raise StateChanged when what a reader found may come from a writer's
        transaction rather than from ``db``'s committed state: the database or lock
        changed since it was read, or a transaction is running now."""
        if db.snapshot_token() != db.token or (root_exists(self.root, JOURNAL) and self.lock.holder()):
            raise StateChanged("the database changed while it was read")

    def wait_for_writer(self) -> None:
        """Wait (a bounded time) until no transaction is running on the root."""
        import time
        deadline = time.monotonic() + READ_RETRY_WAIT
        time.sleep(0.01)
        while time.monotonic() < deadline and root_exists(self.root, JOURNAL) and self.lock.holder():
            time.sleep(0.02)

    def _warn_pending(self, db: Database) -> Database:
        for entry in db.pending:
            if entry.get("error"):
                self.out.warn("%s; pm recover runs it again" % entry["error"])
        return db


# -- read ---------------------------------------------------------------------------

def looks_like_file(argument: str) -> bool:
    """A command-line package argument is a file when it has a directory part or a
    package file's ending; a bare name is a package name, whatever files the current
    directory holds (as with apt: ``./name`` for a local file)."""
    return "/" in argument or argument.endswith(PACKAGE_SUFFIXES)


def parse_spec(spec: str) -> Requirement:
    """A ``NAME[CONSTRAINT]`` argument as a requested Requirement: ``lib``, ``lib>=1.2``,
    ``lib=1.0``, ``lib^1``, ``"lib >=1,<2"``; a malformed constraint is InvalidInput."""
    import re
    text = spec.strip()
    name, _, constraint = text.partition(" ")
    if not constraint:
        match = re.match(r"^(.*?)([=<>!^~*].*)?$", text)
        name, constraint = match.group(1), match.group(2) or ""
    if not name:
        raise UsageError("a package name is needed, not %s" % ("an empty string" if not text else shown(spec)))
    if not valid_package_name(name):
        raise UsageError("bad package name %s" % shown(name) + (
            "" if name == text or len(spec) > MAX_SHOWN_ARGUMENT else " in %s" % shown(spec)))
    return Requirement(name, Constraint.parse(constraint.strip(), name))


def read_package_files(paths: list, options: Options) -> list:
    """The package files ``paths``, opened and checked (Package); the caller closes them."""
    packages = []
    try:
        for path in paths:
            if os.path.isdir(path):
                raise InvalidInput("%s is not a regular file but a directory: give a package file, or use "
                                   "the directory as a source (pm --repository %s install NAME)" % (path, path))
            packages.append(Package(path, options.allow_setuid))
    except BaseException:
        close_all(packages)
        raise
    return packages


def close_all(packages: list) -> None:
    """Close each of ``packages`` (Package files)."""
    for package in packages:
        package.close()


def architecture_wanted(root: Root, options: Options) -> str | None:
    """The architecture packages must be built for: the root's, or None (any) with
    ``force_architecture``."""
    return None if options.force_architecture else root_architecture(root)


def _download_size(root: Root, candidate) -> int:
    """Bytes fetching ``candidate`` downloads: its index size for a remote source, unless
    a copy of that size is already in the cache; nothing for a directory source."""
    if candidate.source is None or candidate.source.kind == "dir" or candidate.entry is None:
        return 0
    size = candidate.entry.get("size") or 0
    info = root.lstat(PACKAGE_CACHE_DIR + "/" + candidate.source.slug + "/" + candidate.entry["filename"])
    return 0 if info is not None and stat.S_ISREG(info.st_mode) and info.st_size == size else size


def _candidate_rows(root: Root, db: Database, pool: Pool, chosen: dict, allow_same: bool) -> list:
    """Summary rows of what the resolver chose, before anything is fetched: the index
    gives download and installed sizes (apt's Installed-Size)."""
    rows, order, seen = [], [], set()

    def visit(name):                      # dependencies first, as the transaction orders them
        if name in seen or name not in chosen:
            return
        seen.add(name)
        for dependency in sorted(chosen[name].dependencies):
            visit(dependency)
        order.append(name)
    for name in sorted(chosen):
        visit(name)
    for name in order:
        candidate = chosen[name]
        if candidate.installed:
            continue
        old = pool.installed.get(name)
        if old is None:
            action = "install"
        elif candidate.version > old.version:
            action = "upgrade"
        elif candidate.version < old.version:
            action = "downgrade"
        elif allow_same or candidate.version.unversioned:
            action = "reinstall"
        else:
            continue
        if candidate.package is not None:
            new_size, download = installed_bytes(candidate.package), 0
        else:
            new_size, download = candidate.entry.get("installed_size"), _download_size(root, candidate)
        old_size = db.get(name).size if old is not None else None
        rows.append(summary_row(action, name, candidate.version.text, old.version.text if old else None,
                                download, new_size, old_size))
    return rows


def _newest_allowed(pool: Pool, requests: list, pre: bool) -> dict:
    """For --no-deps: each request's newest candidate its constraint allows."""
    chosen = dict(pool.pinned)
    for request in requests:
        for candidate in pool.candidates(request.name):
            if request.constraint.allows(candidate.version, pre or candidate.installed):
                chosen[request.name] = candidate
                break
        else:
            raise Refused("no version of %s satisfies %s" % (request.name, request.constraint))
    return chosen


def choose_for_install(session: Session, db: Database, sources: list, packages: list, requests: list,
                       options: Options) -> tuple:
    """``(pool, chosen, explicit)``: the resolver's choice for ``requests`` and the
    package files ``packages`` against ``db`` and ``sources`` (SPEC §10); refused when
    a name is offered by no source."""
    pool = build_pool(session.root, db, session.out, sources, packages, options.force_architecture)
    for request in requests:
        if not pool.knows(request.name) and request.name in pool.other_architectures:
            raise Refused("no source offers %s for this root's architecture %s, only for %s "
                          "(use --force-architecture)" % (request.name, root_architecture(session.root),
                                                         pool.other_architectures[request.name]))
        if not pool.knows(request.name) and os.path.isdir(request.name):
            raise InvalidInput("%s is a directory, not the name of a package any source offers: "
                               "give a package file, or use the directory as a source "
                               "(pm --repository %s install NAME)" % (request.name, request.name))
        if not pool.knows(request.name):
            raise Refused("no source offers a package named %s%s" % (request.name, "" if sources else
                          " (no sources are configured in %s)" % sources_files(session.root)))
    if options.no_deps:
        chosen = _newest_allowed(pool, requests, options.pre)
        return pool, chosen, set(chosen)
    names = {r.name for r in requests}
    chosen, explicit = resolve_requests(pool, requests, pre=options.pre, allow_downgrade=options.allow_same_version,
                                        reinstall=names if options.allow_same_version else (), out=session.out)
    return pool, chosen, explicit


def choose_for_upgrade(session: Session, db: Database, sources: list, names: list, options: Options) -> tuple:
    """``(pool, chosen, explicit)``: the newest versions of the installed packages (or
    of ``names``) the sources offer and the installed packages' dependencies allow."""
    for name in names:
        if db.get(name) is None or not db.get(name).installed:
            raise Refused("%s is not installed" % name)
    pool = build_pool(session.root, db, session.out, sources)
    return pool, resolve_requests(pool, [], upgrade=set(names) or True, pre=options.pre, out=session.out)[0], set()


class SourceChoice:
    """What an install by name or an upgrade takes from the sources: the resolver's
    choice on one database (``choose(db)`` gives ``(pool, chosen, explicit)``), the
    packages fetched for it, and the report rows and download sizes."""

    def __init__(self, session: Session, db: Database, choose):
        self.session, self.choose = session, choose
        self.pool, self.chosen, self.explicit = choose(db)
        self.fetched: list = []
        self.rows: list = []            # {"package", "version", "url"} of each fetched package
        self.downloads: dict = {}       # name -> bytes to download

    def preview(self, db: Database, options: Options, confirm: bool) -> dict | None:
        """The summary of the choice, before anything is fetched.  A real run shows it
        and asks when ``confirm``.  A dry run that would have to download a package,
        without -v, stops here: its report is returned, and nothing is fetched.  Names
        asked for that are installed and stay so are said first."""
        for name in sorted(self.explicit):
            candidate = self.chosen.get(name)
            if candidate is not None and candidate.installed and candidate.package is None:
                self.session.out.say("%s %s is already installed" % (name, candidate.version))
        rows = _candidate_rows(self.session.root, db, self.pool, self.chosen, options.allow_same_version)
        summary = summarize(rows)
        self.downloads = {r["package"]: r["download_size"] for r in rows}
        if not options.dry_run:
            if confirm and rows:
                confirm_summary(self.session, summary)
            return None
        if self.session.out.verbosity > 0 or not any(self.downloads.values()):
            return None
        for line in summary_lines(summary):
            self.session.out.result(line)
        changes = [{"package": r["package"], "action": r["action"], "version": r["version"],
                    "old_version": r["old_version"], "steps": [], "scripts": []} for r in rows]
        return {"dry_run": True, "changes": changes, "reasons": {}, "fetched": [], "script_failures": [],
                "summary": summary, "operations": None}

    def fetch(self, fetcher: Fetcher, options: Options) -> None:
        """Fetch and check the chosen packages that come from sources."""
        for name in sorted(self.chosen):
            candidate = self.chosen[name]
            if candidate.installed or candidate.package is not None:
                continue
            self.fetched.append(fetcher.fetch(candidate, options.allow_setuid))
            self.rows.append({"package": name, "version": candidate.version.text,
                              "url": package_url(candidate.source, candidate.entry)})
            self.session.out.detail("fetched %s %s from %s" % (name, candidate.version, candidate.source.url))

    def again(self, before: Database, db: Database) -> None:
        """After locking: when another pm changed the root since ``before`` was read,
        choose again on ``db``; refused when that needs a package not fetched, and the
        fetched packages no longer chosen are dropped."""
        if (db.txid, db.packages) == (before.txid, before.packages):
            return
        self.pool, self.chosen, self.explicit = self.choose(db)
        have = {(p.name, p.version.text) for p in self.fetched}
        for name, candidate in sorted(self.chosen.items()):
            if not candidate.installed and candidate.package is None and (name, candidate.version.text) not in have:
                raise Refused("the root changed while packages were downloaded (%s %s is now needed); "
                              "run the command again" % (name, candidate.version))
        kept = []
        for package in self.fetched:
            candidate = self.chosen.get(package.name)
            if candidate is not None and not candidate.installed and candidate.version.text == package.version.text:
                kept.append(package)
            else:
                package.close()
        self.fetched = kept
        self.rows = [row for row in self.rows if row["package"] in {p.name for p in kept}]

    def reasons(self) -> dict:
        """Install reasons: explicit for what was asked for, dependency for what it pulled in."""
        reasons = {p.name: REASON_DEPENDENCY for p in self.fetched if p.name not in self.pool.installed}
        reasons.update((name, REASON_EXPLICIT) for name in self.explicit)
        return reasons

    def close(self) -> None:
        """Close the packages fetched for the choice."""
        close_all(self.fetched)


# -- apply --------------------------------------------------------------------------

_PAST = {"install": "installed", "upgrade": "upgraded", "reinstall": "reinstalled",
         "downgrade": "downgraded", "remove": "removed", "purge": "purged"}


def confirm_summary(session: Session, summary: dict) -> None:
    """Show the summary (stderr), then, when stdin is a terminal and -y was not given,
    ask; anything but yes (or Enter) refuses with nothing changed.  Never a prompt
    without a terminal: scripts and cron run on."""
    for line in summary_lines(summary):
        session.out.say(line)
    if session.assume_yes or not sys.stdin.isatty():
        return
    sys.stderr.write("Proceed? [Y/n] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    if not answer or answer.strip().lower() not in ("", "y", "yes"):
        raise Refused("aborted; nothing was changed")


def print_plan(out: Output, plan: Plan, summary: dict, options: Options) -> None:
    """A dry run's output: each change's summary line (``summary``: plan_summary's; with
    -v its steps), the scripts it would run, the reasons it would record, and the total."""
    lines = summary_lines(summary)
    for change, line in zip(plan.changes, lines):
        out.result(line)
        if out.verbosity > 0:
            for verb, path in change.steps:
                out.result("  %s %s" % (verb, path))
        for script in (change.pre_script, change.post_script):
            if script and not options.no_scripts:
                out.result("  run %s" % script)
    for name, reason in sorted(plan.relabel.items()):
        out.result("mark %s %s" % (name, reason))
    if plan.changes:
        out.result(lines[-1])
    if plan.empty:
        out.say("nothing to do")


def print_done(out: Output, plan: Plan) -> None:
    """What a real run did, once committed: each change, and config files kept."""
    for name, reason in sorted(plan.relabel.items()):
        out.result("marked %s %s" % (name, reason))
    for change in plan.changes:
        out.result(_PAST.get(change.action, change.action) + change.heading()[len(change.action):])
        for verb, path in change.steps:
            out.detail("  %s %s" % (verb, path))
            if verb == "write-new":
                out.say("%s kept; the packaged version is %s" % (path[:-len(".pm-new")], path))
            elif verb == "save":
                out.say("%s is no longer a config file of %s; your modified version is kept as %s"
                        % (path[:-len(SAVED_SUFFIX)], change.name, path))


def run_pre_scripts(session: Session, plan: Plan) -> None:
    """Each change's pre-script; the first failure refuses the command, nothing changed."""
    for change in plan.changes:
        if change.pre_script:
            content = change.package.scripts[change.pre_script] if change.package else \
                session.root.read(SCRIPTS_DIR + "/" + change.name + "/" + change.pre_script)
            error = run_script(session.root.path, content, change.pre_script, change.name, change.version,
                               change.old_version, change.script_action, session.out)
            if error:
                raise Refused(error + "; nothing was changed")


def pending_scripts(db: Database, plan: Plan, options: Options) -> list:
    """The post-scripts to run after the commit, recorded in the database with it: those
    still pending from before, and this plan's."""
    changed = {c.name for c in plan.changes}
    pending = [entry for entry in db.pending if entry.get("package") not in changed]
    if not options.no_scripts:
        pending += [{"txid": plan.txid, "package": c.name, "script": c.post_script, "content": c.post_content,
                     "version": c.version, "old_version": c.old_version, "action": c.script_action,
                     "error": None} for c in plan.changes if c.post_script]
    return pending


def apply(session: Session, db: Database, plan: Plan, options: Options, confirm: bool = False) -> tuple:
    """Carry out ``plan`` (made from ``db``, which is locked unless a dry run): a dry run
    prints it; a real run checks it against the site's vulnerability list, asks when
    ``confirm``, runs the pre-scripts, the Transaction and the post-scripts.  Returns
    ``(exit code, report)``; anything refused before the commit changes nothing."""
    out = session.out
    for level, message in plan.notes:
        (out.warn if level == "warn" else out.say)(message)
    check_install_vulnerabilities(session.root, out, [(c.name, c.version) for c in plan.changes if c.package])
    report = plan_report(plan, options.dry_run)
    if options.dry_run or plan.empty:
        print_plan(out, plan, report["summary"], options)
        return EXIT_OK, report
    if confirm and plan.changes:
        confirm_summary(session, report["summary"])
    if not options.no_scripts:
        run_pre_scripts(session, plan)
    pending = pending_scripts(db, plan, options)
    total = sum(m.size for c in plan.changes if c.package for m, _ in plan.puts_of(c.package))
    progress = Progress(out, "installing" if total else "removing", total, unit="bytes" if total else "")
    Transaction(session.root, db, out, plan, session.sync).run(plan.packages, pending, progress)
    progress.finish()
    print_done(out, plan)
    failures = run_pending_scripts(session.root, db, out, session.sync, plan.txid)
    for failure in failures:
        out.error("%s (recorded; pm recover runs it again)" % failure)
    report["script_failures"] = failures
    return (EXIT_FAILED if failures else EXIT_OK), report


# -- the operations -----------------------------------------------------------------

def install(session: Session, specs: list, options: Options, db: Database | None = None) -> tuple:
    """Install ``specs`` — package files and ``NAME[CONSTRAINT]`` — as `pm install`
    does; returns ``(exit code, report)``.  Names are resolved with the dependencies of
    everything installed against the installed packages, the files given and the
    sources (SPEC §10); with no names and no sources, files are installed as they are
    (SPEC §8.2).  ``db`` is the database of a caller holding the lock; without it the
    packages are chosen and fetched first, and the lock is taken only to plan and apply
    (as apt and pacman do).  Anything refused raises PmError with nothing changed."""
    requests = [parse_spec(s) for s in specs if not looks_like_file(s)]
    packages = read_package_files([s for s in specs if looks_like_file(s)], options)
    fetcher, choice = Fetcher(session.root, session.out, scratch=options.dry_run), None
    try:
        lock_later = db is None and not options.dry_run
        if lock_later:
            refuse_writes_through_symlinks(session.root, packages)
        db = db or session.read_db()
        sources = read_sources(session.root, session.extra_sources)
        reasons = {p.name: REASON_EXPLICIT for p in packages}
        if requests or sources:
            choice = SourceChoice(session, db, lambda db: choose_for_install(
                session, db, sources, packages, requests, options))
            early = choice.preview(db, options, confirm=bool(requests))
            if early is not None:
                return EXIT_OK, early
            choice.fetch(fetcher, options)
        if lock_later:
            db, before = session.write_db("install " + " ".join(specs)), db
            if choice:
                choice.again(before, db)
        reasons.update(choice.reasons() if choice else {})
        plan = plan_install(db, session.root, packages + (choice.fetched if choice else []), reasons, options,
                            architecture_wanted(session.root, options),
                            relabel={name: r for name, r in reasons.items() if r == REASON_EXPLICIT})
        plan.downloads = choice.downloads if choice else {}
        code, report = apply(session, db, plan, options)
        return code, dict(report, fetched=choice.rows if choice else [])
    finally:
        close_all(packages)
        if choice:
            choice.close()
        fetcher.close()


def upgrade(session: Session, names: list, options: Options, db: Database | None = None) -> tuple:
    """Move the installed packages — or only ``names`` — to the newest versions the
    sources offer and the installed packages' dependencies allow, installing new
    dependencies they need, as `pm upgrade` does; returns ``(exit code, report)``.
    ``db`` as for install."""
    fetcher, choice = Fetcher(session.root, session.out, scratch=options.dry_run), None
    try:
        lock_later = db is None and not options.dry_run
        db = db or session.read_db()
        sources = read_sources(session.root, session.extra_sources)
        if not sources:
            session.out.say("no sources are configured in %s; nothing to upgrade" % sources_files(session.root))
        choice = SourceChoice(session, db, lambda db: choose_for_upgrade(session, db, sources, names, options))
        early = choice.preview(db, options, confirm=True)
        if early is not None:
            return EXIT_OK, early
        choice.fetch(fetcher, options)
        if lock_later:
            db, before = session.write_db("upgrade " + " ".join(names)), db
            choice.again(before, db)
        plan = plan_install(db, session.root, choice.fetched, choice.reasons(), options,
                            architecture_wanted(session.root, options))
        plan.downloads = choice.downloads
        code, report = apply(session, db, plan, options)
        return code, dict(report, fetched=choice.rows)
    finally:
        if choice:
            choice.close()
        fetcher.close()


def uninstall(session: Session, names: list, options: Options, db: Database | None = None,
              confirm: bool = False) -> tuple:
    """Uninstall ``names`` as `pm uninstall` does (``options``: purge, recursive,
    force_essential); returns ``(exit code, report)``.  ``db`` as for install."""
    db = db or session.database(options.dry_run, "uninstall " + " ".join(names))
    return apply(session, db, plan_uninstall(db, session.root, names, options), options, confirm=confirm)


def autoremove(session: Session, options: Options, db: Database | None = None) -> tuple:
    """Uninstall the packages installed as dependencies that no explicitly installed
    package needs any more, as `pm autoremove` does; returns ``(exit code, report)``."""
    db = db or session.database(options.dry_run, "autoremove")
    names = unneeded_packages(db.installed())
    return apply(session, db, plan_uninstall(db, session.root, names, options), options, confirm=True)


def install_files(session: Session, packages: list, options: Options, db: Database) -> tuple:
    """Install the package files ``packages`` (read) as they are, no source consulted,
    under the lock ``db`` was read with; returns ``(exit code, report)``."""
    reasons = {p.name: REASON_EXPLICIT for p in packages}
    plan = plan_install(db, session.root, packages, reasons, options, architecture_wanted(session.root, options))
    return apply(session, db, plan, options)


# -- prerequisites (section 15's prereq.cfg) applied --------------------------------

def prereq_requirement(directory: str, entry: PrereqEntry) -> Requirement:
    """The ``NAME[CONSTRAINT]`` of an install line that names no package file."""
    try:
        return parse_spec(entry.text)
    except PmError as e:
        raise InvalidInput("%s/%s line %d: %s" % (directory, PREREQ_CONFIG, entry.line, e.message)) from None


def prereq_package_name(directory: str, entry: PrereqEntry) -> tuple:
    """``(name, version or None)`` of an install line: read from the package file it
    names, else the name it gives."""
    path = prereq_package_file(directory, entry)
    if path is None:
        return prereq_requirement(directory, entry).name, None
    package = Package(path, allow_setuid=True)
    package.close()
    return package.name, package.version


def _prereq_record(report: dict, result: tuple) -> None:
    """Add one transaction's changes (``(exit code, report)``) to a prereq report; a failed
    post-script stops the run."""
    failures = result[1].get("script_failures")
    report["changes"] += result[1]["changes"]
    if failures:
        raise Refused("; ".join(failures) + " (recorded; pm recover runs it again)")


def apply_prereq(session: Session, directory: str, block: PrereqBlock, smart: bool, report: dict) -> None:
    """Removals, then installs, then commands of one matching block, under the lock the
    caller holds.  The block's files and names are checked before the first change; with
    ``smart`` the resolution from the sources (install) comes after the removals, as it
    must see their result."""
    root, where = session.root, "%s/%s" % (directory, PREREQ_CONFIG)
    installs = [(e, prereq_package_file(directory, e)) for e in block.of(PrereqEntry.INSTALL)]
    files = [path for _, path in installs if path is not None]
    names = [e for e, path in installs if path is None]
    requirements = [prereq_requirement(directory, e) for e in names]
    db = Database(root).load()
    installed = db.installed()
    missing = [r for r in requirements if r.name not in installed
               or not r.constraint.allows(Version.parse(installed[r.name].version), pre=True)]
    if missing and not smart:
        raise Refused("%s names %s, which --dumb cannot install (it installs only package files; "
                      "use --smart)" % (where, ", ".join("%s%s" % (r.name, "" if r.constraint.is_any else
                                                                    " " + str(r.constraint)) for r in missing)))
    packages = read_package_files(files, Options())
    try:
        gone = [e.text for e in block.of(PrereqEntry.REMOVE) if e.text in installed]
        if gone:
            _prereq_record(report, uninstall(session, gone, Options(), db=db))
        if smart and installs:
            _prereq_record(report, install(session, files + [e.text for e in names], Options(),
                                           db=Database(root).load()))
        elif packages:
            _prereq_record(report, install_files(session, packages, Options(), Database(root).load()))
    finally:
        close_all(packages)
    for entry in block.of(PrereqEntry.COMMAND):
        error = run_prereq_command(entry, directory, root.path, session.out)
        report["commands"].append({"command": str(entry), "line": entry.line, "ok": error is None})
        if error:
            raise Refused(error)


def undo_prereq(session: Session, directory: str, block: PrereqBlock, report: dict) -> None:
    """Uninstall what the block installs (removals and commands cannot be undone)."""
    names = []
    for entry in block.of(PrereqEntry.INSTALL):
        name = prereq_package_name(directory, entry)[0]
        if name not in names:
            names.append(name)
    db = Database(session.root).load()
    present = [n for n in names if n in db.installed()]
    if present:
        _prereq_record(report, uninstall(session, present, Options(), db=db))
    for entry in block.entries:
        if entry.kind != PrereqEntry.INSTALL:
            session.out.say("%s/%s line %d: %s is not undone" % (directory, PREREQ_CONFIG, entry.line, entry))


def prereq_status(work: list, installed: dict) -> list:
    """For each ``(directory, block)`` of ``work``, which lines of its matching block
    are in effect against ``installed`` ({name: PackageRecord}): ``installed``, ``older``
    or ``missing`` (installs), ``present`` or ``absent`` (removals), ``command`` (not
    trackable).  Returns one report per directory: path, block header (None: no block
    matches) and entries (line, kind, text, state, version)."""
    reports = []
    for directory, block in work:
        report = {"path": directory, "block": block.header if block else None, "entries": []}
        reports.append(report)
        for entry in block.entries if block else ():
            version = None
            if entry.kind == PrereqEntry.COMMAND:
                state = "command"
            elif entry.kind == PrereqEntry.REMOVE:
                state = "present" if entry.text in installed else "absent"
                version = installed[entry.text].version if entry.text in installed else None
            else:
                name, wanted = prereq_package_name(directory, entry)
                record = installed.get(name)
                version = record.version if record else None
                if record is None:
                    state = "missing"
                elif wanted is not None:
                    state = "installed" if Version.parse(version) >= wanted else "older"
                else:
                    constraint = prereq_requirement(directory, entry).constraint
                    state = "installed" if constraint.allows(Version.parse(version), pre=True) else "older"
            report["entries"].append({"line": entry.line, "kind": entry.kind, "text": str(entry),
                                      "state": state, "version": version})
    return reports


# -- OPM's installs (section 13's actions) ------------------------------------------

class NestedOutput(Output):
    """The output of a step inside another command (an install during ``opm sync``):
    its result lines become the outer command's messages, its warnings the outer
    command's, so that the outer command's stdout and JSON stay its own."""

    def __init__(self, outer: Output, prefix: str):
        super().__init__(False, outer.verbosity)
        self.outer, self.prefix = outer, prefix

    def result(self, line: str) -> None:
        """A result line of the inner step, said as the outer command's message (stderr,
        prefixed), never on its stdout."""
        self.outer.say(self.prefix + line)

    def warn(self, message: str) -> None:
        """A warning of the inner step, prefixed, given to the outer command as its own (shown there
        and in its JSON document's warnings)."""
        self.outer.warn(self.prefix + message)


class NodeActions:
    """A sync's installs and uninstalls (OpmSync's ``actions``): each one install or
    uninstall on the node's root, with that root's lock, recovery, sources and scripts,
    as ``pm install`` and ``pm uninstall`` would do them."""

    def __init__(self, session: Session):
        self.session = session

    def install(self, root_path: str, package: str) -> None:
        """Install ``package`` by name from the root's sources (with what it depends on);
        a no-op when it is installed already."""
        self._run(root_path, package, "install", lambda node, db: install(node, [package], Options(), db=db))

    def uninstall(self, root_path: str, package: str) -> None:
        """Uninstall ``package`` from the root (refused while another package needs it)."""
        self._run(root_path, package, "uninstall", lambda node, db: uninstall(node, [package], Options(), db=db))

    def _run(self, root_path: str, package: str, verb: str, operation) -> None:
        """Run ``operation(session, db)`` on the node's root under its lock; a post-script
        that failed fails the stage (pm recover also reruns it)."""
        node = self.session.on_root(root_path, NestedOutput(self.session.out, "  %s: " % package))
        try:
            code, report = operation(node, node.write_db("opm sync: %s %s" % (verb, package)))
        finally:
            node.close()
        if code != EXIT_OK:
            raise Refused("; ".join(report.get("script_failures") or ()) or "pm exited with %d" % code)


# =============================================================================
# 17. Command line
# =============================================================================

def _finite_only(value):
    """``value`` with every infinite or NaN number replaced by None (JSON has none)."""
    if isinstance(value, float):
        return value if value - value == 0 else None
    if isinstance(value, dict):
        return {k: _finite_only(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_only(v) for v in value]
    return value


def print_report(session: Session, report, code: int) -> int:
    """Print the JSON document of a command (with --json) and return its exit code.  A
    report is an object (which gets the warnings) or, for listings, a list of rows."""
    if session.out.json_mode:
        import json
        if isinstance(report, dict):
            report = dict(report, warnings=session.out.warnings)
        try:
            text = json.dumps(report, indent=2, sort_keys=True, default=str, allow_nan=False)
        except ValueError:     # a non-finite number from a damaged database: null in strict JSON
            text = json.dumps(_finite_only(report), indent=2, sort_keys=True, default=str,
                              allow_nan=False)
        sys.stdout.write(text + "\n")
    return code


def open_session(args) -> Session:
    """The Session of a parsed command line: its root, output, lock settings, sources,
    TLS trust and time limits."""
    session = Session(args.root, Output(args.json, args.verbose - args.quiet), sync=not args.unsafe_io,
                      wait=args.wait, sources=args.repository or (), assume_yes=args.yes,
                      recover_on_read=not args.dry_run_mode)
    try:
        configure_tls(session.root, args.ca)
        configure_limits(session.root, args)
    except BaseException:
        session.close()
        raise
    return session


def configure_limits(root: Root, args) -> None:
    """--timeout and --script-timeout, else their pm.conf settings, else the defaults."""
    wanted = {"timeout": (transfer_settings, HTTP_TIMEOUT),
              "script_timeout": (script_settings, SCRIPT_TIMEOUT)}
    settings = None
    for key, (target, default) in wanted.items():
        value = getattr(args, key, None)
        if value is None and not getattr(args, "reads_only", False):
            if settings is None:
                try:
                    settings = read_settings(root)
                except InvalidInput:
                    raise
                except PmError:          # no root: the command itself says so
                    settings = {}
            if key in settings:
                try:
                    value = _seconds(settings[key])
                except ValueError:
                    raise InvalidInput("%s: %s = %r is not a positive number of seconds" % (
                        root.host_path(PM_CONF), key, settings[key])) from None
        target["timeout"] = value if value is not None else default


def options_of(args) -> Options:
    """The Options of a parsed install, upgrade, uninstall or autoremove command line."""
    return Options(**{name: getattr(args, name) for name in Options.FIELDS if hasattr(args, name)})


def cmd_install(session: Session, args) -> int:
    code, report = install(session, args.packages, options_of(args))
    return print_report(session, report, code)


def cmd_upgrade(session: Session, args) -> int:
    code, report = upgrade(session, args.names, options_of(args))
    return print_report(session, report, code)


def cmd_autoremove(session: Session, args) -> int:
    code, report = autoremove(session, options_of(args))
    return print_report(session, report, code)


def cmd_update(session: Session, args) -> int:
    sources = read_sources(session.root, session.extra_sources)
    if not sources:
        session.out.say("no sources are configured in %s" % sources_files(session.root))
    for origin in dict.fromkeys(s.origin for s in sources if s.origin):
        listed = [s for s in sources if s.origin == origin]
        session.out.result("sources from %s: %s" % (session.root.host_path(origin),
                                                     ", ".join(s.url for s in listed)))
    reports = update_sources(session.root, sources, session.out, args.dry_run, session.sync,
                             lock=None if args.dry_run else lambda: session.write_db("update"))
    for report in reports:
        if report["error"]:
            session.out.error(report["error"])
        else:
            session.out.result("%s: %d package%s%s%s" % (report["url"], report["packages"],
                               "" if report["packages"] == 1 else "s",
                               " (read in place)" if report["kind"] == "dir" else "",
                               ", signed by key %s, serial %d" % (report["signed_by"], report["serial"])
                               if report["signed_by"] else ""))
    upgradable = []
    if not args.dry_run:
        readable = [s for s, r in zip(sources, reports) if not r["error"]]   # the others said why
        upgradable = upgradable_packages(session.root, Database(session.root).load(), readable)
        if upgradable:
            session.out.say("%d package%s can be upgraded (pm upgrade)" % (
                len(upgradable), "" if len(upgradable) == 1 else "s"))
    code = max([r["exit_code"] for r in reports] or [EXIT_OK])
    return print_report(session, {"dry_run": args.dry_run, "sources": reports, "upgradable": upgradable}, code)


def cmd_key_needs_command(session: Session, args) -> int:
    raise UsageError("pm key needs a command: add, list or remove (pm key -h)")


def cmd_key_add(session: Session, args) -> int:
    try:
        with open(args.file, "rb") as f:
            data = f.read(MAX_SIGNIFY_FILE + 1)
    except OSError as e:
        raise PmError("cannot read %s: %s" % (args.file, e.strerror or e)) from None
    key = SignifyKey.parse(data, args.file)
    session.lock.acquire(session.wait, "key add")
    added = trust_key(session.root, key, data, args.file, session.sync)
    if added:
        session.out.result("trusted key %s (%s): %s" % (key.number, key.comment, key.file))
    else:
        session.out.say("key %s (%s) is already trusted" % (key.number, key.comment))
    return print_report(session, {"key": key.as_json(), "added": added}, EXIT_OK)


def cmd_key_list(session: Session, args) -> int:
    keys = trusted_keys(session.root)
    if not keys:
        session.out.say("no keys are trusted (%s is empty)" % session.root.host_path(KEYS_DIR))
    else:
        print_table(session.out, ("KEYNUM", "COMMENT", "FILE"), [(k.number, k.comment, k.file) for k in keys])
    return print_report(session, {"keys": [k.as_json() for k in keys]}, EXIT_OK)


def cmd_key_remove(session: Session, args) -> int:
    if not _matches(KEYNUM_PATTERN, args.keynum):
        raise UsageError("%r is not a key number (16 hex digits, as pm key list shows)" % args.keynum)
    session.lock.acquire(session.wait, "key remove")
    removed = distrust_key(session.root, args.keynum, session.sync)
    for key in removed:
        session.out.result("removed key %s (%s): %s" % (key.number, key.comment, key.file))
    return print_report(session, {"removed": [k.as_json() for k in removed]}, EXIT_OK)


def cmd_search(session: Session, args) -> int:
    db = session.read_db()
    sources = read_sources(session.root, session.extra_sources)
    if not sources:
        session.out.say("no sources are configured in %s" % sources_files(session.root))
    rows = search_packages(build_pool(session.root, db, session.out, sources), args.text)
    for row in rows:
        line = "%s %s (%s)" % (row["package"], row["version"], row["source"])
        if row["installed"]:
            line += " [installed %s]" % row["installed"]
        if row["description"]:
            line += " - " + row["description"]
        session.out.result(line)
    if not rows:
        session.out.say("no package matches %s" % " ".join(args.text) if args.text else "no package is offered")
    return print_report(session, {"packages": rows}, EXIT_OK if rows else EXIT_FAILED)


def cmd_clean(session: Session, args) -> int:
    """Empty the download cache, as apt-get clean and pacman -Scc do."""
    if not args.dry_run:
        session.lock.acquire(session.wait, "clean")
    removed, freed = clean_cache(session.root, args.dry_run, session.out)
    if removed:
        session.out.result("%s %s, %s" % ("would remove" if args.dry_run else "removed",
                                          counted(removed, "cached package file"), human_size(freed)))
    else:
        session.out.say("the download cache is empty; nothing to do")
    return print_report(session, {"dry_run": args.dry_run, "removed": removed, "freed": freed}, EXIT_OK)


def cmd_uninstall(session: Session, args) -> int:
    for name in args.names:
        check_package_name(name)
    code, report = uninstall(session, args.names, options_of(args), confirm=args.recursive)
    return print_report(session, report, code)


def cmd_list_installed(session: Session, args) -> int:
    db = session.read_db()
    rows, lines = [], []
    for name in sorted(db.packages):
        record = db.packages[name]
        if record["state"] != STATE_INSTALLED and not args.include_removed:
            continue
        if session.out.json_mode:
            rows.append({"name": name, "version": record["version"], "state": record["state"],
                         "reason": record["reason"], "time": record["time"]})
        line = "%s (%s)" % (name, record["version"])
        if args.include_removed:
            line += " [installed]" if record["state"] == STATE_INSTALLED else " [config remaining]"
        lines.append(line)
    if lines:
        session.out.result("\n".join(lines))        # one write, not one per package
    return print_report(session, {"packages": rows}, EXIT_OK)


_KIND_NAMES = {"f": "file", "d": "directory", "l": "symlink"}


def _package_info(package: Package, **known) -> dict:
    """The info document of a package file (or a fetched one): the keys of every info
    document, as _installed_info and _offered_info give them too."""
    info = {"package": package.name, "version": package.version.text, "manifest": package.manifest,
            "state": None, "reason": None, "time": None, "file": None, "source": None,
            "download_size": None, "sha256": None,
            "installed_size": sum(m.size for m in package.members if m.kind == "f"),
            "files": len(_member_rows(package)),
            "config_files": sorted(package.config_digests), "scripts": sorted(package.scripts)}
    info.update(known)
    return info


def _installed_info(session: Session, db: Database, name: str) -> dict:
    record = db.get(name)
    try:
        scripts = sorted(session.root.listdir(SCRIPTS_DIR + "/" + name))
    except (FileNotFoundError, NotADirectoryError):
        scripts = []
    return {"package": name, "version": record.version, "manifest": record.manifest,
            "state": record.state, "reason": record.reason, "time": int(record.time),
            "file": None, "source": None, "download_size": None, "sha256": None,
            "installed_size": record.size, "files": len(db.files(name)),
            "config_files": list(record.config), "scripts": scripts}


def _offered(session: Session, db: Database, name: str):
    """The candidate ``pm install NAME`` would choose from the sources (the newest
    release, else the newest pre-release), or None."""
    sources = read_sources(session.root, session.extra_sources)
    if not sources:
        return None
    pool = build_pool(session.root, db, session.out, sources)
    offered = [c for c in pool.candidates(name) if not c.installed]
    return next((c for c in offered if not c.version.prerelease), offered[0] if offered else None)


def _offered_info(candidate) -> dict:
    manifest = candidate.manifest
    config = manifest.get("configFiles")
    return {"package": candidate.name, "version": candidate.version.text, "manifest": manifest,
            "state": None, "reason": None, "time": None, "file": None,
            "source": candidate.source.url, "download_size": candidate.entry.get("size"),
            "sha256": candidate.entry.get("sha256"), "installed_size": None, "files": None,
            "config_files": list(config) if isinstance(config, list) else [], "scripts": []}


def _not_found(session: Session, name: str) -> Refused:
    if read_sources(session.root, session.extra_sources):
        return Refused("%s is not installed, and no source offers it" % name)
    return Refused("%s is not installed" % name)


def cmd_info(session: Session, args) -> int:
    """Like dpkg -I for a package file, dpkg -s / pacman -Qi for an installed package and
    apt show / pacman -Si for one only a source offers: the same keys for all three."""
    if looks_like_file(args.package):
        package = Package(args.package, allow_setuid=True)
        package.close()
        info = _package_info(package, file=os.path.abspath(args.package))
    else:
        check_package_name(args.package)
        db = session.read_db()
        if db.get(args.package) is not None:
            info = _installed_info(session, db, args.package)
        else:
            candidate = _offered(session, db, args.package)
            if candidate is None:
                raise _not_found(session, args.package)
            info = _offered_info(candidate)
    manifest = info["manifest"]
    size = (lambda n: None if n is None else human_size(n))
    time_text = None
    if info["time"] is not None:
        import time
        time_text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["time"]))
    lines = [("Package", info["package"]), ("Version", info["version"]),
             ("Name", manifest.get("name")), ("Description", manifest.get("description")),
             ("Authors", ", ".join(manifest["authors"]) if isinstance(manifest.get("authors"), list)
              else manifest.get("authors")),
             ("Depends", ", ".join("%s %s" % kv for kv in sorted(manifest.get("dependencies", {}).items()))),
             ("Conflicts", ", ".join("%s %s" % kv for kv in sorted(manifest.get("conflicts", {}).items()))),
             ("Provides", ", ".join(manifest.get("provides", []))),
             ("Architecture", manifest.get("architecture")),
             ("Config files", ", ".join(info["config_files"])),
             ("State", info["state"] or ("not installed" if info["file"] is None else None)),
             ("Reason", info["reason"]), ("Installed", time_text),
             ("Source", info["source"]), ("File", info["file"]),
             ("Download", size(info["download_size"])), ("Size", size(info["installed_size"])),
             ("Files", info["files"]), ("Scripts", ", ".join(info["scripts"])),
             ("Note", manifest.get("note")), ("Repo", manifest.get("repo"))]
    for label, value in lines:
        if value not in (None, "", []):
            session.out.result("%-13s %s" % (label + ":", value))
    return print_report(session, info, EXIT_OK)


def check_package_name(name: str) -> None:
    """A package name given on the command line, or UsageError saying what is wrong."""
    if not name:
        raise UsageError("a package name is needed, not an empty string")
    if not valid_package_name(name):
        raise UsageError("bad package name %s" % shown(name))


def _member_rows(package: Package) -> list:
    """The paths a package file would own, as files rows: its members and the parent
    directories they imply (the archive need not list them)."""
    import posixpath
    rows = {}
    for member in package.members:
        parent = posixpath.dirname(member.path)
        while parent != "/" and parent not in rows:
            rows[parent] = {"path": parent, "type": "directory", "mode": "0755", "size": 0, "sha256": None,
                            "link": None}
            parent = posixpath.dirname(parent)
    for member in package.members:
        rows[member.path] = {"path": member.path, "type": _KIND_NAMES[member.kind], "mode": "%04o" % member.mode,
                             "size": member.size if member.kind == "f" else 0, "sha256": None,
                             "link": member.link if member.kind == "l" else None}
    return [rows[path] for path in sorted(rows)]


def cmd_files(session: Session, args) -> int:
    """The paths an installed package owns (pacman -Ql); the members a package file
    holds (dpkg -c); or, for a package only a source offers, the members of the package
    it offers (fetched outside the root, as a dry run would, and thrown away)."""
    if looks_like_file(args.name):
        package = Package(args.name, allow_setuid=True)
        package.close()
        rows, name = _member_rows(package), package.name
    else:
        check_package_name(args.name)
        db = session.read_db()
        name = args.name
        if db.get(name) is None:
            candidate = _offered(session, db, name)
            if candidate is None:
                raise _not_found(session, name)
            fetcher = Fetcher(session.root, session.out, scratch=True)
            try:
                package = fetcher.fetch(candidate, allow_setuid=True)
                package.close()
            finally:
                fetcher.close()
            rows = _member_rows(package)
        else:
            entries = db.files(name)
            rows = []
            for path in sorted(entries):
                entry = entries[path]
                rows.append({"path": path, "type": _KIND_NAMES[entry.kind],
                             "mode": "%04o" % entry.mode, "size": entry.size,
                             "sha256": entry.digest.hex() if entry.digest else None, "link": entry.link})
    for row in rows:
        session.out.result(row["path"] if session.out.verbosity <= 0 else "%s %s %10d %s%s" % (
            row["type"][0], row["mode"], row["size"], row["path"], " -> " + row["link"] if row["link"] else ""))
    return print_report(session, {"package": name, "files": rows}, EXIT_OK)


def root_relative(session: Session, path: str) -> str:
    """A path given on the command line as a path within the root (``/etc/x``); a host
    path below the root is accepted too."""
    import posixpath
    if not path.startswith("/"):
        path = os.path.abspath(path)
    root = session.root.path.rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        path = path[len(root):] or "/"
    return posixpath.normpath(path)


def cmd_owner(session: Session, args) -> int:
    path = root_relative(session, args.path)
    db = session.read_db()
    owners = sorted(name for name in db.packages if path in db.files(name))
    if not owners:
        session.out.result("%s is not owned by any package" % path)
        return print_report(session, {"path": path, "owners": []}, EXIT_FAILED)
    session.out.result("%s is owned by %s" % (path, ", ".join(owners)))
    return print_report(session, {"path": path, "owners": owners}, EXIT_OK)


def cmd_verify(session: Session, args) -> int:
    db = session.read_db()
    names = args.names or sorted(db.installed())
    damage, modified = [], []
    for name in names:
        if db.get(name) is None:
            raise Refused("%s is not installed" % name)
        bad, changed = verify_package(session.root, db, name)
        damage += [(name, p, what) for p, what in bad]
        modified += [(name, p, what) for p, what in changed]
    if damage:
        session.check_snapshot(db)      # damage seen mid-transaction is no damage
    for name, path, what in damage:
        session.out.result("%s: %s: %s" % (name, path, what))
    for name, path, what in modified:
        session.out.result("%s: %s: %s (not damage)" % (name, path, what))
    if not damage:
        session.out.say("%d package%s verified, no damage" % (len(names), "" if len(names) == 1 else "s"))
    report = {"ok": not damage,
              "damage": [{"package": n, "path": p, "problem": w} for n, p, w in damage],
              "modified_config": [{"package": n, "path": p} for n, p, _ in modified]}
    return print_report(session, report, EXIT_DAMAGE if damage else EXIT_OK)


def cmd_recover(session: Session, args) -> int:
    session.lock.acquire(session.wait, "recover")
    done = recover(session.root, session.out)
    db = Database(session.root).load()
    had_leftovers = bool(read_leftovers(session.root))
    left = retry_leftovers(session.root, session.out)
    failures = run_pending_scripts(session.root, db, session.out, session.sync)
    if not done and not failures and not had_leftovers:
        session.out.say("nothing to recover")
    elif had_leftovers and not left:
        session.out.say("pm: removed what earlier transactions left behind")
    for failure in failures:
        session.out.error(failure)
    return print_report(session, {"transaction": done, "script_failures": failures},
                  EXIT_FAILED if failures else EXIT_OK)


def cmd_audit(session: Session, args) -> int:
    vulnerabilities = VulnerabilityList.load(session.root, args.vulns)
    out = session.out
    for number, problem in vulnerabilities.malformed:
        out.warn("%s line %d: %s" % (vulnerabilities.source, number, problem))
    installed = session.read_db().installed()
    affected = []
    for name, record in sorted(installed.items()):
        found = vulnerabilities.affecting(name, record.version)
        if found and Version.parse(record.version).unversioned:
            out.warn("%s is unversioned (oppm); assuming every listed vulnerability affects it" % name)
        for vulnerability in found:
            out.result(vulnerability.describe(record.version))
            affected.append(dict(vulnerability.as_json(), version=record.version))
    entries = sum(len(v) for v in vulnerabilities.entries.values())
    out.say("%s checked against %s of %s: %d affected"
            % (counted(len(installed), "installed package"), counted(entries, "entry", "entries"),
               vulnerabilities.source, len({a["package"] for a in affected})))
    report = {"source": vulnerabilities.source, "checked": len(installed), "entries": entries,
              "affected": affected,
              "malformed": [{"line": n, "problem": p} for n, p in vulnerabilities.malformed]}
    # a list with broken lines may hide a vulnerability: say so in the exit status too
    code = EXIT_FAILED if affected else EXIT_INVALID if vulnerabilities.malformed else EXIT_OK
    return print_report(session, report, code)


def cmd_doctor(session: Session, args) -> int:
    findings = diagnose(session.root, args.shared)
    for finding in findings:
        session.out.result("%-8s %s" % (finding.status, finding.message))
    problems = sum(1 for f in findings if f.status == Finding.PROBLEM)
    if problems:
        session.out.say("%s to act on" % counted(problems, "problem"))
    report = {"root": session.root.path, "ok": not problems, "findings": [f.as_json() for f in findings]}
    return print_report(session, report, EXIT_FAILED if problems else EXIT_OK)


def cmd_prereq(session: Session, args) -> int:
    system = system_identity(session.root)
    work = [(directory, read_prereq_block(directory, system)) for directory in prereq_directories(args.paths)]
    session.out.detail("this root is %(distro)s:%(version)s:%(arch)s" % system)
    if args.status:
        return _prereq_status(session, work, system)
    session.write_db("prereq " + " ".join(args.paths))
    reports = []
    for directory, block in (reversed(work) if args.remove else work):
        report = {"path": directory, "block": block.header if block else None, "changes": [], "commands": []}
        reports.append(report)
        if block is None:
            session.out.say("%s: no block of %s matches %s:%s:%s" % (
                directory, PREREQ_CONFIG, system["distro"], system["version"], system["arch"]))
        elif args.remove:
            undo_prereq(session, directory, block, report)
        else:
            apply_prereq(session, directory, block, args.smart, report)
    return print_report(session, {"system": system, "prerequisites": reports}, EXIT_OK)


def _prereq_status(session: Session, work: list, system: dict) -> int:
    """``pm prereq --status``: each matching block's lines and their state.  Exit 1 when
    something is not done."""
    reports = prereq_status(work, session.read_db().installed())
    for report in reports:
        if report["block"] is None:
            session.out.result("%s: no block matches %s:%s:%s" % (
                report["path"], system["distro"], system["version"], system["arch"]))
            continue
        session.out.result("%s %s" % (report["path"], report["block"]))
        for entry in report["entries"]:
            session.out.result("  %-9s %s%s" % (entry["state"], entry["text"],
                                                " (%s)" % entry["version"] if entry["version"] else ""))
    done = all(e["state"] in ("installed", "absent", "command") for r in reports for e in r["entries"])
    return print_report(session, {"system": system, "prerequisites": reports, "done": done},
                        EXIT_OK if done else EXIT_FAILED)


def oda_url(session: Session, args) -> str:
    """The ODA: --oda, else $PM_ODA, else ``oda =`` in etc/pm/pm.conf, else an SQLite
    file under the root."""
    url = getattr(args, "oda", None) or os.environ.get("PM_ODA") or read_settings(session.root).get("oda")
    return url or "sqlite://" + session.root.host_path(ODA_FILE)


def open_oda(session: Session, args, deadline: float = 0.0) -> Oda:
    url = oda_url(session, args)
    if url == "sqlite://" + session.root.host_path(ODA_FILE):
        try:
            session.root.dir_fd(DB_DIR)        # no symbolic link on the way to the ODA file
        except FileNotFoundError:
            pass
    oda = Oda(url, deadline=deadline)
    try:
        return oda.require_schema()
    except BaseException:
        oda.close()
        raise


def with_oda(handler):
    """A command handler that gets the ODA as its third argument and closes it after."""
    def run(session: Session, args) -> int:
        oda = open_oda(session, args)
        try:
            return handler(session, args, oda)
        finally:
            oda.close()
    run.__doc__ = handler.__doc__
    return run


def cmd_opm_init(session: Session, args) -> int:
    url = oda_url(session, args)
    if url == "sqlite://" + session.root.host_path(ODA_FILE):
        session.root.dir_fd(DB_DIR, 0o755)
    oda = Oda(url, create=True)
    try:
        old = oda.migrate()
    finally:
        oda.close()
    where = redacted_url(url)
    if old == 0:
        session.out.result("created the ODA at %s (schema version %d)" % (where, ODA_SCHEMA_VERSION))
    elif old < ODA_SCHEMA_VERSION:
        session.out.result("upgraded the ODA at %s from schema version %d to %d" % (where, old, ODA_SCHEMA_VERSION))
    else:
        session.out.result("the ODA at %s is up to date (schema version %d)" % (where, ODA_SCHEMA_VERSION))
    return print_report(session, {"oda": where, "schema_version": ODA_SCHEMA_VERSION, "previous_version": old}, EXIT_OK)


def _check_node_name(name: str) -> None:
    if not valid_node_name(name):
        raise UsageError("bad node name %r" % name)


@with_oda
def cmd_opm_node_add(session: Session, args, oda: Oda) -> int:
    _check_node_name(args.name)
    image_path = getattr(args, "image_path", None)
    server = getattr(args, "server", None)
    if args.role == "image":
        if not image_path:
            raise UsageError("an image needs --image-path DIR, the directory it is built in")
        image_path = os.path.abspath(image_path)
    elif image_path or server:
        raise UsageError("--image-path and --server are for images only")
    if server:
        owner = oda.node(server)
        if not owner or owner["role"] != "server":
            raise Refused("%s is not a server in the ODA" % server)
    oda.add_node(args.name, args.role, image_path, server)
    session.out.result("added %s %s%s" % (args.role, args.name, " at " + image_path if image_path else ""))
    return print_report(session, {"node": args.name, "role": args.role, "image_path": image_path, "server": server},
                  EXIT_OK)


@with_oda
def cmd_opm_node_remove(session: Session, args, oda: Oda) -> int:
    oda.remove_node(args.name)
    session.out.result("removed %s and its package rows" % args.name)
    return print_report(session, {"node": args.name}, EXIT_OK)


@with_oda
def cmd_opm_node_list(session: Session, args, oda: Oda) -> int:
    nodes = oda.nodes()
    for node in nodes:
        extra = " at %s" % node["image_path"] if node["image_path"] else ""
        extra += " (server %s)" % node["server"] if node["server"] else ""
        session.out.result("%s %s%s" % (node["name"], node["role"], extra))
    return print_report(session, {"nodes": [dict(n, added=_json_time(n["added"]), synced=_json_time(n["synced"]))
                                      for n in nodes]}, EXIT_OK)


@with_oda
def cmd_opm_request(session: Session, args, oda: Oda) -> int:
    _check_node_name(args.node)
    if not valid_package_name(args.package):
        raise UsageError("bad package name %r" % args.package)
    oda.request(args.node, args.package, args.stage)
    row = oda.row(args.node, args.package)
    session.out.result("%s %s: requested %s (current %s)" % (args.node, args.package, row["requested"], row["current"]))
    if row["status"] == "error":
        session.out.warn("%s %s is in error (%s); syncs skip it until pm opm clear %s %s"
                         % (args.node, args.package, row["error"], args.node, args.package))
    return print_report(session, _status_json(row), EXIT_OK)


@with_oda
def cmd_opm_clear(session: Session, args, oda: Oda) -> int:
    cleared = oda.clear(args.node, args.package)
    if cleared:
        session.out.result("%s %s: error cleared; the next sync carries on" % (args.node, args.package))
    else:
        session.out.say("%s %s is not in error" % (args.node, args.package))
    return print_report(session, dict(_status_json(oda.row(args.node, args.package)), cleared=cleared), EXIT_OK)


@with_oda
def cmd_opm_progress(session: Session, args, oda: Oda) -> int:
    if args.step:
        oda.set_progress(args.step)
    step = oda.progress()
    session.out.result("cluster progress: %s" % step)
    return print_report(session, {"progress": step}, EXIT_OK)


def _json_time(value):
    """A time in a JSON document: whole seconds since the epoch, like every time pm
    prints (the database's install times), or None."""
    return None if value is None else int(value)


def _status_json(row: dict) -> dict:
    return {"node": row["node"], "package": row["package"], "requested": row["requested"],
            "current": row["current"], "status": row["status"], "error": row["error"],
            "previous": row["previous"], "updated": _json_time(row["updated"])}


def print_table(out: Output, headings: tuple, rows: list) -> None:
    """Rows of strings under headings, in columns as wide as their widest cell."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headings, *rows)]
    for line in [headings] + rows:
        out.result("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip())


class JsonList:
    """A command's JSON document, ``{KEY: [...], "warnings": [...]}`` like every other
    command's, with the list written to stdout one item at a time (a listing of any
    length in bounded memory); ``progress``, when given, adds the cluster progress."""

    def __init__(self, out: Output, key: str, progress=None):
        self.out, self.key, self.progress, self.count = out, key, progress, 0
        self.active = out.json_mode

    def add(self, item: dict) -> None:
        if self.active:
            import json
            sys.stdout.write(("{%s: [\n  " % json.dumps(self.key) if self.count == 0 else ",\n  ")
                             + json.dumps(item, sort_keys=True, default=str, allow_nan=False))
        self.count += 1

    def close(self) -> None:
        if self.active:
            import json
            tail = {"warnings": self.out.warnings}
            if self.progress is not None:
                tail["progress"] = self.progress()
            sys.stdout.write(("{%s: []" % json.dumps(self.key) if self.count == 0 else "\n]")
                             + "".join(", %s: %s" % (json.dumps(k), json.dumps(v)) for k, v in sorted(tail.items()))
                             + "}\n")


def print_streamed_table(out: Output, headings: tuple, widths: tuple, rows) -> None:
    """print_table for rows that stream: the column widths come from the ODA beforehand
    (the last column is not padded)."""
    widths = [max(len(h), w) for h, w in zip(headings, widths)]
    out.result("  ".join(str(cell).ljust(width) for cell, width in zip(headings, widths)).rstrip())
    for line in rows:
        out.result("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip())


@with_oda
def cmd_opm_status(session: Session, args, oda: Oda) -> int:
    node = getattr(args, "node", None)
    if getattr(args, "html", None):
        return opm_status_html(session, oda, args.html)
    if getattr(args, "summary", False):
        return opm_status_summary(session, oda, node)
    count, *widths = oda.row_widths(node)
    listing = JsonList(session.out, "rows", progress=oda.progress)
    if count:
        def lines():
            for row in oda.stream_rows(node):
                listing.add(_status_json(row))
                yield (row["node"], row["package"], row["requested"], row["current"], row["status"],
                       row["error"] or "")
        if session.out.json_mode:
            for _ in lines():
                pass
        else:
            print_streamed_table(session.out, ("NODE", "PACKAGE", "REQUESTED", "CURRENT", "STATUS", "ERROR"),
                                 tuple(widths) + (5, 0), lines())
    else:
        session.out.say("the ODA has no package requests")
    listing.close()
    session.out.say("cluster progress: %s" % oda.progress())
    return EXIT_OK


def opm_status_summary(session: Session, oda: Oda, node: str | None) -> int:
    """Per package and stage reached: how many nodes, in error or not, errors first."""
    summary = oda.summary(node)
    if summary:
        print_table(session.out, ("STATUS", "PACKAGE", "STAGE", "NODES", "AT-REQUEST"),
                    [(r["status"], r["package"], r["stage"], r["nodes"], r["done"]) for r in summary])
    else:
        session.out.say("the ODA has no package requests")
    session.out.say("cluster progress: %s" % oda.progress())
    return print_report(session, summary, EXIT_OK)


FLEET_PAGE_STYLE = """
body{font:14px/1.4 sans-serif;margin:1.5em;color:#222;background:#fff}
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.15em;margin:1.2em 0 .4em}
.meta{color:#555}.filters{margin:1em 0;padding:.6em;background:#f3f3f3;border-radius:4px}
.filters input{margin-right:1em;padding:.2em .4em}
.pkg{margin:.8em 0;padding:.5em .8em;border:1px solid #ddd;border-radius:4px}
.pkg h3{margin:0 0 .4em;font-size:1.05em}.bad{color:#b00020}
.stage{display:flex;align-items:center;margin:2px 0}
.stage .name{width:13em;font-family:monospace}.stage .count{width:9em;text-align:right;padding-right:.6em}
.bar{flex:1;height:14px;background:#eee;border-radius:3px;overflow:hidden;display:flex}
.bar .ok{background:#2e7d32}.bar .err{background:#c62828}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:3px 6px;border-bottom:1px solid #e5e5e5}
th{background:#fafafa}tr.error td{color:#b00020}.hidden{display:none}
"""

FLEET_PAGE_SCRIPT = """
function applyFilters(){
  var n=document.getElementById('f-node').value.trim().toLowerCase();
  var p=document.getElementById('f-package').value.trim().toLowerCase();
  var s=document.getElementById('f-stage').value.trim().toLowerCase();
  var shown=0;
  document.querySelectorAll('#rows tbody tr').forEach(function(tr){
    var ok=(!n||tr.dataset.node.toLowerCase().indexOf(n)>=0)&&(!p||tr.dataset.package.toLowerCase().indexOf(p)>=0)
      &&(!s||tr.dataset.stage.toLowerCase().indexOf(s)>=0);
    tr.classList.toggle('hidden',!ok); if(ok){shown++;}
  });
  document.querySelectorAll('.pkg').forEach(function(div){
    div.classList.toggle('hidden',!!p&&div.dataset.package.toLowerCase().indexOf(p)<0);
    div.querySelectorAll('.stage').forEach(function(st){
      st.classList.toggle('hidden',!!s&&st.dataset.stage.toLowerCase().indexOf(s)<0);
    });
  });
  document.getElementById('shown').textContent=shown;
}
document.querySelectorAll('.filters input').forEach(function(i){i.addEventListener('input',applyFilters);});
(function(){var h=location.hash.replace(/^#/,'');if(!h){return;}
  h.split('&').forEach(function(kv){var p=kv.split('=');var i=document.getElementById('f-'+p[0]);
    if(i&&p.length>1){i.value=decodeURIComponent(p[1]);}});
  applyFilters();})();
"""


def opm_status_html(session: Session, oda: Oda, path: str) -> int:
    """A self-contained fleet page (no external assets): per package, the nodes at each
    stage as bars; the rows in error with their messages, then those on their way;
    filters by node, package and stage.  Written as it streams, then renamed in place."""
    import html
    import time
    esc = html.escape
    summary = oda.summary()
    progress = oda.progress()
    attention = oda.attention_count()
    packages: dict = {}
    for r in summary:
        packages.setdefault(r["package"], []).append(r)
    target = os.path.abspath(path)
    temporary = os.path.join(os.path.dirname(target), STAGING_PREFIX + os.path.basename(target))
    with open(temporary, "w", encoding="utf-8") as f:
        w = f.write
        w("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>pm opm: fleet status</title>"
          "<style>%s</style></head><body>\n" % FLEET_PAGE_STYLE)
        total_rows = sum(r["nodes"] for r in summary)
        errors = sum(r["nodes"] for r in summary if r["status"] == "error")
        w("<h1>Fleet status</h1><p class=\"meta\">Cluster progress: <b>%s</b> &middot; %d package rows, "
          "<span class=\"%s\">%d in error</span>, %d not yet at their request &middot; generated %s</p>\n"
          % (esc(progress), total_rows, "bad" if errors else "", errors, attention - errors,
             esc(time.strftime("%Y-%m-%d %H:%M:%S"))))
        w("<div class=\"filters\">Filter: node <input id=\"f-node\" placeholder=\"node\"> package "
          "<input id=\"f-package\" placeholder=\"package\"> stage <input id=\"f-stage\" placeholder=\"stage\">"
          "</div>\n<h2>Packages</h2>\n")
        for package in sorted(packages):
            counts = packages[package]
            total = sum(r["nodes"] for r in counts)
            bad = sum(r["nodes"] for r in counts if r["status"] == "error")
            done = sum(r["done"] for r in counts if r["status"] == "ok")
            w("<div class=\"pkg\" data-package=\"%s\"><h3>%s <span class=\"meta\">%d nodes, %d at their request"
              "%s</span></h3>\n" % (esc(package, True), esc(package), total, done,
                                    ", <span class=\"bad\">%d in error</span>" % bad if bad else ""))
            for stage in OPM_STAGES:
                ok = sum(r["nodes"] for r in counts if r["stage"] == stage and r["status"] == "ok")
                err = sum(r["nodes"] for r in counts if r["stage"] == stage and r["status"] == "error")
                w("<div class=\"stage\" data-stage=\"%s\"><span class=\"name\">%s</span>"
                  "<span class=\"count\">%d%s</span><div class=\"bar\" title=\"%s: %d ok, %d in error\">"
                  "<div class=\"ok\" style=\"width:%.2f%%\"></div><div class=\"err\" style=\"width:%.2f%%%s\"></div>"
                  "</div></div>\n" % (esc(stage, True), esc(stage), ok + err, " (%d err)" % err if err else "",
                                      esc(stage, True), ok, err, 100.0 * ok / total, 100.0 * err / total,
                                      ";min-width:4px" if err else ""))
            w("</div>\n")
        if not packages:
            w("<p>The ODA has no package requests.</p>\n")
        w("<h2>Nodes in error, then on their way</h2><p class=\"meta\"><span id=\"shown\">%d</span> shown of %d%s</p>\n"
          % (min(attention, MAX_HTML_ROWS), attention,
             " (the first %d are listed)" % MAX_HTML_ROWS if attention > MAX_HTML_ROWS else ""))
        w("<table id=\"rows\"><thead><tr><th>Node</th><th>Package</th><th>Stage</th><th>Requested</th>"
          "<th>Status</th><th>Error</th></tr></thead><tbody>\n")
        for row in oda.stream_attention(MAX_HTML_ROWS):
            w("<tr class=\"%s\" data-node=\"%s\" data-package=\"%s\" data-stage=\"%s\"><td>%s</td><td>%s</td>"
              "<td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>\n"
              % (esc(row["status"], True), esc(row["node"], True), esc(row["package"], True),
                 esc(row["current"], True), esc(row["node"]), esc(row["package"]), esc(row["current"]),
                 esc(row["requested"]), esc(row["status"]), esc(row["error"] or "")))
        w("</tbody></table>\n<script>%s</script>\n</body></html>\n" % FLEET_PAGE_SCRIPT)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, target)
    session.out.result("wrote the fleet page %s (%d packages, %d rows in error or on their way)"
                       % (target, len(packages), attention))
    return print_report(session, {"html": target, "packages": len(packages), "listed": min(attention, MAX_HTML_ROWS),
                            "attention": attention}, EXIT_OK)


@with_oda
def cmd_opm_inventory(session: Session, args, oda: Oda) -> int:
    listing = JsonList(session.out, "inventory")
    for row in oda.stream_inventory(getattr(args, "node", None)):
        listing.add(row)
        session.out.result("%s %s (%s)%s" % (row["node"], row["package"], row["version"], "" if row["state"] ==
                                             STATE_INSTALLED else " [config remaining]"))
    listing.close()
    return EXIT_OK


def parse_log_date(text: str) -> float:
    """``YYYY-MM-DD`` or ``YYYY-MM-DD HH:MM[:SS]`` (or with a T), local time, as a time stamp."""
    import time
    for form in ("%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"):
        try:
            return time.mktime(time.strptime(text, form))
        except (ValueError, OverflowError):
            continue
    raise UsageError("bad date %r: expected YYYY-MM-DD or YYYY-MM-DD HH:MM[:SS]" % text)


def log_retention(session: Session) -> float | None:
    """``log_retention_days = N`` of pm.conf in seconds, or None when not set."""
    value = read_settings(session.root).get("log_retention_days")
    if value is None:
        return None
    try:
        days = float(value)
    except ValueError:
        days = -1.0
    if not days > 0 or days > 100_000:
        raise InvalidInput("%s: log_retention_days must be a positive number of days, not %r"
                           % (session.root.host_path(PM_CONF), value))
    return days * 86400


@with_oda
def cmd_opm_log(session: Session, args, oda: Oda) -> int:
    import time
    node = getattr(args, "node", None)
    before = getattr(args, "prune_before", None)
    if before is not None:
        cutoff = parse_log_date(before)
        pruned = oda.prune_events(cutoff, node)
        session.out.result("pruned %d event%s before %s%s" % (pruned, "" if pruned == 1 else "s", before,
                                                               " of " + node if node else ""))
        return print_report(session, {"pruned": pruned, "before": cutoff, "node": node}, EXIT_OK)
    listing = JsonList(session.out, "events")
    for e in oda.stream_events(node):
        listing.add(dict(e, time=_json_time(e["time"])))
        session.out.result("%s %s %s %s %s %s%s" % (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["time"])), e["node"], e["package"],
            e["direction"], e["stage"], e["outcome"], ": " + e["detail"] if e["detail"] else ""))
    listing.close()
    return EXIT_OK


def cmd_opm_sync(session: Session, args) -> int:
    import random
    import time
    conf = read_opm_conf(session.root)
    name = getattr(args, "node", None) or (conf[1] if conf else None)
    if name is None:
        raise Refused("%s does not say which node this is; write it or give --node NAME"
                      % session.root.host_path(OPM_CONF))
    _check_node_name(name)
    retention = log_retention(session)
    splay, deadline = getattr(args, "splay", 0.0), getattr(args, "deadline", OPM_SYNC_DEADLINE)
    if not (0 <= splay <= 86400 and 0 <= deadline <= 86400):
        raise UsageError("--splay and --deadline are seconds, from 0 to 86400")
    if splay:
        time.sleep(random.uniform(0, splay))     # nodes started at once by cron spread out
    oda = open_oda(session, args, deadline)
    try:
        return _opm_sync(session, args, oda, conf, name, retention)
    finally:
        oda.close()


def _opm_sync(session: Session, args, oda: Oda, conf, name: str, retention: float | None) -> int:
    view = oda.sync_view(name)
    node = view["node"] if view else None
    if node is None:
        raise Refused("node %s is not in the ODA (pm opm node add %s --role ...)" % (name, name))
    if conf and conf[1] == name and conf[0] != node["role"]:
        raise Refused("%s says %s is a %s, the ODA says a %s" % (session.root.host_path(OPM_CONF), name,
                                                                 conf[0], node["role"]))
    if conf and conf[1] != name and node["role"] != "image":
        raise Refused("this root is node %s (%s); syncing %s here would install its packages into it"
                      % (conf[1], session.root.host_path(OPM_CONF), name))
    sync = OpmSync(oda, NodeActions(session), session.out, session.wait, retention)
    sync.sync(view, session.root.path)
    errors = [r for r in sync.report if r["status"] == "error"]
    if not sync.report:
        session.out.say("%s has no package requests" % name)
    code = EXIT_FAILED if errors else EXIT_LOCKED if sync.busy else EXIT_OK
    return print_report(session, {"node": name, "role": node["role"], "rows": sync.report, "busy": sync.busy}, code)


def parser_tree(parser, path=()) -> list:
    """Every command of an argparse parser, depth first: ``(path, parser, options,
    subcommands, values)`` where options are ``(option strings, help, the value's name
    or "" for a flag, choices)``, subcommands ``{name: help}`` (aliases included) and values the choices
    of its positional arguments.  Shell completion and the man
    page (tools/make_manpage.py) are generated from it, so they follow the parser."""
    import argparse
    options, subcommands, children, values = [], {}, [], []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                subcommands[name] = helps.get(name) or next(
                    (helps[other] for other, same in action.choices.items() if same is sub and other in helps), "")
                if name in helps:
                    children.append((name, sub))
        elif action.option_strings and action.help is not argparse.SUPPRESS:
            value = (action.metavar or action.dest.upper()) if action.nargs != 0 else ""
            options.append((tuple(action.option_strings), action.help or "", value,
                            tuple(action.choices) if action.choices else ()))
        elif not action.option_strings and action.choices:
            values += list(action.choices)
    tree = [(path, parser, options, subcommands, values)]
    for name, sub in children:
        tree += parser_tree(sub, path + (name,))
    return tree


def _bash_words(items) -> str:
    return " ".join(sorted(items))


def completion_script(shell: str) -> str:
    """The bash or zsh completion script of pm's whole command line."""
    tree = parser_tree(build_parser())
    if shell == "bash":
        return _bash_completion(tree)
    return _zsh_completion(tree)


_NAME_ARGUMENTS = ("uninstall", "info", "files", "verify", "upgrade")   # complete installed names


def _bash_completion(tree) -> str:
    valued = sorted({o for _, _, options, _, _ in tree for strings, _, value, _ in options if value for o in strings})
    cases, choices, known = [], {}, []
    for path, _, options, subcommands, values in tree:
        words = [o for strings, _, _, _ in options for o in strings] + list(subcommands) + list(values)
        names = [" ".join(path)] + [" ".join(path[:-1] + (alias,)) for alias, canonical in COMMAND_ALIASES.items()
                                    if len(path) == 1 and path[0] == canonical]
        known += names
        cases.append('        %s) words="%s" ;;' % ("|".join('"%s"' % n for n in names), _bash_words(words)))
        for strings, _, _, option_choices in options:
            if option_choices:
                for o in strings:
                    choices[o] = option_choices
    choice_cases = "\n".join('        %s) COMPREPLY=($(compgen -W "%s" -- "$cur")); return ;;' % (o, " ".join(c))
                             for o, c in sorted(choices.items()))
    return """# bash completion for pm, generated from its command line (pm completion bash)
_pm() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"
    local path="" root="" i w words known="|%s|"
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${COMP_WORDS[i]}"
        case "$w" in
            --root) root="${COMP_WORDS[i+1]}"; ((i++)) ;;
            %s) ((i++)) ;;
            -*) ;;
            *) [[ "$known" == *"|${path:+$path }$w|"* ]] && path="${path:+$path }$w" ;;
        esac
    done
    case "$prev" in
        --root) COMPREPLY=($(compgen -d -- "$cur")); return ;;
%s
        --wait|--repository|--oda|--vulns|--image-path|--server|--node) return ;;
    esac
    case "$path" in
%s
        *) words="" ;;
    esac
    case "$path" in
        %s)
            if [[ "$cur" != -* ]]; then
                COMPREPLY=($(compgen -W "$(pm ${root:+--root "$root"} list-installed 2>/dev/null | cut -d' ' -f1)" -- "$cur"))
                return
            fi ;;
    esac
    if [[ "$cur" != -* ]]; then                  # a word, not an option: commands and values first
        local plain="" x
        for x in $words; do [[ "$x" == -* ]] || plain="$plain $x"; done
        [[ -n "$plain" ]] && words="$plain"
    fi
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -o default -F _pm pm
""" % ("|".join(known[1:]), "|".join(o for o in valued if o != "--root"), choice_cases, "\n".join(cases),
       "|".join(_NAME_ARGUMENTS + tuple(a for a, c in COMMAND_ALIASES.items() if c in _NAME_ARGUMENTS)))


def _zsh_quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "'\\''").replace("[", "\\[").replace("]", "\\]") \
        .replace(":", "\\:")


def _zsh_completion(tree) -> str:
    functions = []
    for path, _, options, subcommands, values in tree:
        name = "_pm" + "".join("_" + part.replace("-", "_") for part in path)
        specs = []
        for strings, help_text, value, option_choices in options:
            action = ""
            if value:
                if strings[0] == "--root":
                    action = ":directory:_files -/"
                elif option_choices:
                    action = ":value:(%s)" % " ".join(option_choices)
                else:
                    action = ":value: "
            for option in strings:
                specs.append("'%s[%s]%s'" % (option, _zsh_quote(help_text), action))
        body = ["%s() {" % name, "    local curcontext=\"$curcontext\" state line", "    typeset -A opt_args"]
        if subcommands:
            children = ["    local -a commands", "    commands=("]
            children += ["        '%s:%s'" % (_zsh_quote(sub), _zsh_quote(help_text or sub))
                         for sub, help_text in sorted(subcommands.items())]
            children.append("    )")
            body += children
            body.append("    _arguments -C \\\n        " + " \\\n        ".join(
                specs + ["'1:command:->command'", "'*::argument:->argument'"]))
            body.append("    case $state in")
            body.append("        command) _describe -t commands 'pm command' commands ;;")
            body.append("        argument)")
            body.append("            case $line[1] in")
            for sub in sorted(subcommands):
                target = COMMAND_ALIASES.get(sub, sub) if not path else sub
                fn = "_pm" + "".join("_" + part.replace("-", "_") for part in path + (target,))
                body.append("                %s) %s ;;" % (sub, fn))
            body.append("            esac ;;")
            body.append("    esac")
        else:
            if path and path[-1] in _NAME_ARGUMENTS:
                rest = "'*:package:{_values package $(pm list-installed 2>/dev/null | cut -d\" \" -f1)}'"
            elif values:
                rest = "'1:value:(%s)'" % " ".join(values)
            else:
                rest = "'*:argument:_files'"
            body.append("    _arguments \\\n        " + " \\\n        ".join(specs + [rest]))
        body.append("}")
        functions.append("\n".join(body))
    return "#compdef pm\n# zsh completion for pm, generated from its command line (pm completion zsh)\n\n" + \
        "\n\n".join(functions) + "\n\ncompdef _pm pm 2>/dev/null\n"


def cmd_completion(session: Session, args) -> int:
    sys.stdout.write(completion_script(args.shell))
    return EXIT_OK


def cmd_opm_needs_command(session: Session, args) -> int:
    raise UsageError("pm %s needs a command (pm %s -h lists them)" % (args.command_path, args.command_path))


class _Parser:
    """argparse, reporting usage errors as UsageError (one line, exit 2)."""

    @staticmethod
    def make(**kwargs):
        import argparse

        class Parser(argparse.ArgumentParser):
            def error(self, message):
                raise UsageError(message)

            def _get_formatter(self):
                # The width given: argparse would import shutil (and zlib, bz2, lzma) for it.
                return self.formatter_class(prog=self.prog, width=_Parser.help_width())
        return Parser(**kwargs)

    @staticmethod
    def help_width() -> int:
        """shutil.get_terminal_size().columns - 2, as argparse's help formatter takes it."""
        try:
            columns = int(os.environ.get("COLUMNS", ""))
        except ValueError:
            columns = 0
        if columns <= 0:
            try:
                columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
            except (AttributeError, ValueError, OSError):
                columns = 0
        return (columns or 80) - 2


class _Unbuilt:
    """The parser of a command this run does not need: whatever is added to it is dropped
    (building every command's options costs more than a small command's whole run)."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: self


_UNBUILT = _Unbuilt()
_OPTIONS_WITH_VALUES = ("--root", "--wait", "--repository", "--oda", "--ca", "--timeout", "--script-timeout")


def _seconds(text: str) -> float:
    """A positive, finite number of seconds (an option's or a pm.conf setting's value)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1e9:
        raise ValueError("not a positive number of seconds")
    return value


# Other package managers' words for pm's commands, as apt and pacman users type them.
COMMAND_ALIASES = {"list": "list-installed", "remove": "uninstall", "show": "info"}


def build_parser(only: str | None = None):
    """pm's command line; with ``only``, the options of that command alone (the others
    are listed, not built)."""
    import argparse
    common = _Parser.make(add_help=False)
    # Global options work before and after the command: both copies default to
    # SUPPRESS, so only what was given is set, and parse_arguments fills in the rest.
    common.add_argument("--root", default=argparse.SUPPRESS, help="the root to manage (default $PM_ROOT or /)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document")
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="say more")
    common.add_argument("-q", "--quiet", action="count", default=argparse.SUPPRESS, help="print only errors")
    common.add_argument("--wait", type=float, default=argparse.SUPPRESS, metavar="SECONDS",
                        help="wait this long for the root's lock (default: do not wait)")
    common.add_argument("--timeout", type=_seconds, default=argparse.SUPPRESS, metavar="SECONDS",
                        help="a transfer that gets less than %d bytes/s for this long fails (default: "
                             "timeout = in etc/pm/pm.conf, else %g)" % (MIN_TRANSFER_RATE, HTTP_TIMEOUT))
    common.add_argument("--script-timeout", type=_seconds, default=argparse.SUPPRESS, metavar="SECONDS",
                        help="a package script running longer is killed and fails (default: "
                             "script_timeout = in etc/pm/pm.conf, else %g)" % SCRIPT_TIMEOUT)
    common.add_argument("-y", "--yes", action="store_true", default=argparse.SUPPRESS,
                        help="do not ask before acting (pm asks only when stdin is a terminal)")
    common.add_argument("--unsafe-io", action="store_true", default=argparse.SUPPRESS,
                        help="skip fsync: faster, not safe against power loss")
    common.add_argument("--repository", action="append", default=argparse.SUPPRESS, metavar="URL",
                        help="also use this source (directory or URL) for this command")
    common.add_argument("--ca", default=argparse.SUPPRESS, metavar="PATH",
                        help="check https:// certificates against this CA bundle (file or directory) "
                             "instead of ca = PATH in etc/pm/pm.conf or the system's CAs")
    oda_option = _Parser.make(add_help=False)
    oda_option.add_argument("--oda", default=argparse.SUPPRESS, metavar="URL",
                            help="the ODA of pm opm: sqlite:///PATH or postgresql://... (default $PM_ODA, "
                                 "else oda = URL in etc/pm/pm.conf, else sqlite:///ROOT%s)" % ODA_FILE)
    parser = _Parser.make(prog="pm", parents=[common, oda_option],
                          description="pm: a small, careful package manager for tar-container packages.")
    parser.add_argument("--version", action="version", version="pm " + __version__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name, handler, help_text, reads_only=False):
        aliases = [alias for alias, canonical in COMMAND_ALIASES.items() if canonical == name]
        if aliases:
            help_text += " (also: %s)" % ", ".join(aliases)
        if only is not None and name != only:
            commands.add_parser(name, help=help_text, add_help=False, aliases=aliases)
            return _UNBUILT
        sub = commands.add_parser(name, parents=[common], help=help_text, description=help_text,
                                  aliases=aliases)
        sub.set_defaults(func=handler, reads_only=reads_only)
        return sub

    sub = command("install", cmd_install, "install or upgrade packages from files or by name from the sources")
    sub.add_argument("packages", nargs="+", metavar="PKG.tar|NAME[CONSTRAINT]")
    sub.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    sub.add_argument("--allow-same-version", action="store_true",
                     help="reinstall the installed version, or install a lower one")
    sub.add_argument("--no-deps", action="store_true", help="do not check dependencies")
    sub.add_argument("--force-overwrite", action="store_true",
                     help="replace files owned by other packages or by none")
    sub.add_argument("--pre", action="store_true", help="allow pre-release versions")
    sub.add_argument("--allow-setuid", action="store_true", help="accept setuid and setgid files")
    sub.add_argument("--no-scripts", action="store_true", help="do not run package scripts")
    sub.add_argument("--force-architecture", action="store_true",
                     help="install packages built for another architecture than the root's")

    sub = command("uninstall", cmd_uninstall, "remove packages (config files stay unless --purge)")
    sub.add_argument("names", nargs="+", metavar="NAME")
    sub.add_argument("--purge", action="store_true", help="also remove config files and the record")
    sub.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    sub.add_argument("--recursive", action="store_true", help="also remove the packages that need these")
    sub.add_argument("--no-scripts", action="store_true", help="do not run package scripts")
    sub.add_argument("--force-essential", action="store_true",
                     help="also remove packages marked essential (such as pm itself)")

    sub = command("list-installed", cmd_list_installed, "list installed packages", True)
    sub.add_argument("--include-removed", action="store_true",
                     help="also list packages whose config files remain")
    sub = command("info", cmd_info, "show a package: installed, offered by a source, or a package file", True)
    sub.add_argument("package", metavar="NAME|PKG.tar")
    sub = command("files", cmd_files, "list the paths an installed package owns, or a package's members "
                  "(a package file, or one a source offers); -v adds type, mode and size", True)
    sub.add_argument("name", metavar="NAME|PKG.tar")
    sub = command("owner", cmd_owner, "tell which package owns a path", True)
    sub.add_argument("path", metavar="PATH")
    sub = command("verify", cmd_verify, "check installed files against the database", True)
    sub.add_argument("names", nargs="*", metavar="NAME")
    command("recover", cmd_recover, "finish or undo an interrupted transaction; rerun failed post-scripts")

    sub = command("clean", cmd_clean, "empty the download cache (var/cache/pm/packages); the indexes stay")
    sub.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")

    sub = command("update", cmd_update, "fetch the indexes of the sources (etc/pm/sources.list) into the cache")
    sub.add_argument("--dry-run", action="store_true", help="fetch and check the indexes, keep nothing")
    sub = command("upgrade", cmd_upgrade, "upgrade installed packages to the newest versions the sources offer")
    sub.add_argument("names", nargs="*", metavar="NAME", help="only these packages (default: all)")
    sub.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    sub.add_argument("--pre", action="store_true", help="allow pre-release versions")
    sub.add_argument("--allow-setuid", action="store_true", help="accept setuid and setgid files")
    sub.add_argument("--no-scripts", action="store_true", help="do not run package scripts")
    sub = command("autoremove", cmd_autoremove, "remove dependencies no explicitly installed package needs")
    sub.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    sub.add_argument("--purge", action="store_true", help="also remove their config files")
    sub.add_argument("--no-scripts", action="store_true", help="do not run package scripts")
    sub = command("search", cmd_search, "list the packages the sources offer (hidden ones left out)", True)
    sub.add_argument("text", nargs="*", metavar="TEXT", help="words to find in names and descriptions")

    sub = command("audit", cmd_audit, "check installed packages against a vulnerability list", True)
    sub.add_argument("--vulns", metavar="FILE|URL",
                     help="the list: NAME CONSTRAINT TYPE URL per line (default: vulnerabilities in pm.conf)")
    sub = command("doctor", cmd_doctor, "check that this user can manage this root, and the root's health", True)
    sub.add_argument("--shared", action="store_true",
                     help="also check what an area shared by a group needs (umask 002, group-writable)")
    sub = command("prereq", cmd_prereq, "install the prerequisites that prereq.cfg files name for this "
                  "root's distribution")
    sub.add_argument("paths", nargs="+", metavar="PATH", help="a prerequisite directory, or an order file")
    mode = sub.add_mutually_exclusive_group()
    mode.add_argument("--dumb", action="store_true", help="install only the package files named (default)")
    mode.add_argument("--smart", action="store_true", help="also install packages by name from the sources")
    what = sub.add_mutually_exclusive_group()
    what.add_argument("--status", action="store_true", help="report what is done, change nothing")
    what.add_argument("--remove", action="store_true", help="uninstall what the prerequisites installed")

    key = command("key", cmd_key_needs_command, "trust the keys that sign repository indexes (etc/pm/keys)")
    key.set_defaults(command_path="key")
    key_commands = key.add_subparsers(metavar="KEY-COMMAND")
    for name, handler, help_text in (
            ("add", cmd_key_add, "trust a signify/usign public key (FILE.pub)"),
            ("list", cmd_key_list, "list the trusted keys: key number, comment, file"),
            ("remove", cmd_key_remove, "stop trusting a key (KEYNUM as pm key list shows it)")):
        parser_ = key_commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        parser_.set_defaults(func=handler, reads_only=name == "list")
        if name == "add":
            parser_.add_argument("file", metavar="FILE.pub")
        elif name == "remove":
            parser_.add_argument("keynum", metavar="KEYNUM")

    sub = command("completion", cmd_completion, "print a shell completion script: "
                  "source <(pm completion bash), or put pm completion zsh in a file named _pm on $fpath", True)
    sub.add_argument("shell", choices=("bash", "zsh"))

    add_opm_commands(command, common, oda_option)
    return parser


def add_opm_commands(command, common, oda_option) -> None:
    """``pm opm ...``: OPM over the ODA (section 13)."""
    import argparse
    opm = command("opm", cmd_opm_needs_command,
                  "OPM: walk packages through their stages on a cluster's server, clients and images")
    opm.add_argument("--oda", default=argparse.SUPPRESS, metavar="URL", help=oda_option._actions[0].help)
    opm.set_defaults(command_path="opm")
    opm_commands = opm.add_subparsers(metavar="OPM-COMMAND")

    def sub(parent, name, handler, help_text):
        parser = parent.add_parser(name, parents=[common, oda_option], help=help_text, description=help_text)
        parser.set_defaults(func=handler)
        return parser

    sub(opm_commands, "init", cmd_opm_init, "create the ODA's tables, or upgrade them to this pm's schema")
    node = sub(opm_commands, "node", cmd_opm_needs_command, "add, remove or list nodes and images")
    node.set_defaults(command_path="opm node")
    node_commands = node.add_subparsers(metavar="NODE-COMMAND")
    add = sub(node_commands, "add", cmd_opm_node_add, "add a node or an image to the ODA")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--role", required=True, choices=OPM_ROLES)
    add.add_argument("--image-path", default=argparse.SUPPRESS, metavar="DIR",
                     help="an image's root directory (images only)")
    add.add_argument("--server", default=argparse.SUPPRESS, metavar="NAME",
                     help="the server whose syncs handle this image (default: every server)")
    remove = sub(node_commands, "remove", cmd_opm_node_remove, "remove a node and its package rows")
    remove.add_argument("name", metavar="NAME")
    sub(node_commands, "list", cmd_opm_node_list, "list the nodes and images")
    request = sub(opm_commands, "request", cmd_opm_request, "ask for a package to reach a stage on a node")
    request.add_argument("node", metavar="NODE")
    request.add_argument("package", metavar="PACKAGE")
    request.add_argument("stage", metavar="STAGE", choices=OPM_STAGES, help=" < ".join(OPM_STAGES))
    progress = sub(opm_commands, "progress", cmd_opm_progress, "show or set the cluster's install progress")
    progress.add_argument("step", metavar="STEP", nargs="?", choices=CLUSTER_STEPS, help=" < ".join(CLUSTER_STEPS))
    sync = sub(opm_commands, "sync", cmd_opm_sync,
               "carry out this node's requests (the node named in etc/opm.conf, or --node); "
               "--wait also waits for another sync of the node")
    sync.add_argument("--node", default=argparse.SUPPRESS, metavar="NAME", help="the node or image to sync")
    sync.add_argument("--splay", type=float, default=argparse.SUPPRESS, metavar="SECONDS",
                      help="first sleep a random time up to this long (nodes started at once by cron spread out)")
    sync.add_argument("--deadline", type=float, default=argparse.SUPPRESS, metavar="SECONDS",
                      help="retry an ODA that refuses or is full this long, with backoff (default %d)"
                           % OPM_SYNC_DEADLINE)
    clear = sub(opm_commands, "clear", cmd_opm_clear, "clear a package's error so that syncs retry it")
    clear.add_argument("node", metavar="NODE")
    clear.add_argument("package", metavar="PACKAGE")
    status = sub(opm_commands, "status", cmd_opm_status, "show the requests and stages of every node's packages")
    status.add_argument("--node", default=argparse.SUPPRESS, metavar="NAME", help="only this node's rows")
    status.add_argument("--summary", action="store_true", default=argparse.SUPPRESS,
                        help="per package and stage: how many nodes, errors first")
    status.add_argument("--html", default=argparse.SUPPRESS, metavar="FILE",
                        help="write a self-contained fleet page (stage bars, nodes in error, filters)")
    inventory = sub(opm_commands, "inventory", cmd_opm_inventory,
                    "show what the last syncs found installed on each node and image")
    inventory.add_argument("--node", default=argparse.SUPPRESS, metavar="NAME", help="only this node")
    log = sub(opm_commands, "log", cmd_opm_log, "show the event log of stage runs")
    log.add_argument("--node", default=argparse.SUPPRESS, metavar="NAME", help="only this node's events")
    log.add_argument("--prune-before", default=argparse.SUPPRESS, metavar="DATE",
                     help="delete the events before DATE (YYYY-MM-DD[ HH:MM[:SS]], local time)")


def _command_word(argv: list) -> str | None:
    """The command of ``argv`` (its first word that is not an option or an option's
    value), or None."""
    words = iter(argv)
    for word in words:
        if word in _OPTIONS_WITH_VALUES:
            next(words, None)
        elif word == "--":
            return None
        elif not word.startswith("-"):
            return word
    return None


def _parser_commands(parser) -> dict:
    """``{command or alias: its parser}`` of an argparse parser's subcommands."""
    import argparse
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def _explain_usage_error(parser, argv: list, error: UsageError) -> UsageError:
    """A clearer usage error for the two mistakes argparse words badly: an unknown
    option before the command (``pm -S hello`` is about -S, not about 'hello') and a
    mistyped command (``pm instal``: did you mean install?)."""
    import difflib
    known = {option for action in parser._actions for option in action.option_strings}
    words = iter(argv)
    for word in words:
        if word == "--":
            break
        if word.startswith("-") and word != "-":
            option = word.split("=", 1)[0]
            if option in _OPTIONS_WITH_VALUES and "=" not in word:
                next(words, None)
            elif option not in known and not (option[1:] and option[0] == "-" and option[1] != "-"
                                              and all("-" + c in known for c in option[1:])):
                close = difflib.get_close_matches(option, sorted(known), 1)
                return UsageError("unknown option %s%s (pm -h lists the options)"
                                  % (option, "; did you mean %s?" % close[0] if close else ""))
            continue
        commands = _parser_commands(parser)
        if word not in commands:
            close = difflib.get_close_matches(word, sorted(commands), 1, 0.6)
            return UsageError("unknown command %r%s (pm -h lists the commands)"
                              % (word, "; did you mean %r?" % close[0] if close else ""))
        break
    return error


# Commands whose command line pm reads itself when it holds only the words below (else
# argparse reads it): importing and building argparse, with re, enum, gettext and locale,
# costs more than listing 1,000 packages.  {command: (handler, reads_only, own flags)}
_QUICK_COMMANDS = {"list-installed": ("cmd_list_installed", True, ("--include-removed",))}
_QUICK_FLAGS = {"--json": "json", "--unsafe-io": "unsafe_io"}
_QUICK_COUNTS = {"-v": "verbose", "--verbose": "verbose", "-q": "quiet", "--quiet": "quiet"}


class _QuickArguments:
    """The parsed command line of a quick command (what argparse.Namespace would hold)."""

    def __init__(self, **values):
        self.__dict__.update(values)

    def __contains__(self, key):
        return key in self.__dict__


def _quick_arguments(argv: list):
    """``argv`` parsed as argparse would parse it, for a command of _QUICK_COMMANDS given
    only the exact words pm reads here (``--root DIR``, ``--root=DIR``, --json, -q, -v,
    --unsafe-io and the command's own flags); None for anything else.  As with argparse,
    a global option after the command replaces the same option given before it."""
    command = _command_word(argv)
    if command not in _QUICK_COMMANDS:
        return None
    handler, reads_only, flags = _QUICK_COMMANDS[command]
    before, after = {}, {flag[2:].replace("-", "_"): False for flag in flags}
    part, words = before, iter(argv)
    for word in words:
        if word == command and part is before:
            part = after
        elif word in _QUICK_FLAGS:
            part[_QUICK_FLAGS[word]] = True
        elif word in _QUICK_COUNTS:
            part[_QUICK_COUNTS[word]] = part.get(_QUICK_COUNTS[word], 0) + 1
        elif word == "--root":
            value = next(words, None)
            if value is None or value.startswith("-"):
                return None
            part["root"] = value
        elif word.startswith("--root="):
            part["root"] = word[len("--root="):]
        elif part is after and word in flags:
            after[word[2:].replace("-", "_")] = True
        else:
            return None
    return _QuickArguments(**dict(before, **after), command=command, func=globals()[handler],
                           reads_only=reads_only)


def parse_arguments(argv: list):
    args = _quick_arguments(argv)
    word = _command_word(argv)
    only = COMMAND_ALIASES.get(word, word)
    if args is None and only is not None and "-h" not in argv and "--help" not in argv:
        try:
            args = build_parser(only).parse_args(argv)
        except UsageError:
            pass
    if args is not None:
        args.command = COMMAND_ALIASES.get(args.command, args.command)
    if args is None or getattr(args, "command", None) != only:
        # A usage error, or a command other than the word guessed: the whole command
        # line parses it, and tells any error exactly as it would have.
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except UsageError as e:
            raise _explain_usage_error(parser, argv, e) from None
    if not getattr(args, "command", None):
        raise UsageError("a command is needed (pm -h lists them)")
    args.command = COMMAND_ALIASES.get(args.command, args.command)
    defaults = {"root": os.environ.get("PM_ROOT", "/"), "json": False, "verbose": 0, "quiet": 0,
                "wait": 0.0, "unsafe_io": False, "repository": [], "ca": None, "yes": False}
    for key, value in defaults.items():
        if not hasattr(args, key):
            setattr(args, key, value)
    if args.root == "":             # an unset variable in a script: never "here" nor "/"
        raise UsageError("the root is empty (--root \"\" or PM_ROOT=\"\"): name a directory, "
                         "or leave both out for /")
    if not args.wait >= 0:          # also NaN
        raise UsageError("--wait needs a number of seconds of 0 or more, not %s" % args.wait)
    args.dry_run_mode = bool(getattr(args, "dry_run", False))
    return args


def main(argv: list | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--version"]:
        sys.stdout.write("pm %s\n" % __version__)
        return EXIT_OK
    json_mode = "--json" in argv
    session = None
    try:
        args = parse_arguments(argv)
        for attempt in range(MAX_READ_RETRIES + 1):
            session = open_session(args)
            try:
                return args.func(session, args)
            except StateChanged:
                if attempt == MAX_READ_RETRIES or session.lock.fd is not None:
                    raise PmError("the database of %s kept changing while it was read; try again"
                                  % session.root.path) from None
                session.wait_for_writer()
                session.close()
                session = None
    except PmError as e:
        return _report_error(e.message, e.exit_code, json_mode)
    except KeyboardInterrupt:
        return _report_error("interrupted", EXIT_INTERRUPTED, json_mode)
    except BrokenPipeError:
        return EXIT_FAILED
    except OSError as e:
        what = "%s: %s" % (e.strerror or e, e.filename) if e.filename else (e.strerror or str(e))
        return _report_error(what, EXIT_FAILED, json_mode)
    except Exception as e:           # a defect in pm itself: still one line for people
        if os.environ.get("PM_DEBUG"):
            raise
        return _report_error("internal error: %s: %s (PM_DEBUG=1 shows the traceback; please report it)"
                             % (type(e).__name__, e), EXIT_FAILED, json_mode)
    finally:
        FAULTS.save_counts()
        if session is not None:
            session.close()


def _report_error(message: str, code: int, json_mode: bool) -> int:
    message = " ".join(message.split("\n"))
    if json_mode:
        import json
        sys.stdout.write(json.dumps({"error": message, "exit_code": code}) + "\n")
    sys.stderr.write(ERROR_PREFIX + message + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
