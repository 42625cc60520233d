"""One record (issue 12): the operations ``--json --dry-run`` shows are the plan, and the
transaction journals and executes exactly those operations.

For each scenario the dry run's ``operations`` are compared with the journal the real
command writes (read back from a run killed just before its commit, then recovered):
the same operations in the same order, the reserved names aside (they carry each run's
transaction id)."""

import re
import shutil

import msgpack
import pytest

from conftest import Dir, File, Link, run_pm

TXID = re.compile(r"\.~pm\.[0-9a-f]+\.")


def normalized(ops):
    return [[TXID.sub(".~pm.TX.", part) if isinstance(part, str) else part for part in op] for op in ops]


def app(version, count=6, changed=(), extra=None, **kwargs):
    files = {"/usr/lib/app/mod%02d" % i: "module %d version %s\n" % (i, version if i in changed else "1")
             for i in range(count)}
    files["/etc/app.conf"] = "setting=%s\n" % version
    files.update(extra or {})
    return files


def scenarios(build):
    """name -> (prepare(root), command): a root and the command run on it."""
    v1 = build("app", "1.0", app("1", extra={"/opt/app/old/x": "dropped later", "/usr/bin/app": File("1", 0o755)}),
               config=["/etc/app.conf"], sums=True, scripts={"api-post-install": "#!/bin/sh\ntrue\n"})
    v2 = build("app", "2.0", app("2", changed={0, 1}, extra={"/usr/bin/app": File("2", 0o755),
                                                              "/usr/share/app/new": "new"}),
               config=["/etc/app.conf"], sums=True)
    dir_1 = build("pkg", "1.0", {"/test/file": "f", "/test2/x": "x"})
    dir_2 = build("pkg", "1.1", {"/test": Link("test2"), "/test2/x": "x"})
    merge_1 = build("pkg1", "1.0", {"/lib": Link("usr/lib"), "/usr/lib/foo": "foo"})
    merge_2 = build("pkg1", "1.1", {"/usr/lib/foo": "foo"})
    merge_other = build("pkg2", "1.0", {"/lib/bar": "bar"})
    mode_1 = build("modes", "1.0", {"/srv/data": Dir(0o755), "/srv/data/f": "f"})
    mode_2 = build("modes", "2.0", {"/srv/data": Dir(0o700), "/srv/data/f": "f"})

    def installed(*packages, edit_config=False):
        def prepare(root):
            # pm's own directory exists (a dry run takes no lock, which would make it on
            # an empty root: its plan would then make var/lib/pm too)
            (root / "var/lib/pm").mkdir(parents=True)
            for package in packages:
                assert run_pm(root, "install", package).code == 0
            if edit_config:
                (root / "etc/app.conf").write_text("setting=mine\n")
        return prepare

    return {
        "fresh install into new directories": (installed(), ["install", v1]),
        "install beside existing directories": (installed(mode_1), ["install", v1]),
        "upgrade keeping unchanged files and dropping one": (installed(v1), ["install", v2]),
        "upgrade over an edited config file": (installed(v1, edit_config=True), ["install", v2]),
        "uninstall": (installed(v1), ["uninstall", "app"]),
        "purge": (installed(v1, edit_config=True), ["uninstall", "--purge", "app"]),
        "a directory becomes a symlink": (installed(dir_1), ["install", dir_2]),
        "a dropped symlink makes way for a directory": (installed(merge_1), ["install", merge_2, merge_other]),
        "a directory mode tightened": (installed(mode_1), ["install", mode_2]),
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from conftest import PackageBuilder
    top = tmp_path_factory.mktemp("plans")
    cases = scenarios(PackageBuilder(top / "packages").build)
    assert tuple(cases) == SCENARIOS
    return top, cases


SCENARIOS = ("fresh install into new directories", "install beside existing directories",
             "upgrade keeping unchanged files and dropping one", "upgrade over an edited config file",
             "uninstall", "purge", "a directory becomes a symlink", "a dropped symlink makes way for a directory",
             "a directory mode tightened")


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_journal_holds_exactly_the_operations_the_dry_run_showed(corpus, name):
    top, cases = corpus
    prepare, command = cases[name]
    root = top / name.replace(" ", "-")
    if root.exists():
        shutil.rmtree(root)
    root.mkdir()
    prepare(root)
    shown = run_pm(root, "--json", *command[:1], "--dry-run", *command[1:])
    assert shown.code == 0, shown
    planned = shown.json["operations"]
    assert planned, "a scenario with nothing to do proves nothing"
    killed = run_pm(root, *command, env={"PM_FAULT": "kill:1:db"})      # just before the commit
    assert killed.code != 0
    journal = msgpack.unpackb((root / "var/lib/pm/journal").read_bytes(), raw=False)
    assert normalized(journal["ops"]) == normalized(planned)
    assert run_pm(root, "recover").code == 0
    done = run_pm(root, "--json", *command)
    assert done.code == 0, done
    assert normalized(done.json["operations"]) == normalized(planned)
    assert run_pm(root, "verify").code == 0


def test_with_nothing_to_do_the_plan_has_no_operations(pm, build, root):
    package = build("app", "1.0", {"/a": "a"})
    pm("install", package)
    assert pm("--json", "install", "--dry-run", package).json["operations"] == []
