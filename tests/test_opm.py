"""SPEC §11: OPM over the ODA — package stages on a cluster's server, clients and images.

Every test runs against SQLite and against a real PostgreSQL server (each test in a
schema of its own, made and dropped by the test), so the two backends keep one meaning.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid

import pytest

from conftest import PM, Repository, exists, run_pm

STAGES = ["should_not_be_installed", "should_be_installed", "run-configurator", "install-bin-pkgs",
          "post-image", "post-clients", "post-install"]
OPM_SCRIPTS = ["api-pre-install", "api-post-install", "api-pre-configure", "api-post-configure",
               "api-post-image", "api-post-clients", "api-post-deploy", "api-pre-uninstall",
               "api-post-uninstall"]


# -- the ODA under test: SQLite, or a schema of its own on PostgreSQL ---------------------

def postgres_url():
    return os.environ.get("PM_TEST_POSTGRES_URL")


def postgres_schema_url(base, schema):
    return base + ("&" if "?" in base else "?") + "options=-csearch_path%3D" + schema


class PostgresSchema:
    """A schema of its own in the shared test database, dropped afterwards."""

    def __init__(self, base):
        import psycopg
        self.base = base
        self.schema = "pm_test_" + uuid.uuid4().hex[:12]
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA " + self.schema)
        self.url = postgres_schema_url(base, self.schema)

    def drop(self):
        import psycopg
        with psycopg.connect(self.base, autocommit=True) as conn:
            conn.execute("DROP SCHEMA %s CASCADE" % self.schema)


@pytest.fixture(params=["sqlite", "postgresql"])
def oda_url(request, tmp_path):
    """The URL of an empty ODA of each backend."""
    if request.param == "sqlite":
        yield "sqlite://" + str(tmp_path / "oda.sqlite")
        return
    base = postgres_url()
    if not base:
        pytest.skip("PostgreSQL tests need PM_TEST_POSTGRES_URL (e.g. postgresql://postgres@127.0.0.1:5432/test)")
    pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg")
    schema = PostgresSchema(base)
    try:
        yield schema.url
    finally:
        schema.drop()


def query(url, sql, params=()):
    """Rows of one SQL statement on the ODA, read the way an admin's tool would."""
    if url.startswith("sqlite:"):
        conn = sqlite3.connect(url[len("sqlite://"):], isolation_level=None)
        try:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []
        finally:
            conn.close()
    import psycopg
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql.replace("?", "%s"), params)
        return cursor.fetchall() if cursor.description else []


class Cluster:
    """Nodes with roots of their own, sharing one ODA (given to pm as $PM_ODA) and one
    directory source that every node lists in its etc/pm/sources.list."""

    def __init__(self, tmp_path, url):
        self.tmp, self.url = tmp_path, url
        self.admin = tmp_path / "admin"
        self.admin.mkdir()
        self.repository = Repository(tmp_path / "repo")

    def publish(self, *packages):
        self.repository.add(*packages)

    def pm(self, root, *args, expect=0, env=None):
        result = run_pm(root, *args, env=dict({"PM_ODA": self.url}, **(env or {})))
        if expect is not None:
            assert result.code == expect, result
        return result

    def opm(self, *args, expect=0):
        """An admin's command: it needs no root of a node."""
        return self.pm(self.admin, "opm", *args, expect=expect)

    def node(self, name, role, opm_conf=True):
        """A node's root, registered in the ODA, with its etc/opm.conf."""
        root = self.tmp / name
        (root / "etc").mkdir(parents=True)
        self.repository.use(root)
        if opm_conf:
            (root / "etc/opm.conf").write_text("%s\n%s\n" % (role, name))
        if role == "image":
            self.opm("node", "add", name, "--role", "image", "--image-path", root)
        else:
            self.opm("node", "add", name, "--role", role)
        return root

    def sync(self, root, *args, expect=0):
        return self.pm(root, "opm", "sync", *args, expect=expect)

    def walk(self, root, node, package, stage, progress="test_install", expect=0):
        """Request ``stage``, let the cluster progress reach ``progress``, sync ``root``."""
        self.opm("request", node, package, stage)
        self.opm("progress", progress)
        return self.sync(root, expect=expect)

    def rows(self):
        return {(r["node"], r["package"]): r for r in self.opm("status", "--json").json["rows"]}

    def row(self, node, package):
        return self.rows()[(node, package)]

    def events(self, node=None):
        return self.opm("log", "--json", *(["--node", node] if node else [])).json["events"]


@pytest.fixture
def cluster(tmp_path, oda_url):
    c = Cluster(tmp_path, oda_url)
    c.opm("init")
    return c


# -- the ODA: backends, schema, where it is ---------------------------------------------

def test_init_creates_the_schema_with_its_version_and_a_second_init_changes_nothing(oda_url, tmp_path):
    c = Cluster(tmp_path, oda_url)
    result = c.opm("status", expect=1)
    assert "pm opm init" in result.err
    result = c.opm("init", "--json")
    assert result.json["schema_version"] == 2 and result.json["previous_version"] == 0
    assert query(oda_url, "SELECT value FROM oda_meta WHERE key = 'schema_version'") == [("2",)]
    result = c.opm("init")
    assert "up to date" in result.out
    assert c.opm("progress").out == "cluster progress: none\n"


def test_an_oda_of_a_newer_schema_is_refused_not_changed(cluster):
    query(cluster.url, "UPDATE oda_meta SET value = '99' WHERE key = 'schema_version'")
    assert "schema version 99" in cluster.opm("status", expect=1).err
    assert "knows up to 2" in cluster.opm("init", expect=1).err
    assert query(cluster.url, "SELECT value FROM oda_meta WHERE key = 'schema_version'") == [("99",)]


def test_the_default_oda_is_an_sqlite_file_under_the_root(root):
    result = run_pm(root, "opm", "init", env={"PM_ODA": ""})
    assert result.code == 0, result
    assert (root / "var/lib/pm/oda.sqlite").is_file()
    assert "sqlite://%s/var/lib/pm/oda.sqlite" % root in result.out


def test_the_oda_is_chosen_by_option_then_environment_then_pm_conf(root, tmp_path):
    urls = {k: "sqlite://%s/%s.sqlite" % (tmp_path, k) for k in ("option", "environment", "conf")}
    (root / "etc/pm").mkdir(parents=True)
    (root / "etc/pm/pm.conf").write_text("# site settings\noda = %s\n" % urls["conf"])
    for where in urls:
        assert run_pm(root, "opm", "init", "--oda", urls[where]).code == 0
        assert run_pm(root, "opm", "node", "add", where, "--role", "client", "--oda", urls[where]).code == 0

    def nodes(*args, env=None):
        result = run_pm(root, *args, "opm", "node", "list", "--json", env=env or {"PM_ODA": ""})
        assert result.code == 0, result
        return [n["name"] for n in result.json["nodes"]]

    env = {"PM_ODA": urls["environment"]}
    assert nodes("--oda", urls["option"], env=env) == ["option"]
    assert nodes(env=env) == ["environment"]
    assert nodes() == ["conf"]
    assert not exists(root, "/var/lib/pm/oda.sqlite")


def test_a_postgresql_oda_without_psycopg_is_one_line_naming_it(root, tmp_path):
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "psycopg.py").write_text("raise ImportError('psycopg is not installed here')\n")
    result = run_pm(root, "opm", "status", "--oda", "postgresql://postgres@127.0.0.1:1/none",
                    env={"PYTHONPATH": str(blocked)})
    assert result.code == 1
    assert result.err.strip().splitlines() == ["pm: error: a PostgreSQL ODA needs the Python package "
                                               "'psycopg': pip install psycopg"]


def test_an_unreachable_postgresql_oda_is_one_line_without_the_password(root):
    pytest.importorskip("psycopg")
    result = run_pm(root, "opm", "status", "--oda", "postgresql://someone:s3cret@127.0.0.1:1/none")
    assert result.code == 1
    assert "cannot connect to the ODA" in result.err and "s3cret" not in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_an_oda_url_of_another_kind_is_a_usage_error(root):
    assert run_pm(root, "opm", "status", "--oda", "mysql://x/y").code == 2


# -- nodes, requests, progress, status ---------------------------------------------------

def test_nodes_have_roles_and_images_their_own_root(cluster, tmp_path):
    cluster.node("head", "server")
    cluster.node("n1", "client")
    cluster.node("img", "image")
    nodes = {n["name"]: n for n in cluster.opm("node", "list", "--json").json["nodes"]}
    assert {n: v["role"] for n, v in nodes.items()} == {"head": "server", "n1": "client", "img": "image"}
    assert nodes["img"]["image_path"] == str(tmp_path / "img")
    assert nodes["head"]["image_path"] is None
    assert "needs --image-path" in cluster.opm("node", "add", "img2", "--role", "image", expect=2).err
    assert "images only" in cluster.opm("node", "add", "x", "--role", "client", "--image-path", "/x", expect=2).err
    assert "already in the ODA" in cluster.opm("node", "add", "n1", "--role", "client", expect=1).err
    cluster.opm("node", "add", "n/1", "--role", "client", expect=2)
    cluster.opm("node", "add", "n2", "--role", "router", expect=2)


def test_a_request_records_the_request_it_replaces(cluster):
    cluster.node("n1", "client")
    cluster.opm("request", "n1", "foo", "install-bin-pkgs")
    row = cluster.row("n1", "foo")
    assert (row["requested"], row["current"], row["status"], row["previous"]) == \
        ("install-bin-pkgs", "should_not_be_installed", "ok", None)
    cluster.opm("request", "n1", "foo", "post-install")
    cluster.opm("request", "n1", "foo", "post-install")
    assert cluster.row("n1", "foo")["previous"] == "install-bin-pkgs"
    cluster.opm("request", "n1", "foo", "no-such-stage", expect=2)
    assert "not in the ODA" in cluster.opm("request", "ghost", "foo", "post-install", expect=1).err


def test_status_is_a_table_for_people_and_a_list_of_rows_in_json(cluster):
    cluster.node("n1", "client")
    cluster.node("n2", "client")
    cluster.opm("request", "n2", "bar", "install-bin-pkgs")
    cluster.opm("request", "n1", "foo", "post-install")
    lines = cluster.opm("status").out.splitlines()
    assert lines[0].split() == ["NODE", "PACKAGE", "REQUESTED", "CURRENT", "STATUS", "ERROR"]
    assert [line.split() for line in lines[1:]] == [
        ["n1", "foo", "post-install", "should_not_be_installed", "ok"],
        ["n2", "bar", "install-bin-pkgs", "should_not_be_installed", "ok"]]
    rows = cluster.opm("status", "--json").json["rows"]
    assert isinstance(rows, list)
    assert [{k: r[k] for k in ("node", "package", "requested", "current", "status", "error")} for r in rows] == [
        {"node": "n1", "package": "foo", "requested": "post-install", "current": "should_not_be_installed",
         "status": "ok", "error": None},
        {"node": "n2", "package": "bar", "requested": "install-bin-pkgs", "current": "should_not_be_installed",
         "status": "ok", "error": None}]
    assert [r["node"] for r in cluster.opm("status", "--json", "--node", "n2").json["rows"]] == ["n2"]


def test_removing_a_node_removes_its_rows(cluster):
    cluster.node("n1", "client")
    cluster.node("n2", "client")
    cluster.opm("request", "n1", "foo", "install-bin-pkgs")
    cluster.opm("request", "n2", "foo", "install-bin-pkgs")
    cluster.opm("node", "remove", "n1")
    assert list(cluster.rows()) == [("n2", "foo")]
    assert "not in the ODA" in cluster.opm("node", "remove", "n1", expect=1).err


def test_the_cluster_progress_is_shown_and_set(cluster):
    assert cluster.opm("progress", "build_image").out == "cluster progress: build_image\n"
    assert cluster.opm("progress", "--json").json["progress"] == "build_image"
    cluster.opm("progress", "half-done", expect=2)


# -- sync: which node, and stage gates -----------------------------------------------------

def test_sync_needs_to_know_its_node(cluster, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    assert "--node" in cluster.sync(bare, expect=1).err
    assert "not in the ODA" in cluster.sync(bare, "--node", "ghost", expect=1).err
    (bare / "etc").mkdir()
    (bare / "etc/opm.conf").write_text("node\nbare\n")
    assert "server|client|image" in cluster.sync(bare, expect=3).err


def test_sync_refuses_a_role_other_than_the_odas(cluster):
    root = cluster.node("n1", "client", opm_conf=False)
    (root / "etc/opm.conf").write_text("server\nn1\n")
    assert "the ODA says a client" in cluster.sync(root, expect=1).err


def test_sync_of_another_node_into_this_root_is_refused(cluster):
    server = cluster.node("head", "server")
    cluster.node("n1", "client")
    assert "this root is node head" in cluster.sync(server, "--node", "n1", expect=1).err


def test_a_stage_waits_until_the_cluster_progress_reaches_its_gate(cluster):
    root = cluster.node("n1", "client")
    cluster.opm("request", "n1", "foo", "post-install")
    result = cluster.sync(root, "--json")
    assert "waits for the cluster to reach setup-wizard" in result.err
    assert result.json["rows"][0]["waiting_for"] == "setup-wizard"
    assert cluster.row("n1", "foo")["current"] == "should_not_be_installed"
    # the stages before install-bin-pkgs do nothing on a client, then build_image gates
    cluster.opm("progress", "setup-wizard")
    result = cluster.sync(root, "--json")
    assert result.json["rows"][0]["stages"] == ["should_be_installed", "run-configurator"]
    assert result.json["rows"][0]["waiting_for"] == "build_image"
    assert cluster.row("n1", "foo")["current"] == "run-configurator"
    assert not exists(root, "/var/lib/pm/status")


# -- packages that say when their scripts run ----------------------------------------------

TRACE = "/var/log/opm-trace"
TRACING_SCRIPT = '#!/bin/sh\nmkdir -p var/log\necho "$(basename "$0") $PM_PACKAGE $PM_ACTION" >> "$PM_ROOT%s"\n' % TRACE


def opkg(build, name, version="1.0", scripts=None, **kwargs):
    """An OSCAR-style package: a file of its own and every script, each noting its run
    in the root's trace (``scripts`` replaces some of them)."""
    all_scripts = {s: TRACING_SCRIPT for s in OPM_SCRIPTS}
    all_scripts.update(scripts or {})
    return build(name, version, {"/usr/share/%s/%s" % (name, name): "%s %s" % (name, version)},
                 scripts=all_scripts, **kwargs)


def trace(root):
    """The scripts that ran under ``root`` so far, as (script, package, action)."""
    path = root / TRACE.lstrip("/")
    return [tuple(line.split()) for line in path.read_text().splitlines()] if path.exists() else []


def installed(root, name):
    return exists(root, "/usr/share/%s/%s" % (name, name))


def stages_logged(events, node, package, outcome="ok"):
    return [(e["direction"], e["stage"]) for e in events
            if e["node"] == node and e["package"] == package and e["outcome"] == outcome]


# -- the stage walk of each role ------------------------------------------------------------

def test_a_server_walks_every_stage_as_the_cluster_progresses(cluster, build):
    server = cluster.node("head", "server")
    cluster.publish(opkg(build, "foo"))
    cluster.opm("request", "head", "foo", "post-install")
    cluster.sync(server)
    assert cluster.row("head", "foo")["current"] == "should_not_be_installed"
    walk = [("setup-wizard", "run-configurator", [("api-pre-install", "foo", "install"),
                                                  ("api-post-install", "foo", "install"),
                                                  ("api-pre-configure", "foo", "run-configurator"),
                                                  ("api-post-configure", "foo", "run-configurator")]),
            ("build_image", "install-bin-pkgs", []),
            ("addclients", "post-image", [("api-post-image", "foo", "post-image")]),
            ("post_install", "post-clients", [("api-post-clients", "foo", "post-clients")]),
            ("test_install", "post-install", [("api-post-deploy", "foo", "post-install")])]
    seen = 0
    for step, reached, ran in walk:
        cluster.opm("progress", step)
        cluster.sync(server)
        row = cluster.row("head", "foo")
        assert (row["current"], row["status"], row["error"]) == (reached, "ok", None)
        assert trace(server)[seen:] == ran
        seen += len(ran)
    assert installed(server, "foo")
    assert stages_logged(cluster.events(), "head", "foo") == [("up", s) for s in STAGES[1:]]
    assert cluster.opm("inventory", "--node", "head").out == "head foo (1.0)\n"
    assert cluster.sync(server).out == ""          # nothing left to do


def test_a_client_installs_only_at_install_bin_pkgs_and_runs_no_stage_scripts(cluster, build):
    client = cluster.node("n1", "client")
    cluster.publish(opkg(build, "foo"))
    cluster.opm("request", "n1", "foo", "post-install")
    cluster.opm("progress", "setup-wizard")
    cluster.sync(client)
    assert cluster.row("n1", "foo")["current"] == "run-configurator"
    assert not installed(client, "foo")
    cluster.opm("progress", "test_install")
    cluster.sync(client)
    assert cluster.row("n1", "foo")["current"] == "post-install"
    assert installed(client, "foo")
    assert trace(client) == [("api-pre-install", "foo", "install"), ("api-post-install", "foo", "install")]
    assert cluster.opm("inventory", "--json").json == {"inventory": [
        {"node": "n1", "package": "foo", "version": "1.0", "state": "installed", "reason": "explicit"}],
        "warnings": []}


def test_the_server_gives_its_packages_to_the_clients_at_post_clients(cluster, build):
    server = cluster.node("head", "server")
    clients = [cluster.node(n, "client") for n in ("n1", "n2")]
    cluster.publish(opkg(build, "foo"))
    cluster.opm("request", "head", "foo", "post-install")
    cluster.opm("progress", "addclients")
    cluster.sync(server)
    assert list(cluster.rows()) == [("head", "foo")]
    cluster.opm("progress", "post_install")
    result = cluster.sync(server)
    assert "gave it to 2 clients" in result.out
    for name, root in zip(("n1", "n2"), clients):
        assert cluster.row(name, "foo")["requested"] == "install-bin-pkgs"
        cluster.sync(root)
        assert cluster.row(name, "foo")["current"] == "install-bin-pkgs"
        assert installed(root, "foo")
    # a client that joins later is given what the others have
    cluster.node("n3", "client")
    assert cluster.row("n3", "foo")["requested"] == "install-bin-pkgs"


def test_a_server_sync_installs_into_the_roots_of_its_images(cluster, build, tmp_path):
    server = cluster.node("head", "server")
    image = cluster.node("img", "image")
    elsewhere = tmp_path / "other-img"
    elsewhere.mkdir()
    cluster.opm("node", "add", "head2", "--role", "server")
    cluster.opm("node", "add", "other", "--role", "image", "--image-path", elsewhere, "--server", "head2")
    cluster.publish(opkg(build, "foo"))
    cluster.opm("request", "head", "foo", "install-bin-pkgs")
    cluster.opm("progress", "build_image")
    result = cluster.sync(server, "--json")
    assert [(r["node"], r["current"]) for r in result.json["rows"]] == [("head", "install-bin-pkgs"),
                                                                       ("img", "install-bin-pkgs")]
    assert installed(image, "foo") and installed(server, "foo")
    assert run_pm(image, "list-installed").out == "foo (1.0)\n"
    assert [s for s, _, _ in trace(image)] == ["api-pre-install", "api-post-install"]
    assert not installed(elsewhere, "foo") and ("other", "foo") not in cluster.rows()
    assert cluster.opm("inventory").out == "head foo (1.0)\nimg foo (1.0)\n"


def test_an_image_synced_on_its_own_installs_into_its_image_path(cluster, build):
    server = cluster.node("head", "server")
    image = cluster.node("img", "image")
    cluster.publish(opkg(build, "foo"))
    cluster.opm("request", "img", "foo", "post-install")
    cluster.opm("progress", "test_install")
    cluster.sync(server, "--node", "img")      # from the server's root: the image has its own
    assert cluster.row("img", "foo")["current"] == "post-install"
    assert installed(image, "foo") and not installed(server, "foo")
    assert list(cluster.rows()) == [("img", "foo")]


# -- errors: recorded, skipped, cleared ---------------------------------------------------------

def test_a_failing_stage_is_recorded_then_skipped_until_cleared(cluster, build):
    server = cluster.node("head", "server")
    picky = '#!/bin/sh\n[ -e etc/foo.ready ] || { echo "foo is not ready" >&2; exit 3; }\n'
    cluster.publish(opkg(build, "foo", scripts={"api-pre-configure": picky}), opkg(build, "bar"))
    cluster.opm("request", "head", "foo", "post-install")
    cluster.opm("request", "head", "bar", "post-install")
    cluster.opm("progress", "test_install")
    result = cluster.sync(server, expect=1)
    assert "api-pre-configure of foo failed (exit 3)" in result.err
    foo = cluster.row("head", "foo")
    assert (foo["current"], foo["status"]) == ("should_be_installed", "error")
    assert foo["error"] == "api-pre-configure of foo failed (exit 3)"
    assert cluster.row("head", "bar")["current"] == "post-install"      # the others carry on
    logged = len(cluster.events())
    result = cluster.sync(server, expect=1)
    assert "skipped" in result.err and "pm opm clear head foo" in result.err
    assert len(cluster.events()) == logged and cluster.row("head", "foo")["current"] == "should_be_installed"
    (server / "etc/foo.ready").write_text("")
    assert "error cleared" in cluster.opm("clear", "head", "foo").out
    cluster.sync(server)
    foo = cluster.row("head", "foo")
    assert (foo["current"], foo["status"], foo["error"]) == ("post-install", "ok", None)
    assert "not in error" in cluster.opm("clear", "head", "foo").err
    assert stages_logged(cluster.events(), "head", "foo", "error") == [("up", "run-configurator")]


def test_a_package_the_sources_lack_is_an_error_on_its_row_only(cluster, build):
    client = cluster.node("n1", "client")
    cluster.publish(opkg(build, "foo"))
    cluster.opm("request", "n1", "ghost", "install-bin-pkgs")
    cluster.opm("request", "n1", "foo", "install-bin-pkgs")
    cluster.opm("progress", "build_image")
    cluster.sync(client, expect=1)
    rows = cluster.rows()
    assert rows[("n1", "ghost")]["status"] == "error" and "ghost" in rows[("n1", "ghost")]["error"]
    assert rows[("n1", "foo")]["current"] == "install-bin-pkgs"


def test_an_error_can_be_backed_out_by_lowering_the_request_and_clearing(cluster, build):
    client = cluster.node("n1", "client")
    broken = '#!/bin/sh\nexit 1\n'
    cluster.publish(opkg(build, "foo", scripts={"api-pre-install": broken}))
    cluster.walk(client, "n1", "foo", "install-bin-pkgs", "build_image", expect=1)
    cluster.opm("request", "n1", "foo", "should_not_be_installed")
    cluster.opm("clear", "n1", "foo")
    cluster.sync(client)
    row = cluster.row("n1", "foo")
    assert (row["requested"], row["current"], row["status"], row["previous"]) == \
        ("should_not_be_installed", "should_not_be_installed", "ok", "install-bin-pkgs")
    assert not installed(client, "foo")


# -- the way down: a lower request uninstalls ---------------------------------------------------

def test_lowering_the_servers_request_uninstalls_everywhere_with_the_uninstall_scripts(cluster, build):
    server = cluster.node("head", "server")
    client = cluster.node("n1", "client")
    image = cluster.node("img", "image")
    cluster.publish(opkg(build, "foo"))
    cluster.walk(server, "head", "foo", "post-install")
    cluster.sync(client)
    assert installed(server, "foo") and installed(client, "foo") and installed(image, "foo")
    cluster.opm("request", "head", "foo", "should_not_be_installed")
    cluster.sync(server)
    assert not installed(server, "foo") and not installed(image, "foo")
    assert trace(server)[-2:] == [("api-pre-uninstall", "foo", "uninstall"),
                                  ("api-post-uninstall", "foo", "uninstall")]
    assert trace(image)[-1] == ("api-post-uninstall", "foo", "uninstall")
    assert run_pm(server, "list-installed").out == ""
    assert cluster.row("n1", "foo")["requested"] == "should_not_be_installed"
    cluster.sync(client)
    assert not installed(client, "foo")
    assert {k: r["current"] for k, r in cluster.rows().items()} == {
        ("head", "foo"): "should_not_be_installed", ("img", "foo"): "should_not_be_installed",
        ("n1", "foo"): "should_not_be_installed"}
    assert cluster.opm("inventory").out == ""
    assert stages_logged(cluster.events(), "head", "foo")[-1] == ("down", "should_not_be_installed")


def test_lowering_to_a_stage_that_keeps_the_package_reruns_the_later_stages_on_the_way_up(cluster, build):
    server = cluster.node("head", "server")
    cluster.publish(opkg(build, "foo"))
    cluster.walk(server, "head", "foo", "post-install")
    before = len(trace(server))
    cluster.opm("request", "head", "foo", "run-configurator")
    cluster.sync(server)
    assert installed(server, "foo") and len(trace(server)) == before
    assert cluster.row("head", "foo")["current"] == "run-configurator"
    cluster.opm("request", "head", "foo", "post-install")
    cluster.sync(server)
    assert [s for s, _, _ in trace(server)[before:]] == ["api-post-image", "api-post-clients", "api-post-deploy"]


def test_a_client_lowered_below_install_bin_pkgs_uninstalls(cluster, build):
    client = cluster.node("n1", "client")
    cluster.publish(opkg(build, "foo"))
    cluster.walk(client, "n1", "foo", "post-image", "addclients")
    assert installed(client, "foo")
    cluster.opm("request", "n1", "foo", "install-bin-pkgs")
    cluster.sync(client)
    assert installed(client, "foo")
    cluster.opm("request", "n1", "foo", "run-configurator")
    cluster.sync(client)
    assert not installed(client, "foo")
    assert cluster.row("n1", "foo")["current"] == "run-configurator"


# -- two syncs of one node, and syncs that die --------------------------------------------------

WAITING_SCRIPT = """#!/bin/sh
touch "$PM_ROOT/configuring"
i=0
while [ ! -e "$PM_ROOT/go" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
mkdir -p var/log
echo "$(basename "$0") $PM_PACKAGE $PM_ACTION" >> "$PM_ROOT%s"
""" % TRACE


def start_pm(cluster, root, *args):
    return subprocess.Popen([sys.executable, str(PM), "--root", str(root)] + [str(a) for a in args],
                            env=dict(os.environ, PM_ODA=cluster.url), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def start_sync(cluster, root, *args):
    return start_pm(cluster, root, "opm", "sync", *args)


def all_at_once(cluster, commands, at_most=None):
    """Run ``(root, args)`` commands as separate processes, up to ``at_most`` at a time
    (all by default); each must succeed."""
    commands = list(commands)
    at_most = at_most or len(commands)
    for start in range(0, len(commands), at_most):
        procs = [start_pm(cluster, root, *args) for root, args in commands[start:start + at_most]]
        try:
            for proc in procs:
                assert proc.wait(600) == 0, proc.stderr.read()
        finally:
            kill_all(procs)


def wait_for(path, timeout=60):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, "%s never appeared" % path
        time.sleep(0.05)


def kill_all(procs):
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def sync_stopped_in_a_script(cluster, build, script):
    """A server whose sync of foo is inside ``script`` (waiting for ``go``): (root, process)."""
    server = cluster.node("head", "server")
    cluster.publish(opkg(build, "foo", scripts={script: WAITING_SCRIPT}))
    cluster.opm("request", "head", "foo", "post-install")
    cluster.opm("progress", "test_install")
    proc = start_sync(cluster, server)
    wait_for(server / "configuring")
    return server, proc


def test_two_syncs_of_one_node_never_run_at_once(cluster, build):
    server, first = sync_stopped_in_a_script(cluster, build, "api-pre-configure")
    procs = [first]
    try:
        result = cluster.sync(server, expect=4)
        assert "node head is being synced by pid %d" % first.pid in result.err
        procs.append(start_sync(cluster, server, "--wait", "120"))
        time.sleep(0.5)
        assert procs[1].poll() is None                 # it waits for the first
        (server / "go").write_text("")
        for proc in procs:
            assert proc.wait(120) == 0, proc.stderr.read()
    finally:
        kill_all(procs)
    assert [s for s, _, _ in trace(server)].count("api-pre-configure") == 1
    assert stages_logged(cluster.events(), "head", "foo") == [("up", s) for s in STAGES[1:]]


def test_a_killed_sync_leaves_no_lock_and_the_next_sync_redoes_the_stage_it_cut_short(cluster, build):
    server, first = sync_stopped_in_a_script(cluster, build, "api-post-configure")
    kill_all([first])
    assert cluster.row("head", "foo")["current"] == "should_be_installed"
    (server / "go").write_text("")
    cluster.sync(server)
    assert cluster.row("head", "foo")["current"] == "post-install"
    ran = [s for s, _, _ in trace(server)]
    assert ran.count("api-pre-configure") == 2 and ran.count("api-pre-install") == 1


def test_a_root_another_pm_command_holds_is_left_for_the_next_sync_not_marked_in_error(cluster, build):
    client = cluster.node("n1", "client")
    cluster.publish(opkg(build, "foo"))
    slow = build("slow", "1.0", {"/slow": "x"}, scripts={"api-pre-install": WAITING_SCRIPT})
    install = subprocess.Popen([sys.executable, str(PM), "--root", str(client), "install", str(slow)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(client / "configuring")
        result = cluster.walk(client, "n1", "foo", "install-bin-pkgs", "build_image", expect=4)
        assert "left for the next sync" in result.err and "is locked by pid %d" % install.pid in result.err
        row = cluster.row("n1", "foo")
        assert (row["current"], row["status"]) == ("run-configurator", "ok")
        (client / "go").write_text("")
        assert install.wait(120) == 0, install.stderr.read()
    finally:
        kill_all([install])
    cluster.sync(client)
    assert cluster.row("n1", "foo")["current"] == "install-bin-pkgs" and installed(client, "foo")


# -- many nodes at once ---------------------------------------------------------------------

def sync_many_at_once(cluster, build, clients):
    """A server and ``clients`` clients sync all at once, and one client twice: clients
    install two packages the admin asked for while the server gives them a third."""
    server = cluster.node("head", "server")
    roots = {"n%02d" % i: cluster.tmp / ("n%02d" % i) for i in range(clients)}
    for name, root in roots.items():
        (root / "etc").mkdir(parents=True)
        (root / "etc/opm.conf").write_text("client\n%s\n" % name)
        cluster.repository.use(root)
    cluster.publish(opkg(build, "foo"), opkg(build, "bar"), opkg(build, "extra"))
    admin = cluster.admin
    all_at_once(cluster, [(admin, ["opm", "node", "add", name, "--role", "client"]) for name in roots], 8)
    all_at_once(cluster, [(admin, ["opm", "request", name, package, "install-bin-pkgs"])
                          for name in roots for package in ("foo", "bar")], 8)
    cluster.opm("request", "head", "extra", "post-clients")
    cluster.opm("progress", "post_install")
    syncs = [(root, ["opm", "sync", "--wait", "600"]) for root in [server] + list(roots.values())]
    all_at_once(cluster, syncs + [(roots["n00"], ["opm", "sync", "--wait", "600"])])
    rows = cluster.rows()
    assert len(rows) == 1 + 3 * clients            # no request and no assignment lost
    assert all(r["status"] == "ok" for r in rows.values())
    for name in roots:
        assert rows[(name, "foo")]["current"] == rows[(name, "bar")]["current"] == "install-bin-pkgs"
        assert rows[(name, "extra")]["requested"] == "install-bin-pkgs"
    all_at_once(cluster, syncs[1:])                # the clients that synced before the server gave them extra
    assert {r["current"] for r in cluster.rows().values()} == {"install-bin-pkgs", "post-clients"}
    events = cluster.events()
    assert not [e for e in events if e["outcome"] != "ok"]
    inventory = cluster.opm("inventory", "--json").json["inventory"]
    for name, root in roots.items():
        for package in ("foo", "bar", "extra"):
            assert stages_logged(events, name, package).count(("up", "install-bin-pkgs")) == 1
            assert installed(root, package)
        ran = [(s, p) for s, p, _ in trace(root)]
        assert sorted(ran) == sorted((s, p) for s in ("api-pre-install", "api-post-install")
                                     for p in ("foo", "bar", "extra"))   # nothing installed twice
        assert [(r["package"], r["version"]) for r in inventory if r["node"] == name] == \
            [("bar", "1.0"), ("extra", "1.0"), ("foo", "1.0")]


def test_several_nodes_sync_at_once_on_sqlite_with_nothing_lost(tmp_path, build):
    cluster = Cluster(tmp_path, "sqlite://" + str(tmp_path / "oda.sqlite"))
    cluster.opm("init")
    sync_many_at_once(cluster, build, clients=5)


@pytest.mark.slow
def test_dozens_of_nodes_sync_at_once_on_postgresql_with_nothing_lost(tmp_path, build):
    base = postgres_url()
    if not base:
        pytest.skip("PostgreSQL tests need PM_TEST_POSTGRES_URL (e.g. postgresql://postgres@127.0.0.1:5432/test)")
    schema = PostgresSchema(base)
    try:
        cluster = Cluster(tmp_path, schema.url)
        cluster.opm("init")
        sync_many_at_once(cluster, build, clients=30)
    finally:
        schema.drop()


# -- a fleet: a no-op sync is one read, server work is set-based, views stream -------------

def load_pm():
    """pm.py as a module of this process (to count the statements it sends)."""
    import importlib.util
    if "pm" in sys.modules:
        return sys.modules["pm"]
    spec = importlib.util.spec_from_file_location("pm", str(PM))
    module = importlib.util.module_from_spec(spec)
    sys.modules["pm"] = module
    spec.loader.exec_module(module)
    return module


class CountingConnection:
    """A DB-API connection that records every statement sent through it."""

    def __init__(self, conn, log):
        self._conn, self._log = conn, log

    def execute(self, sql, params=()):
        self._log.append((sql, tuple(params)))
        return self._conn.execute(sql, params)

    def close(self):
        if hasattr(self._conn, "total_changes"):
            self._log.append(("-- total_changes", (self._conn.total_changes,)))
        return self._conn.close()

    def __getattr__(self, name):
        return getattr(self._conn, name)


def pm_in_process(monkeypatch, url, root, *args):
    """Run pm in this process on ``url``: (exit code, stdout, the statements it sent)."""
    import contextlib
    import io
    pm = load_pm()
    log = []
    original = pm.Oda.__init__

    def counting_init(self, *a, **kw):
        original(self, *a, **kw)
        self.conn = CountingConnection(self.conn, log)
    monkeypatch.setattr(pm.Oda, "__init__", counting_init)
    monkeypatch.setenv("PM_ODA", url)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = pm.main(["--root", str(root)] + list(args))
    monkeypatch.setattr(pm.Oda, "__init__", original)
    assert code is not None
    return code, out.getvalue() + err.getvalue(), log


def statements_sent(log):
    return [sql for sql, _ in log if not sql.startswith("--")]


def sqlite_changes(log):
    return sum(params[0] for sql, params in log if sql == "-- total_changes")


def row_versions(url, node):
    """Something that changes whenever a row of the node is written (PostgreSQL: xmin)."""
    if url.startswith("sqlite:"):
        return None
    return (query(url, "SELECT xmin::text, synced FROM nodes WHERE name = ?", (node,)),
            query(url, "SELECT package, xmin::text FROM package_status WHERE node = ? ORDER BY package", (node,)),
            query(url, "SELECT package, xmin::text FROM inventory WHERE node = ? ORDER BY package", (node,)))


def test_a_no_op_sync_sends_at_most_four_statements_all_reads_and_writes_no_row(cluster, build, monkeypatch):
    client = cluster.node("n1", "client")
    cluster.publish(opkg(build, "foo"), opkg(build, "bar"))
    cluster.opm("request", "n1", "foo", "install-bin-pkgs")
    cluster.opm("request", "n1", "bar", "install-bin-pkgs")
    cluster.opm("progress", "build_image")
    cluster.sync(client)
    cluster.sync(client)                 # the inventory digest is on the node row now
    before = row_versions(cluster.url, "n1")
    events = len(cluster.events())
    code, output, log = pm_in_process(monkeypatch, cluster.url, client, "opm", "sync")
    assert code == 0, output
    sent = statements_sent(log)
    assert len(sent) <= 4, sent
    assert all(sql.lstrip().upper().startswith("SELECT") for sql in sent), sent   # no BEGIN, no write
    assert sqlite_changes(log) == 0
    assert row_versions(cluster.url, "n1") == before
    assert len(cluster.events()) == events
    assert [r["current"] for r in cluster.opm("status", "--json", "--node", "n1").json["rows"]] == ["install-bin-pkgs"] * 2


def test_the_inventory_is_written_only_when_it_changed(cluster, build, monkeypatch):
    client = cluster.node("n1", "client")
    cluster.publish(opkg(build, "foo"))
    cluster.walk(client, "n1", "foo", "install-bin-pkgs", "build_image")
    extra = build("local", "2.0", {"/local": "x"})
    cluster.pm(client, "install", str(extra))           # installed by hand, outside OPM
    code, output, log = pm_in_process(monkeypatch, cluster.url, client, "opm", "sync")
    assert code == 0, output
    assert any(sql.startswith("INSERT INTO inventory") for sql in statements_sent(log))
    inventory = cluster.opm("inventory", "--json").json["inventory"]
    assert [(r["node"], r["package"], r["version"]) for r in inventory] == [("n1", "foo", "1.0"), ("n1", "local", "2.0")]
    code, output, log = pm_in_process(monkeypatch, cluster.url, client, "opm", "sync")
    assert not [sql for sql in statements_sent(log) if "inventory" in sql and not sql.startswith("SELECT")]


def test_two_syncs_of_one_node_that_both_find_its_inventory_changed_write_it_once(cluster):
    """The second writer waits for the first's commit and finds the inventory already
    written (it used to delete the old rows beside the first and meet its new ones)."""
    import threading
    pm = load_pm()
    cluster.node("n1", "client")
    packages = {"foo": {"version": "1.0", "state": "installed"}, "bar": {"version": "2.0", "state": "installed"}}
    first, second = pm.Oda(cluster.url, deadline=30), pm.Oda(cluster.url, deadline=30)
    deleted, go_on = threading.Event(), threading.Event()
    original = first.execute

    def execute_pausing_after_the_delete(sql, params=()):
        rows = original(sql, params)
        if sql.startswith("DELETE FROM inventory"):
            deleted.set()
            assert go_on.wait(30)
        return rows
    first.execute = execute_pausing_after_the_delete
    results = {}

    def write(key, oda):
        try:
            results[key] = oda.write_inventory("n1", packages)
        except Exception as e:        # reported by the assertion below
            results[key] = e
    threads = [threading.Thread(target=write, args=("first", first))]
    threads[0].start()
    assert deleted.wait(30)
    threads.append(threading.Thread(target=write, args=("second", second)))
    threads[1].start()
    threads[1].join(1.0)              # the second is waiting for the first (or done, wrongly)
    go_on.set()
    for thread in threads:
        thread.join(60)
    first.close()
    second.close()
    assert results == {"first": True, "second": False}
    assert query(cluster.url, "SELECT package, version FROM inventory WHERE node = ? ORDER BY package",
                 ("n1",)) == [("bar", "2.0"), ("foo", "1.0")]


def test_a_sync_that_does_a_stage_still_takes_the_nodes_lock_and_commits_each_stage(cluster, build, monkeypatch):
    client = cluster.node("n1", "client")
    cluster.publish(build("foo", "1.0", {"/usr/share/foo/foo": "foo"}))
    cluster.opm("request", "n1", "foo", "install-bin-pkgs")
    cluster.opm("progress", "build_image")
    code, output, log = pm_in_process(monkeypatch, cluster.url, client, "opm", "sync")
    assert code == 0, output
    sent = statements_sent(log)
    if cluster.url.startswith("sqlite:"):
        assert any("INSERT INTO sync_locks" in sql for sql in sent)
        assert not any(sql.startswith("DELETE FROM sync_locks") for sql in sent)   # released in place
        assert query(cluster.url, "SELECT pid FROM sync_locks WHERE node = 'n1'") == [(0,)]
    else:
        assert sum("advisory_xact_lock" in sql for sql in sent) == 3                 # one per stage
        assert not any("pg_advisory_lock" in sql or "pg_try_advisory_lock" in sql for sql in sent)
        assert not any("sync_locks" in sql for sql in sent)
    assert sent.count("COMMIT") >= 3
    assert cluster.row("n1", "foo")["current"] == "install-bin-pkgs"


def test_the_server_gives_a_package_to_every_client_in_one_statement(cluster, build, monkeypatch):
    server = cluster.node("head", "server")
    for i in range(6):
        cluster.opm("node", "add", "c%d" % i, "--role", "client")
    cluster.publish(build("extra", "1.0", {"/usr/share/extra/extra": "x"}))
    cluster.opm("request", "head", "extra", "post-clients")
    cluster.opm("progress", "post_install")
    code, output, log = pm_in_process(monkeypatch, cluster.url, server, "opm", "sync")
    assert code == 0, output
    assignments = [sql for sql in statements_sent(log) if sql.startswith("INSERT INTO package_status")]
    assert len(assignments) == 1 and "gave it to 6 clients" in output
    rows = cluster.rows()
    assert all(rows[("c%d" % i, "extra")]["requested"] == "install-bin-pkgs" for i in range(6))


def test_inventory_of_every_node_is_one_query(cluster, build, monkeypatch):
    roots = [cluster.node("n%d" % i, "client") for i in range(3)]
    cluster.publish(opkg(build, "foo"))
    for i, root in enumerate(roots):
        cluster.walk(root, "n%d" % i, "foo", "install-bin-pkgs", "build_image")
    code, output, log = pm_in_process(monkeypatch, cluster.url, cluster.admin, "opm", "inventory")
    assert code == 0
    assert output.splitlines() == ["n%d foo (1.0)" % i for i in range(3)]
    assert len([sql for sql in statements_sent(log) if "inventory" in sql]) <= 1   # PostgreSQL: a named cursor


def test_removing_a_node_removes_its_rows_inventory_and_events(cluster, build):
    client = cluster.node("n1", "client")
    cluster.publish(opkg(build, "foo"))
    cluster.walk(client, "n1", "foo", "install-bin-pkgs", "build_image")
    assert cluster.events("n1") and cluster.opm("inventory", "--json").json["inventory"]
    cluster.opm("node", "remove", "n1")
    for table in ("package_status", "inventory", "events", "sync_locks"):
        assert query(cluster.url, "SELECT count(*) FROM %s WHERE node = 'n1'" % table) == [(0,)], table


def test_log_prune_before_deletes_older_events_only(cluster, build):
    client = cluster.node("n1", "client")
    cluster.publish(opkg(build, "foo"))
    cluster.walk(client, "n1", "foo", "install-bin-pkgs", "build_image")
    count = len(cluster.events())
    query(cluster.url, "UPDATE events SET time = ? WHERE id IN (SELECT min(id) FROM events)",
          (time.mktime((2020, 1, 1, 0, 0, 0, 0, 0, -1)),))
    result = cluster.opm("log", "--prune-before", "2021-06-01", "--json")
    assert result.json["pruned"] == 1
    assert len(cluster.events()) == count - 1
    assert cluster.opm("log", "--prune-before", "yesterday", expect=2).code == 2


def test_log_retention_days_in_pm_conf_prunes_a_nodes_old_events_when_it_syncs(cluster, build):
    client = cluster.node("n1", "client")
    cluster.publish(opkg(build, "foo"))
    cluster.walk(client, "n1", "foo", "run-configurator", "build_image")
    query(cluster.url, "UPDATE events SET time = time - 40 * 86400")
    (client / "etc/pm").mkdir(parents=True, exist_ok=True)
    with open(client / "etc/pm/pm.conf", "a") as f:
        f.write("log_retention_days = 30\n")
    cluster.walk(client, "n1", "foo", "install-bin-pkgs", "build_image")
    assert stages_logged(cluster.events(), "n1", "foo") == [("up", "install-bin-pkgs")]
    (client / "etc/pm/pm.conf").write_text("log_retention_days = soon\n")
    assert "log_retention_days" in cluster.sync(client, expect=3).err


def test_an_oda_of_schema_version_1_is_upgraded_in_place_and_keeps_its_rows(tmp_path):
    path = tmp_path / "oda.sqlite"
    pm = load_pm()
    conn = sqlite3.connect(str(path), isolation_level=None)
    for statement in pm.ODA_MIGRATIONS[0]:
        conn.execute(statement.replace("{serial}", "INTEGER PRIMARY KEY AUTOINCREMENT"))
    conn.execute("INSERT INTO oda_meta VALUES ('schema_version', '1')")
    conn.execute("INSERT INTO nodes (name, role, added) VALUES ('n1', 'client', 0)")
    conn.execute("INSERT INTO package_status (node, package, requested, current, updated)"
                 " VALUES ('n1', 'foo', 'install-bin-pkgs', 'should_not_be_installed', 0)")
    conn.close()
    c = Cluster(tmp_path, "sqlite://" + str(path))
    assert [r["package"] for r in c.opm("status", "--json").json["rows"]] == ["foo"]
    assert query(c.url, "SELECT value FROM oda_meta WHERE key = 'schema_version'") == [("2",)]
    assert query(c.url, "SELECT inventory_digest FROM nodes") == [(None,)]
    assert "up to date" in c.opm("init").out


def test_a_sync_against_an_oda_that_refuses_connections_retries_until_its_deadline(root):
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/opm.conf").write_text("client\nn1\n")
    started = time.monotonic()
    result = run_pm(root, "opm", "sync", "--deadline", "1.5", "--oda", "postgresql://postgres@127.0.0.1:1/none")
    assert result.code == 1 and "cannot connect" in result.err and "Traceback" not in result.err
    assert time.monotonic() - started >= 1.0               # it retried, not gave up at once
    assert run_pm(root, "opm", "sync", "--splay", "-1", "--oda", "sqlite:///nowhere").code == 2


# -- a generated fleet: summary, query plans, the fleet page, bounded memory -----------------

def generate_fleet(url, nodes, packages, errors=3):
    """An ODA of ``nodes`` clients (n00000...) and a server, each client with ``packages``
    rows (most at their request, some on their way, ``errors`` in error), an inventory
    and two events per client."""
    names = ["n%05d" % i for i in range(nodes)]
    stages = ["install-bin-pkgs", "install-bin-pkgs", "install-bin-pkgs", "run-configurator"]
    node_rows = [(n, "client", 0.0) for n in names] + [("head", "server", 0.0)]
    status_rows, inventory_rows, event_rows = [], [], []
    for i, n in enumerate(names):
        for p in range(packages):
            bad = i * packages + p < errors
            status_rows.append((n, "pkg%02d" % p, "install-bin-pkgs", stages[(i + p) % 4], "error" if bad else "ok",
                                "api-post-install exited with 1 on %s" % n if bad else None, 0.0))
            inventory_rows.append((n, "pkg%02d" % p, "1.0", "installed"))
        event_rows += [(0.0, n, "pkg00", "install-bin-pkgs", "up", "ok"), (1.0, n, "pkg01", "post-image", "up", "ok")]
    statements = [("INSERT INTO nodes (name, role, added) VALUES (?, ?, ?)", node_rows),
                  ("INSERT INTO package_status (node, package, requested, current, status, error, updated)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?)", status_rows),
                  ("INSERT INTO inventory (node, package, version, state) VALUES (?, ?, ?, ?)", inventory_rows),
                  ("INSERT INTO events (time, node, package, stage, direction, outcome) VALUES (?, ?, ?, ?, ?, ?)",
                   event_rows)]
    if url.startswith("sqlite:"):
        conn = sqlite3.connect(url[len("sqlite://"):])
        with conn:
            for sql, rows in statements:
                conn.executemany(sql, rows)
            conn.execute("ANALYZE")
        conn.close()
        return
    import psycopg
    with psycopg.connect(url, autocommit=True) as conn:
        for sql, rows in statements:
            table, columns = sql.split(" (", 1)[0][len("INSERT INTO "):], sql.split("(", 1)[1].split(")")[0]
            with conn.cursor().copy("COPY %s (%s) FROM STDIN" % (table, columns)) as copy:
                for row in rows:
                    copy.write_row(row)
        conn.execute("VACUUM ANALYZE")


@pytest.fixture
def fleet(tmp_path, oda_url):
    c = Cluster(tmp_path, oda_url)
    c.opm("init")
    generate_fleet(oda_url, 10_000, 3)
    return c


def explain(url, sql, params):
    if url.startswith("sqlite:"):
        return "\n".join(str(r[-1]) for r in query(url, "EXPLAIN QUERY PLAN " + sql, params))
    return "\n".join(r[0] for r in query(url, "EXPLAIN " + sql, params))


def full_scans(url, plan):
    """The lines of a plan that read one of the fleet's tables whole (cluster_progress
    and oda_meta hold a row or two)."""
    import re
    if url.startswith("sqlite:"):
        return [line for line in plan.splitlines() if line.startswith("SCAN ") and "USING" not in line
                and not re.match(r"SCAN (p|cluster_progress|oda_meta|CONSTANT ROW)$", line.strip())]
    return [line for line in plan.splitlines()
            if re.search(r"Seq Scan on (package_status|inventory|events|nodes)\b", line)]


def test_the_hot_queries_of_a_10000_node_oda_use_indexes(fleet, monkeypatch, tmp_path):
    """The statements pm itself sends for a node's sync, a stage, the server's
    assignment (to images; to every client is a whole-table statement by nature), the
    packages servers have given out, one node's status, inventory and log - each
    EXPLAINed on the generated fleet: no big table is read whole."""
    url = fleet.url
    root = tmp_path / "n04242"
    (root / "etc").mkdir(parents=True)
    (root / "etc/opm.conf").write_text("client\nn04242\n")
    fleet.opm("progress", "none")
    captured = []
    for args in [("opm", "sync"), ("opm", "status", "--node", "n04242"), ("opm", "inventory", "--node", "n04242"),
                 ("opm", "log", "--node", "n04242")]:
        code, output, log = pm_in_process(monkeypatch, url, root, *args)
        assert code == 0, output
        captured += log
    pm = load_pm()
    oda = pm.Oda(url)
    oda.conn = CountingConnection(oda.conn, captured)
    oda.stage_view("n04242", "pkg00")
    oda.images_of("head")
    with oda.writing():
        oda.assign_all(pm.Oda.IMAGES, ("head",), "pkg00", "install-bin-pkgs")
    oda.reach("n04242", "pkg00", "install-bin-pkgs", "up", "")
    oda.assigned_packages()
    oda.close()
    checked = 0
    for sql, params in captured:
        if sql.startswith(("--", "BEGIN", "COMMIT", "ROLLBACK", "PRAGMA")) or "current_schema" in sql:
            continue
        if "pg_locks" in sql or "advisory" in sql:
            continue
        if sql.startswith("SELECT value FROM oda_meta"):
            continue                       # a table of a few rows
        plan = explain(url, sql.replace("%s", "?"), params)
        assert not full_scans(url, plan), (sql, plan)
        checked += 1
    assert checked >= 8


def test_status_summary_counts_per_package_and_stage_with_errors_first(fleet, monkeypatch):
    code, output, log = pm_in_process(monkeypatch, fleet.url, fleet.admin, "opm", "status", "--summary", "--json")
    assert code == 0
    summary = json.loads(output[:output.rindex("]") + 1])
    assert summary[0]["status"] == "error" and sum(r["nodes"] for r in summary if r["status"] == "error") == 3
    assert sum(r["nodes"] for r in summary) == 30_000
    foo = {(r["stage"], r["status"]): r for r in summary if r["package"] == "pkg00"}
    assert foo[("install-bin-pkgs", "ok")]["done"] == foo[("install-bin-pkgs", "ok")]["nodes"]
    assert foo[("run-configurator", "ok")]["done"] == 0
    assert len([sql for sql in statements_sent(log) if "package_status" in sql]) == 1
    text = fleet.opm("status", "--summary").out.splitlines()
    assert text[0].split() == ["STATUS", "PACKAGE", "STAGE", "NODES", "AT-REQUEST"] and text[1].startswith("error")


def test_status_text_streams_as_an_aligned_table(cluster):
    cluster.opm("node", "add", "a-long-node-name", "--role", "client")
    cluster.opm("node", "add", "n", "--role", "client")
    cluster.opm("request", "a-long-node-name", "foo", "install-bin-pkgs")
    cluster.opm("request", "n", "barbazquux", "should_be_installed")
    lines = cluster.opm("status").out.splitlines()
    assert lines[0].split() == ["NODE", "PACKAGE", "REQUESTED", "CURRENT", "STATUS", "ERROR"]
    assert len({line.index(line.split()[1], len(line.split()[0])) for line in lines}) == 1   # one column start


def chromium():
    import shutil
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("the fleet page test needs chromium (Debian package chromium)")
    return path


def run_chromium(tmp_path, *args):
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--no-first-run", "--user-data-dir=%s" % profile] + list(args),
                          capture_output=True, text=True, timeout=180)


def png_size(path):
    import struct
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def check_fleet_page(cluster, tmp_path, nodes, packages):
    page = tmp_path / "fleet.html"
    result = cluster.opm("status", "--html", str(page), "--json")
    assert result.json["packages"] == packages
    text = page.read_text()
    assert "<script src" not in text and "<link" not in text and "url(" not in text and "@import" not in text
    dom = run_chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr
    assert dom.stdout.count('class="pkg"') == packages
    assert dom.stdout.count('<tr class="error"') == 3
    assert "api-post-install exited with 1 on n00000" in dom.stdout
    filtered = run_chromium(tmp_path, "--dump-dom", page.as_uri() + "#node=n00002&stage=run-configurator")
    rows = [line for line in filtered.stdout.splitlines() if line.startswith("<tr class=")]
    visible = [line for line in rows if "hidden" not in line]
    assert visible and all('data-node="n00002"' in line and 'data-stage="run-configurator"' in line for line in visible)
    shot = tmp_path / ("fleet-%d.png" % nodes)
    result = run_chromium(tmp_path, "--screenshot=%s" % shot, "--window-size=1200,900", page.as_uri())
    assert result.returncode == 0 and shot.exists(), result.stderr
    assert png_size(shot) == (1200, 900) and shot.stat().st_size > 10_000     # drawn, not blank
    return shot


def test_the_fleet_page_of_10_nodes_shows_stage_bars_errors_and_filters_in_chromium(tmp_path, oda_url):
    c = Cluster(tmp_path, oda_url)
    c.opm("init")
    generate_fleet(oda_url, 10, 2)
    check_fleet_page(c, tmp_path, 10, 2)


@pytest.mark.slow
def test_the_fleet_page_of_10000_nodes_renders_in_chromium(fleet, tmp_path):
    check_fleet_page(fleet, tmp_path, 10_000, 3)


@pytest.mark.slow
def test_status_json_of_10000_nodes_by_50_packages_stays_under_64_mib(tmp_path):
    url = "sqlite://" + str(tmp_path / "oda.sqlite")
    c = Cluster(tmp_path, url)
    c.opm("init")
    generate_fleet(url, 10_000, 50)
    out = tmp_path / "status.json"
    probe = ("import resource, subprocess, sys\n"
             "with open(sys.argv[1], 'wb') as f:\n"
             "    code = subprocess.run(sys.argv[2:], stdout=f).returncode\n"
             "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    result = subprocess.run([sys.executable, "-c", probe, str(out), sys.executable, str(PM), "--root", str(c.admin),
                             "--oda", url, "opm", "status", "--json"], capture_output=True, text=True, timeout=600)
    code, peak_kib = map(int, result.stdout.split())
    assert code == 0, result.stderr
    with open(out) as f:
        assert len(json.load(f)["rows"]) == 500_000
    assert peak_kib < 64 * 1024, "peak RSS %d KiB" % peak_kib


# -- behind PgBouncer in transaction mode -------------------------------------------------

def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgBouncer:
    """A real pgbouncer in pool_mode = transaction on 127.0.0.1, in front of the test
    PostgreSQL, its database ``oda`` bound to one schema (connect_query sets the
    search_path on each server connection it opens)."""

    def __init__(self, directory, base, schema, max_client_conn=200, pool_size=4):
        import shutil
        from urllib.parse import urlparse
        binary = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None)
        if not binary:
            pytest.skip("PgBouncer tests need pgbouncer (Debian package pgbouncer)")
        server = urlparse(base)
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        users = directory / "users.txt"
        users.write_text('"%s" ""\n' % (server.username or "postgres"))
        config = directory / "pgbouncer.ini"
        config.write_text(
            "[databases]\noda = host=%s port=%d dbname=%s user=%s connect_query='SET search_path = %s'\n"
            "[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = %d\nunix_socket_dir =\nauth_type = trust\n"
            "auth_file = %s\npool_mode = transaction\nmax_client_conn = %d\ndefault_pool_size = %d\n"
            "ignore_startup_parameters = extra_float_digits\nserver_reset_query =\nlogfile =\npidfile =\n"
            % (server.hostname, server.port or 5432, server.path.lstrip("/"), server.username or "postgres",
               schema, self.port, users, max_client_conn, pool_size))
        command = [binary, str(config)]
        if os.geteuid() == 0:                 # pgbouncer will not run as root
            command = [binary, "-u", "postgres", str(config)]
        self.log = open(directory / "pgbouncer.log", "w")
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = "postgresql://%s@127.0.0.1:%d/oda" % (server.username or "postgres", self.port)
        deadline = time.monotonic() + 20
        import psycopg
        while True:
            try:
                psycopg.connect(self.url, autocommit=True, prepare_threshold=None).close()
                return
            except psycopg.Error:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.skip("pgbouncer did not start: %s" % (directory / "pgbouncer.log").read_text()[-300:])
                time.sleep(0.1)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def pgbouncer_schema(tmp_path):
    base = postgres_url()
    if not base:
        pytest.skip("PgBouncer tests need PM_TEST_POSTGRES_URL (e.g. postgresql://postgres@127.0.0.1:5432/test)")
    pytest.importorskip("psycopg", reason="PgBouncer tests need psycopg")
    schema = PostgresSchema(base)
    bouncers = []

    def start(**kwargs):
        bouncer = PgBouncer(tmp_path / ("pgbouncer%d" % len(bouncers)), base, schema.schema, **kwargs)
        bouncers.append(bouncer)
        return bouncer
    try:
        yield start
    finally:
        for bouncer in bouncers:
            bouncer.stop()
        schema.drop()


def test_opm_works_behind_pgbouncer_in_transaction_mode(pgbouncer_schema, tmp_path, build, monkeypatch):
    bouncer = pgbouncer_schema(pool_size=2)
    cluster = Cluster(tmp_path, bouncer.url)
    cluster.opm("init")
    server = cluster.node("head", "server")
    clients = [cluster.node("n%d" % i, "client") for i in range(4)]
    cluster.publish(opkg(build, "foo"))
    cluster.opm("request", "head", "foo", "post-clients")
    cluster.opm("progress", "post_install")
    cluster.sync(server)
    all_at_once(cluster, [(root, ["opm", "sync", "--wait", "120"]) for root in clients + clients])
    rows = cluster.rows()
    assert all(rows[("n%d" % i, "foo")]["current"] == "install-bin-pkgs" for i in range(4))
    for i, root in enumerate(clients):
        assert installed(root, "foo")
        assert [s for s, p, _ in trace(root)].count("api-pre-install") == 1          # nothing done twice
        assert stages_logged(cluster.events(), "n%d" % i, "foo").count(("up", "install-bin-pkgs")) == 1
    code, output, log = pm_in_process(monkeypatch, bouncer.url, clients[0], "opm", "sync")
    assert code == 0, output
    assert len(statements_sent(log)) <= 4 and all(sql.startswith("SELECT") for sql in statements_sent(log))
    assert len(cluster.opm("status", "--json").json["rows"]) == 5                            # a named cursor, in one transaction
    assert len(cluster.opm("inventory", "--json").json["inventory"]) == 5


def test_a_herd_larger_than_pgbouncers_client_limit_retries_and_every_sync_succeeds(pgbouncer_schema, tmp_path):
    bouncer = pgbouncer_schema(max_client_conn=3, pool_size=2)
    cluster = Cluster(tmp_path, bouncer.url)
    cluster.opm("init")
    roots = [cluster.node("n%02d" % i, "client") for i in range(12)]
    import psycopg
    holders = [psycopg.connect(bouncer.url, autocommit=True) for _ in range(3)]   # PgBouncer is full
    syncs = [subprocess.Popen([sys.executable, str(PM), "--root", str(root), "opm", "sync", "--deadline", "120"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, PM_ODA=bouncer.url)) for root in roots]
    time.sleep(3)
    for conn in holders:
        conn.close()                      # the herd gets in as the clients leave
    results = [(proc.wait(180), proc.stderr.read()) for proc in syncs]
    assert [code for code, _ in results] == [0] * len(roots), results
    log = (tmp_path / "pgbouncer0" / "pgbouncer.log").read_text()
    assert "no more connections allowed" in log                                       # the herd did hit the limit
