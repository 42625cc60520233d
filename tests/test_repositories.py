"""SPEC §10: sources (a directory, file://), install by name with dependency resolution,
install reasons, autoremove, search, integrity of what is fetched, dry runs."""

import json

from conftest import read, exists, payload, snapshot


def test_install_by_name_resolves_and_installs_dependencies_first(pm, build, root, repository, tmp_path):
    log = tmp_path / "order.log"
    script = {"api-post-install": "#!/bin/sh\necho $PM_PACKAGE >> %s\n" % log}
    repository().add(build("app", "1.0", {"/app": "1"}, deps={"lib": "^1"}, scripts=script),
                     build("app", "2.0", {"/app": "2"}, deps={"lib": ">=1.5,<2"}, scripts=script),
                     build("lib", "1.2", {"/lib/x": "1.2"}, scripts=script),
                     build("lib", "1.6", {"/lib/x": "1.6"}, scripts=script),
                     build("lib", "2.0", {"/lib/x": "2.0"}, scripts=script)).use(root)
    result = pm("install", "app")
    assert result.out.splitlines() == ["installed lib 1.6", "installed app 2.0"]
    assert log.read_text().split() == ["lib", "app"]
    assert read(root, "/lib/x") == "1.6"


def test_install_records_what_was_asked_for_and_what_came_as_a_dependency(pm, build, root, repository):
    repository().add(build("app", "1.0", {"/app": "1"}, deps={"lib": "*"}), build("lib", "1.0", {"/l": "l"})).use(root)
    pm("install", "app")
    rows = {r["name"]: r["reason"] for r in pm("--json", "list-installed").json["packages"]}
    assert rows == {"app": "explicit", "lib": "dependency"}
    result = pm("install", "lib")
    assert "lib 1.0 is already installed" in result.err
    assert "marked lib explicit" in result.out
    rows = {r["name"]: r["reason"] for r in pm("--json", "list-installed").json["packages"]}
    assert rows == {"app": "explicit", "lib": "explicit"}


def test_a_file_url_source_works_like_a_directory(pm, build, root, repository):
    repo = repository().add(build("tool", "1.0", {"/usr/bin/tool": "t"}))
    repo.use(root, url="file://%s" % repo.path)
    pm("install", "tool")
    assert read(root, "/usr/bin/tool") == "t"


def test_sources_list_d_files_are_read_too(pm, build, root, repository):
    repo = repository().add(build("tool", "1.0", {"/t": "t"}))
    (root / "etc/pm/sources.list.d").mkdir(parents=True)
    (root / "etc/pm/sources.list.d/local.list").write_text("# local packages\n%s\n" % repo.path)
    (root / "etc/pm/sources.list.d/ignored.txt").write_text("not a source list\n")
    pm("install", "tool")


def test_files_and_names_mix_and_a_file_pulls_its_dependencies_from_the_sources(pm, build, root, repository):
    repository().add(build("lib", "1.0", {"/lib/x": "x"})).use(root)
    app = build("app", "1.0", {"/app": "a"}, deps={"lib": "^1"})
    tool = build("tool", "1.0", {"/tool": "t"})
    pm("install", app, "lib", tool)
    assert pm("list-installed").out == "app (1.0)\nlib (1.0)\ntool (1.0)\n"


def test_a_repository_given_on_the_command_line_is_used_for_that_command(pm, build, root, repository):
    repo = repository().add(build("tool", "1.0", {"/t": "t"}))
    pm("--repository", repo.path, "install", "tool")
    assert not exists(root, "/etc/pm/sources.list")
    assert pm("list-installed").out == "tool (1.0)\n"


def test_an_unknown_name_is_refused_naming_it(pm, build, root, repository):
    repository().add(build("tool", "1.0", {"/t": "t"})).use(root)
    result = pm("install", "nosuch", expect=1)
    assert "no source offers a package named nosuch" in result.err


def test_a_malformed_constraint_is_invalid_input(pm, build, root, repository):
    repository().add(build("tool", "1.0", {"/t": "t"})).use(root)
    result = pm("install", "tool>>1", expect=3)
    assert "malformed version constraint '>>1' for tool" in result.err


def test_an_unsatisfiable_request_is_refused_with_the_clash_and_nothing_changes(pm, build, root, repository):
    repository().add(build("app", "1.0", {"/app": "a"}, deps={"lib": ">=2"}),
                     build("lib", "1.0", {"/l": "1"}), build("lib", "2.0", {"/l": "2"}),
                     build("tool", "1.0", {"/t": "t"}, deps={"lib": "<2"})).use(root)
    pm("install", "tool")
    before = snapshot(root)
    result = pm("install", "app", expect=1)
    assert "no acceptable version of lib: tool 1.0 (installed) needs lib <2; app 1.0 (requested) needs lib >=2; " \
        "available: lib 1.0 (installed), lib 2.0" in result.err
    assert snapshot(root) == before


def test_a_dry_run_by_name_prints_the_plan_and_changes_nothing(pm, build, root, repository):
    repository().add(build("app", "1.0", {"/app": "a"}, deps={"lib": "*"}), build("lib", "1.0", {"/l": "l"})).use(root)
    before = snapshot(root)
    result = pm("install", "--dry-run", "app")
    assert result.out.splitlines() == ["install lib 1.0 (+1 B)", "install app 1.0 (+1 B)",
                                       "2 to install; 0 B to download; installed size +2 B"]
    result = pm("-v", "install", "--dry-run", "app")
    assert result.out.splitlines() == ["install lib 1.0 (+1 B)", "  write /l", "install app 1.0 (+1 B)",
                                       "  write /app", "2 to install; 0 B to download; installed size +2 B"]
    assert snapshot(root) == before


def test_no_deps_installs_only_what_is_named(pm, build, root, repository):
    repository().add(build("app", "1.0", {"/app": "a"}, deps={"lib": "*"}), build("lib", "1.0", {"/l": "l"})).use(root)
    pm("install", "--no-deps", "app")
    assert pm("list-installed").out == "app (1.0)\n"


def test_a_package_that_does_not_match_its_index_is_refused_and_nothing_changes(pm, build, root, repository):
    repo = repository().add(build("tool", "1.0", {"/t": "good"})).use(root)
    path = repo.file("tool", "1.0")
    path.write_bytes(build("tool", "1.0", {"/t": "evil"}).read_bytes())
    result = pm("install", "tool", expect=3)
    assert "does not match the sha256 of the index" in result.err
    assert payload(root) == {"etc": payload(root)["etc"], "etc/pm": payload(root)["etc/pm"],
                             "etc/pm/sources.list": payload(root)["etc/pm/sources.list"]}


def test_a_package_whose_size_differs_from_its_index_is_refused(pm, build, root, repository):
    repo = repository().add(build("tool", "1.0", {"/t": "good"})).use(root)
    with open(repo.file("tool", "1.0"), "ab") as f:
        f.write(b"\0" * 512)
    result = pm("install", "tool", expect=3)
    assert "the index says" in result.err
    assert not exists(root, "/t")


def test_an_index_entry_naming_another_package_is_refused(pm, build, root, repository):
    repo = repository().add(build("tool", "1.0", {"/t": "t"})).use(root)
    index = json.loads((repo.path / "index.json").read_text())
    index["packages"][0]["manifest"]["package"] = "other"
    (repo.path / "index.json").write_text(json.dumps(index))
    (repo.path / "index.msgpack.zst").unlink()
    result = pm("install", "other", expect=3)
    assert "holds tool 1.0, but the index" in result.err


def test_a_truncated_compressed_index_is_invalid_input(pm, build, root, repository):
    repo = repository().add(build("tool", "1.0", {"/t": "t"})).use(root)
    index = repo.path / "index.msgpack.zst"
    index.write_bytes(index.read_bytes()[:-3])
    result = pm("install", "tool", expect=3)
    assert "truncated zstd data (a frame ends early)" in result.err and "index.msgpack.zst" in result.err
    assert not exists(root, "/t")


def test_a_malformed_index_is_invalid_input_naming_the_source(pm, build, root, repository):
    repo = repository().add(build("tool", "1.0", {"/t": "t"})).use(root)
    (repo.path / "index.msgpack.zst").write_bytes(b"\x28\xb5\x2f\xfdgarbage")
    result = pm("install", "tool", expect=3)
    assert "index.msgpack.zst of %s" % repo.path in result.err


def test_an_index_without_checksums_needs_a_trusted_source(pm, build, root, repository):
    """An OpenOS repository: package files and a Lua `manifest` index only."""
    repo = repository().add(build("tool", "1.0", {"/t": "t"}))
    lua = (repo.path / "manifest").read_text()
    lua = "\n".join(line for line in lua.splitlines() if "sha256" not in line and "size =" not in line)
    (repo.path / "manifest").write_text(lua)
    (repo.path / "index.json").unlink()
    (repo.path / "index.msgpack.zst").unlink()
    repo.use(root)
    result = pm("install", "tool", expect=3)
    assert "no size and sha256" in result.err and "trusted=yes" in result.err
    (root / "etc/pm/sources.list").write_text("[trusted=yes] %s\n" % repo.path)
    result = pm("install", "tool")
    assert "has no checksums for 1 package; accepted because the source is trusted=yes" in result.err
    assert read(root, "/t") == "t"


def test_a_malformed_sources_list_is_invalid_input_naming_the_line(pm, root):
    (root / "etc/pm").mkdir(parents=True)
    (root / "etc/pm/sources.list").write_text("# mirrors\n\nftp://example.org/repo\n")
    result = pm("install", "tool", expect=3)
    assert "sources.list line 3: unsupported source 'ftp://example.org/repo'" in result.err


def test_search_lists_the_newest_versions_without_hidden_packages(pm, build, root, repository):
    repo = repository()
    repo.add(build("tool", "1.0", {"/t": "1"}, description="Frobs widgets"),
             build("tool", "1.1", {"/t": "2"}, description="Frobs widgets better"),
             build("tool", "2.0.0-beta.1", {"/t": "3"}, description="Frobs unstably"),
             build("libsecret", "1.0", {"/s": "s"}, hidden=True),
             build("other", "1.0", {"/o": "o"}, description="Something else")).use(root)
    pm("install", "other")
    assert pm("search").out.splitlines() == ["other 1.0 (%s) [installed 1.0] - Something else" % repo.path,
                                             "tool 1.1 (%s) - Frobs widgets better" % repo.path]
    assert pm("search", "WIDGET").out.splitlines() == ["tool 1.1 (%s) - Frobs widgets better" % repo.path]
    rows = pm("--json", "search", "else").json["packages"]
    assert [r["package"] for r in rows] == ["other"]


def test_autoremove_removes_dependencies_no_explicit_package_needs(pm, build, root, repository):
    repository().add(build("app", "1.0", {"/app": "a"}, deps={"lib": "*", "sh": "*"}),
                     build("lib", "1.0", {"/l": "l"}, deps={"base": "*"}), build("base", "1.0", {"/b": "b"}),
                     build("busybox", "1.0", {"/bb": "b"}, provides=["sh"]),
                     build("keep", "1.0", {"/k": "k"}, deps={"base": "*"})).use(root)
    pm("install", "app", "keep")
    assert pm("autoremove").out == ""
    pm("uninstall", "app")
    before = snapshot(root)
    plan = pm("autoremove", "--dry-run").out
    assert snapshot(root) == before
    assert plan.splitlines()[0].split(" (")[0] in ("remove busybox 1.0", "remove lib 1.0")
    result = pm("autoremove")
    assert sorted(result.out.splitlines()) == ["removed busybox 1.0", "removed lib 1.0"]
    assert pm("list-installed").out == "base (1.0)\nkeep (1.0)\n"


def test_upgrade_names_only_installed_packages(pm, build, root, repository):
    repository().add(build("tool", "1.0", {"/t": "t"})).use(root)
    result = pm("upgrade", "tool", expect=1)
    assert "tool is not installed" in result.err


def test_upgrade_of_named_packages_leaves_the_others(pm, build, root, repository):
    repo = repository().add(build("a", "1.0", {"/a": "1"}), build("b", "1.0", {"/b": "1"})).use(root)
    pm("install", "a", "b")
    repo.add(build("a", "2.0", {"/a": "2"}), build("b", "2.0", {"/b": "2"}))
    assert pm("upgrade", "a").out == "upgraded a 1.0 -> 2.0\n"
    assert pm("list-installed").out == "a (2.0)\nb (1.0)\n"


def test_allow_same_version_reinstalls_by_name_from_the_source(pm, build, root, repository):
    repository().add(build("tool", "1.0", {"/t": "t"})).use(root)
    pm("install", "tool")
    (root / "t").write_text("changed by hand")
    assert "already installed" in pm("install", "tool").err
    assert read(root, "/t") == "changed by hand"
    assert pm("install", "--allow-same-version", "tool").out == "reinstalled tool 1.0 -> 1.0\n"
    assert read(root, "/t") == "t"


def test_update_reads_local_sources_in_place_and_caches_nothing(pm, build, root, repository):
    repository().add(build("tool", "1.0", {"/t": "t"}), build("x", "1.0", {"/x": "x"})).use(root)
    result = pm("update")
    assert result.out.endswith(": 2 packages (read in place)\n")
    assert not exists(root, "/var/cache/pm/indexes/")


def test_a_relative_directory_in_sources_list_is_refused(pm, root):
    (root / "etc/pm").mkdir(parents=True)
    (root / "etc/pm/sources.list").write_text("repo/packages\n")
    result = pm("search", expect=3)
    assert "sources.list line 1: unsupported source 'repo/packages'" in result.err


def test_a_source_that_cannot_be_reached_is_left_out_with_a_warning(pm, build, root, repository, tmp_path):
    repository().add(build("tool", "1.0", {"/t": "t"})).use(root)
    with open(root / "etc/pm/sources.list", "a") as f:
        f.write("%s\n" % (tmp_path / "unmounted"))
    result = pm("install", "tool")
    assert "unmounted has no index" in result.err and "its packages are not offered" in result.err
