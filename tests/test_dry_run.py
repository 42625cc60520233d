"""SPEC §7: a dry run prints the plan and changes nothing under the root — the database
directory and the lock included."""

from conftest import snapshot


def test_a_dry_run_on_an_empty_root_creates_nothing_not_even_the_lock(pm, build, root):
    package = build("foo", "1.0", {"/usr/bin/foo": "x"})
    result = pm("install", "--dry-run", package)
    assert snapshot(root) == {}
    assert result.out.splitlines() == ["install foo 1.0 (+1 B)", "1 to install; 0 B to download; installed size +1 B"]
    result = pm("-v", "install", "--dry-run", package)
    assert snapshot(root) == {}
    assert result.out.splitlines() == ["install foo 1.0 (+1 B)", "  mkdir /usr", "  mkdir /usr/bin",
                                       "  write /usr/bin/foo", "1 to install; 0 B to download; installed size +1 B"]


def test_dry_runs_of_install_upgrade_uninstall_and_purge_change_nothing(pm, build, root):
    conf = "/etc/foo.conf"
    pm("install", build("foo", "1.0", {"/usr/bin/foo": "1", conf: "A", "/usr/lib/foo/old": "o"},
                        config=[conf], scripts={"api-post-install": "#!/bin/sh\ntrue\n"}))
    (root / "etc/foo.conf").write_text("D")
    before = snapshot(root)
    upgrade = build("foo", "2.0", {"/usr/bin/foo": "2", conf: "N"}, config=[conf])
    result = pm("-v", "install", "--dry-run", upgrade)
    assert result.out.splitlines() == [
        "upgrade foo 1.0 -> 2.0 (-1 B)", "  keep /etc/foo.conf", "  write-new /etc/foo.conf.pm-new",
        "  replace /usr/bin/foo", "  remove /usr/lib/foo/old", "  rmdir /usr/lib/foo", "  rmdir /usr/lib",
        "1 to upgrade; 0 B to download; installed size -1 B"]
    assert snapshot(root) == before
    result = pm("-v", "uninstall", "--dry-run", "foo")
    assert result.out.splitlines() == ["remove foo 1.0 (-3 B)", "  remove /usr/lib/foo/old", "  remove /usr/bin/foo",
                                       "  keep /etc/foo.conf", "  rmdir /usr/lib/foo", "  rmdir /usr/lib",
                                       "  rmdir /usr/bin", "  rmdir /usr", "1 to remove; 0 B to download; installed size -3 B"]
    assert pm("uninstall", "--dry-run", "foo").out.splitlines() == [
        "remove foo 1.0 (-3 B)", "1 to remove; 0 B to download; installed size -3 B"], "file operations only with -v"
    assert snapshot(root) == before
    result = pm("-v", "uninstall", "--dry-run", "--purge", "foo")
    assert "  remove /etc/foo.conf" in result.out and "  rmdir /etc" in result.out
    assert snapshot(root) == before


def test_a_dry_run_names_the_scripts_it_would_run(pm, build, root):
    package = build("foo", "1.0", {"/a": "x"}, scripts={"api-pre-install": "true", "api-post-install": "true"})
    result = pm("install", "--dry-run", package)
    assert result.out.splitlines()[1:3] == ["  run api-pre-install", "  run api-post-install"]


def test_a_dry_run_plan_is_what_the_real_run_does(pm, build, root):
    package = build("foo", "1.0", {"/opt/foo/a": "a", "/opt/foo/b": "b"})
    plan = pm("--json", "install", "--dry-run", package).json
    done = pm("--json", "install", package).json
    assert plan["dry_run"] is True and done["dry_run"] is False
    assert plan["changes"] == done["changes"]


def test_a_dry_run_refuses_what_the_real_run_would_refuse(pm, build, root):
    pm("install", build("a", "1.0", {"/x": "a"}))
    before = snapshot(root)
    result = pm("install", "--dry-run", build("b", "1.0", {"/x": "b"}), expect=1)
    assert "/x (owned by a)" in result.err
    assert snapshot(root) == before
