"""SPEC §10 over HTTP: a real server on 127.0.0.1 serves a repository; `pm update` caches
its index, install/upgrade/autoremove work by name, every download is checked against
the index before it is opened, and an interrupted download leaves nothing half-installed
and is resumed by the next run."""

from pathlib import Path

from conftest import read, exists, snapshot, payload
from pm import human_size

CACHE = "var/cache/pm"


def cached_packages(root):
    return sorted(p.name for p in (Path(root) / CACHE / "packages").rglob("*") if p.is_file())


def served(repository, serve, root, *packages):
    """A repository of ``packages``, served over HTTP, listed in the root's sources and
    fetched by pm update."""
    from conftest import run_pm
    repo = repository().add(*packages)
    server = serve(repo.path)
    repo.use(root, url=server.url)
    assert run_pm(root, "update").code == 0
    return repo, server


def test_update_caches_the_index_then_install_upgrade_and_autoremove_work(pm, build, root, repository, serve):
    repo = repository().add(build("app", "1.0", {"/app": "1"}, deps={"lib": "^1"}),
                            build("lib", "1.0", {"/lib": "1"}))
    server = serve(repo.path)
    repo.use(root, url=server.url + "/")
    result = pm("install", "app", expect=1)
    assert "no index of %s/ in the cache; run pm update" % server.url in result.err
    assert "%s/: 2 packages" % server.url in pm("update").out
    assert [p.name for p in (root / CACHE / "indexes").iterdir()][0].startswith("127.0.0.1")
    pm("install", "app")
    assert read(root, "/app") == "1" and read(root, "/lib") == "1"
    assert cached_packages(root) == ["app-1.0.tar", "lib-1.0.tar"]

    repo.add(build("app", "2.0", {"/app": "2"}, deps={"lib": "^1.5", "extra": "*"}),
             build("lib", "1.5", {"/lib": "1.5"}), build("extra", "1.0", {"/extra": "e"}))
    assert pm("upgrade").out == "", "pm upgrade reads the cached index: nothing new before pm update"
    result = pm("update")
    assert "2 packages can be upgraded" in result.err
    before = snapshot(root)
    assert pm("upgrade", "--dry-run").out.splitlines()[0].startswith("install extra 1.0 (")
    assert snapshot(root) == before, "a dry run downloads outside the root"
    result = pm("upgrade")
    assert result.out.splitlines() == ["installed extra 1.0", "upgraded lib 1.0 -> 1.5", "upgraded app 1.0 -> 2.0"]
    rows = {r["name"]: r["reason"] for r in pm("--json", "list-installed").json["packages"]}
    assert rows == {"app": "explicit", "extra": "dependency", "lib": "dependency"}
    pm("uninstall", "app")
    assert sorted(pm("autoremove").out.splitlines()) == ["removed extra 1.0", "removed lib 1.5"]
    assert pm("list-installed").out == ""


def test_a_cached_package_is_not_downloaded_again(pm, build, root, repository, serve):
    repo, server = served(repository, serve, root, build("tool", "1.0", {"/t": "t"}))
    pm("install", "tool")
    pm("uninstall", "tool")
    pm("install", "tool")
    assert len(server.fetched("tool-1.0.tar")) == 1


def test_update_dry_run_fetches_and_checks_but_keeps_nothing(pm, build, root, repository, serve):
    repo = repository().add(build("tool", "1.0", {"/t": "t"}))
    server = serve(repo.path)
    repo.use(root, url=server.url)
    before = snapshot(root)
    result = pm("update", "--dry-run")
    assert "%s: 1 package" % server.url in result.out
    assert snapshot(root) == before


def test_update_reports_a_failing_source_and_still_updates_the_others(pm, build, root, repository, serve):
    good = repository().add(build("tool", "1.0", {"/t": "t"}))
    empty = repository()
    empty.path.mkdir()
    server, other = serve(good.path), serve(empty.path)
    good.use(root, url=server.url)
    empty.use(root, url=other.url)
    result = pm("--json", "update", expect=1)
    reports = {r["url"]: r for r in result.json["sources"]}
    assert reports[server.url]["packages"] == 1
    assert "has no index" in reports[other.url]["error"]
    pm("install", "tool")


def test_update_forgets_packages_and_sources_no_longer_listed(pm, build, root, repository, serve):
    repo, server = served(repository, serve, root, build("tool", "1.0", {"/t": "t"}))
    pm("install", "tool")
    assert len(list((root / CACHE / "indexes").iterdir())) == 1
    repo.file("tool", "1.0").unlink()
    repo.add(build("tool", "1.1", {"/t": "t2"}))
    pm("update")
    assert cached_packages(root) == [], "tool-1.0.tar is no longer listed"
    pm("upgrade")
    assert cached_packages(root) == ["tool-1.1.tar"]
    (root / "etc/pm/sources.list").write_text("")
    pm("update")
    assert list((root / CACHE / "indexes").iterdir()) == []
    assert list((root / CACHE / "packages").iterdir()) == []


def test_a_tampered_package_is_refused_nothing_changes_and_it_is_not_kept(pm, build, root, repository, serve):
    repo, server = served(repository, serve, root, build("app", "1.0", {"/app": "a"}, deps={"lib": "*"}),
                          build("lib", "1.0", {"/lib": "l"}))
    repo.file("lib", "1.0").write_bytes(build("lib", "1.0", {"/lib": "evil"}).read_bytes())
    before = payload(root)
    result = pm("install", "app", expect=3)
    assert "lib-1.0.tar" in result.err and "refused" in result.err
    assert payload(root) == before
    assert pm("list-installed").out == ""
    assert "lib-1.0.tar" not in cached_packages(root) and "lib-1.0.tar.part" not in cached_packages(root)


def test_an_interrupted_download_installs_nothing_and_the_next_run_resumes_it(pm, build, root, repository, serve):
    big = bytes(range(256)) * 4096                      # 1 MiB, so that the cut is mid-file
    repo, server = served(repository, serve, root, build("app", "1.0", {"/app": "a"}, deps={"data": "*"}),
                          build("data", "1.0", {"/usr/share/data.bin": big}))
    name = repo.entry("data", "1.0")["filename"]
    server.drop["/" + name] = 300_000
    before = payload(root)
    result = pm("install", "app", expect=1)
    assert "interrupted after 300000 of" in result.err and "run the command again" in result.err
    assert payload(root) == before and pm("list-installed").out == ""
    assert name + ".part" in cached_packages(root)
    pm("install", "app")
    assert server.fetched(name)[-1][1] == "bytes=300000-"
    assert (root / "usr/share/data.bin").read_bytes() == big
    assert name in cached_packages(root) and name + ".part" not in cached_packages(root)
    pm("verify")


def test_a_server_without_ranges_makes_the_next_run_start_over(pm, build, root, repository, serve):
    repo, server = served(repository, serve, root, build("data", "1.0", {"/d": bytes(300_000)}))
    name = repo.entry("data", "1.0")["filename"]
    server.drop["/" + name], server.ranges = 100_000, False
    pm("install", "data", expect=1)
    pm("install", "data")
    assert (root / "d").read_bytes() == bytes(300_000)


def test_a_stale_partial_download_is_discarded_and_fetched_again(pm, build, root, repository, serve):
    repo, server = served(repository, serve, root, build("data", "1.0", {"/d": "fresh" * 1000}))
    name = repo.entry("data", "1.0")["filename"]
    pm("install", "--dry-run", "data")
    slug = next((root / CACHE / "indexes").iterdir()).name
    partial = root / CACHE / "packages" / slug / (name + ".part")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"\xff" * 2000)                 # from some other file
    pm("install", "data")
    assert read(root, "/d") == "fresh" * 1000
    assert [r[1] for r in server.fetched(name)][-2:] == ["bytes=2000-", None]


def test_a_dry_run_by_name_over_http_leaves_the_cache_alone(pm, build, root, repository, serve):
    repo, server = served(repository, serve, root, build("tool", "1.0", {"/t": "t"}))
    before = snapshot(root)
    size = human_size(repo.entry("tool", "1.0")["size"])
    assert pm("install", "--dry-run", "tool").out.splitlines() == [
        "install tool 1.0 (%s to download, +1 B)" % size, "1 to install; %s to download; installed size +1 B" % size]
    assert server.fetched(repo.entry("tool", "1.0")["filename"]) == [], "a dry run downloads nothing it does not need"
    assert snapshot(root) == before
    assert pm("-v", "install", "--dry-run", "tool").out.splitlines()[:2] == [
        "install tool 1.0 (%s to download, +1 B)" % size, "  write /t"], "with -v it fetches, outside the root"
    assert len(server.fetched(repo.entry("tool", "1.0")["filename"])) == 1
    assert snapshot(root) == before
    assert not exists(root, "/t")


def test_a_download_shows_progress_on_a_terminal_and_none_when_piped(pm, build, root, repository, serve):
    import os
    import pty
    import subprocess
    import sys
    from conftest import PM
    repo, server = served(repository, serve, root, build("big", "1.0", {"/big": bytes(range(256)) * 2048}))
    assert "downloading" not in pm("install", "--dry-run", "big").err
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, str(PM), "--root", str(root), "install", "big"],
                            stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    assert proc.wait() == 0 and proc.stdout.read() == b"installed big 1.0\n"
    os.close(leader)
    assert b"\rdownloading " in shown and b"KiB" in shown


def test_an_update_killed_while_writing_the_cache_leaves_the_old_index(pm, build, root, repository, serve):
    repo, server = served(repository, serve, root, build("tool", "1.0", {"/t": "1"}))
    repo.add(build("tool", "2.0", {"/t": "2"}))
    result = pm("update", env={"PM_FAULT": "kill:1:cache"}, expect=None)
    assert result.code != 0
    assert pm("search").out == "tool 1.0 (%s)\n" % server.url, "the index cached before is whole"
    pm("update")
    assert pm("search").out == "tool 2.0 (%s)\n" % server.url
    assert [p.name for p in (root / CACHE / "indexes").iterdir() if p.name.endswith(".tmp")] == []
