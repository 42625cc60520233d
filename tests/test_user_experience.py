"""What users of apt, dpkg, apk and pacman expect from the command line: pm clean, the
list/remove/show aliases, suggestions for mistyped commands and options, search with
versions and sources (exit 1 when nothing matches), -q printing only errors, "nothing to
do", labelled script output, exit 130 on Ctrl-C after the rollback, and info/files for
package files and for packages only a source offers."""

import os
import signal
import subprocess
import sys
import time

from conftest import PM, exists, snapshot

CACHE = "var/cache/pm"


def served(repository, serve, root, pm, *packages):
    repo = repository().add(*packages)
    server = serve(repo.path)
    repo.use(root, url=server.url)
    pm("update")
    return repo, server


# -- pm clean --------------------------------------------------------------------------

def test_clean_empties_the_download_cache_and_keeps_the_indexes(pm, build, root, repository, serve):
    served(repository, serve, root, pm, build("tool", "1.0", {"/usr/bin/tool": "t" * 5000}))
    pm("install", "tool")
    cached = [p for p in (root / CACHE / "packages").rglob("*") if p.is_file()]
    assert len(cached) == 1
    size = cached[0].stat().st_size
    assert pm("clean", "--dry-run").out.startswith("would remove 1 cached package file")
    assert cached[0].exists(), "a dry run removes nothing"
    report = pm("--json", "clean").json
    assert report == {"dry_run": False, "removed": 1, "freed": size, "warnings": []}
    assert [p for p in (root / CACHE / "packages").rglob("*") if p.is_file()] == []
    assert list((root / CACHE / "indexes").iterdir()), "the indexes stay"
    assert pm("search", "tool").out.startswith("tool 1.0"), "search still works offline"
    again = pm("clean")
    assert again.out == "" and "nothing to do" in again.err
    assert exists(root, "/usr/bin/tool"), "installed packages are untouched"


# -- aliases and mistakes ----------------------------------------------------------------

def test_list_remove_and_show_are_aliases_of_list_installed_uninstall_and_info(pm, build, root):
    pm("install", build("foo", "1.0", {"/usr/bin/foo": "x"}, description="a foo"))
    assert pm("list").out == pm("list-installed").out == "foo (1.0)\n"
    assert pm("show", "foo").out == pm("info", "foo").out
    assert pm("--json", "show", "foo").json == pm("--json", "info", "foo").json
    pm("remove", "foo")
    assert not exists(root, "/usr/bin/foo")
    assert pm("list").out == ""


def test_a_mistyped_command_gets_a_suggestion(pm):
    result = pm("instal", "hello", expect=2)
    assert "unknown command 'instal'" in result.err and "did you mean 'install'?" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_an_unknown_option_before_the_command_is_named_not_the_word_after_it(pm):
    result = pm("-S", "hello", expect=2)
    assert "unknown option -S" in result.err and "hello" not in result.err
    assert "did you mean --json?" in pm("--jsn", "list", expect=2).err


# -- search ------------------------------------------------------------------------------

def test_search_shows_version_and_source_and_exits_1_when_nothing_matches(pm, build, root, repository):
    repo = repository().add(build("tool", "1.2", {"/t": "t"}, description="Frobs widgets")).use(root)
    assert pm("search", "frob").out == "tool 1.2 (%s) - Frobs widgets\n" % repo.path
    result = pm("search", "zzz", expect=1)
    assert result.out == "" and "no package matches zzz" in result.err
    assert pm("--json", "search", "zzz", expect=1).json == {"packages": [], "warnings": []}


# -- quiet, nothing to do, scripts -----------------------------------------------------------

def test_quiet_prints_only_errors(pm, build, root):
    good = build("foo", "1.0", {"/a": "a"}, scripts={"api-post-install": "echo hi\n"})
    result = pm("-q", "install", good)
    assert result.out == "" and "installed" not in result.err
    failing = build("bar", "1.0", {"/b": "b"}, scripts={"api-post-install": "exit 3\n"})
    result = pm("-q", "install", failing, expect=1)
    assert result.out == ""
    assert result.err.startswith("pm: error: api-post-install of bar failed")
    assert pm("-q", "list").out == ""


def test_an_upgrade_or_autoremove_with_nothing_to_do_says_so(pm, build, root, repository):
    repository().add(build("tool", "1.0", {"/t": "t"})).use(root)
    pm("install", "tool")
    for command in (["upgrade"], ["autoremove"], ["install", "tool"]):
        result = pm(*command)
        assert "nothing to do" in result.err, command
        assert pm("--json", *command).json["changes"] == []


def test_script_output_is_prefixed_with_package_and_script(pm, build, root):
    script = "#!/bin/sh\necho to stdout\necho to stderr >&2\nprintf 'no newline'\n"
    result = pm("install", build("foo", "1.0", {"/a": "a"}, scripts={"api-post-install": script}))
    assert result.out == "installed foo 1.0\n", "scripts never write to pm's stdout"
    lines = result.err.splitlines()
    for text in ("to stdout", "to stderr", "no newline"):
        assert "foo api-post-install: " + text in lines
    escape = build("esc", "1.0", {"/e": "e"}, scripts={"api-pre-install": "printf 'a\\033[2Jb\\n'\n"})
    lines = pm("install", escape).err.splitlines()
    assert "esc api-pre-install: a?[2Jb" in lines, "a script's control characters do not reach the terminal"


# -- Ctrl-C -------------------------------------------------------------------------------

def _start_pm(root, *args):
    env = dict(os.environ)
    env.pop("PM_ROOT", None)
    return subprocess.Popen([sys.executable, str(PM), "--root", str(root)] + [str(a) for a in args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(condition, proc, seconds=60):
    deadline = time.monotonic() + seconds
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def test_ctrl_c_during_a_pre_script_exits_130_with_nothing_changed(build, root, tmp_path):
    marker = tmp_path / "script-started"
    script = "#!/bin/sh\ntouch '%s'\nexec sleep 60\n" % marker
    package = build("slow", "1.0", {"/usr/bin/slow": "s"}, scripts={"api-pre-install": script})
    assert subprocess.run([sys.executable, str(PM), "--root", str(root), "install",
                           build("first", "1.0", {"/first": "f"})], capture_output=True).returncode == 0
    before = snapshot(root)
    proc = _start_pm(root, "install", package)
    assert _wait_for(marker.exists, proc), proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "pm: error: interrupted" in err and "Traceback" not in err
    assert snapshot(root) == before


def test_ctrl_c_in_the_middle_of_an_install_rolls_back_then_exits_130(build, root):
    """SIGINT reaches a real pm while it stages a big package (its journal is written):
    the transaction is undone, nothing of the package is left, and pm exits 130."""
    files = 2000
    for attempt in range(4):
        package = build("big%d" % attempt, "1.0", {"/opt/big/f%05d" % i: "x" * 4096 for i in range(files)})
        proc = _start_pm(root, "--unsafe-io", "install", package)
        journal = root / "var/lib/pm/journal"
        if _wait_for(journal.exists, proc):
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=120)
            if proc.returncode == 0:            # it finished in between: try a bigger one
                subprocess.run([sys.executable, str(PM), "--root", str(root), "uninstall", "big%d" % attempt],
                               check=True, capture_output=True)
                files *= 2
                continue
            assert proc.returncode == 130, err
            assert "interrupted" in err and "Traceback" not in err
            assert not (root / "opt").exists(), "the rollback removed every staged file"
            assert not journal.exists()
            listed = subprocess.run([sys.executable, str(PM), "--root", str(root), "list-installed"],
                                    capture_output=True, text=True)
            assert listed.returncode == 0 and listed.stdout == ""
            return
        proc.communicate(timeout=120)
        files *= 2
    raise AssertionError("pm never got to its transaction while being watched")


# -- info and files --------------------------------------------------------------------------

def test_info_has_the_same_keys_for_a_package_file_an_installed_package_and_an_offered_one(
        pm, build, root, repository):
    package = build("foo", "1.0", {"/usr/bin/foo": "abc"}, config=["/etc/foo.conf"],
                    description="a foo", scripts={"api-post-install": "true\n"})
    repo = repository().add(build("bar", "2.0", {"/bar": "b"}, description="a bar")).use(root)
    from_file = pm("--json", "info", package).json
    offered = pm("--json", "info", "bar").json
    pm("install", package)
    installed = pm("--json", "info", "foo").json
    assert set(from_file) == set(offered) == set(installed)
    assert from_file["state"] is None and from_file["file"] == str(package)
    assert offered["state"] is None and offered["source"] == str(repo.path)
    assert offered["download_size"] == repo.entry("bar", "2.0")["size"]
    assert installed["state"] == "installed" and isinstance(installed["time"], int)
    assert from_file["scripts"] == installed["scripts"] == ["api-post-install"]
    assert from_file["installed_size"] == installed["installed_size"] == 3
    assert from_file["files"] == installed["files"]
    people = pm("info", "bar").out
    assert "Version:      2.0" in people and "Source:       %s" % repo.path in people
    assert "State:        not installed" in people


def test_files_lists_a_package_files_members_and_an_offered_packages_members(pm, build, root, repository):
    package = build("foo", "1.0", {"/usr/bin/foo": "abc", "/usr/share/foo/x": "x"})
    assert pm("files", package).out.split() == ["/usr", "/usr/bin", "/usr/bin/foo", "/usr/share",
                                                 "/usr/share/foo", "/usr/share/foo/x"]
    rows = pm("--json", "files", package).json["files"]
    assert {"path": "/usr/bin/foo", "type": "file", "mode": "0644", "size": 3, "sha256": None,
            "link": None} in rows
    repository().add(package).use(root)
    before = snapshot(root)
    assert pm("files", "foo").out.split()[-1] == "/usr/share/foo/x"
    assert snapshot(root) == before, "listing an offered package installs and caches nothing"
    assert "not installed, and no source offers it" in pm("files", "ghost", expect=1).err
