"""SPEC §13 site report: tools/siteStatus.py gathers pm's installed packages from many
sites (local roots, or commands such as ssh) into a package × site table, as text, JSON
and one self-contained HTML page, for cron."""

import html.parser
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import PM, REPO, run_pm

TOOL = REPO / "tools" / "siteStatus.py"

VULNERABILITIES = "# test list\nopenssl <1.1.1 remote-code-execution https://example.org/CVE-2014-0160\n"


def site_status(*args, timeout=120, env=None):
    """Run the tool as cron would: no terminal, stdin closed, TERM unset."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("TERM", "PM_ROOT")}
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, str(TOOL)] + [str(a) for a in args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout, env=full_env)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture
def site(tmp_path, build):
    """``site(name, {package: version})`` makes a pm root with those packages installed."""
    def make(name, packages):
        root = tmp_path / "sites" / name
        root.mkdir(parents=True)
        files = [build(p, v, {"/opt/%s/%s" % (name, p): v}) for p, v in packages.items()]
        if files:
            result = run_pm(root, "install", *files)
            assert result.code == 0, result
        return root
    return make


@pytest.fixture
def sites_file(tmp_path):
    def write(*lines):
        path = tmp_path / "sites.list"
        path.write_text("# VO software areas\n" + "\n".join(lines) + "\n")
        return path
    return write


@pytest.fixture
def repo(repository, build):
    """A repository (index built by repoPackager): openssl 1.0.2 and 3.0.7, zlib 1.3.0 and
    1.4.0-rc.1."""
    made = repository("repo")
    made.add(*[build(name, version, {"/x": version}) for name, version in
               (("openssl", "1.0.2"), ("openssl", "3.0.7"), ("zlib", "1.3.0"), ("zlib", "1.4.0-rc.1"))])
    return made.path


def pm_command(root):
    """A command site's command: pm's JSON list, as ssh would run it on the site."""
    return "%s %s --root %s --json list-installed" % (sys.executable, PM, root)


# -- gathering -------------------------------------------------------------------------------

def test_several_local_sites_make_one_package_by_site_table(site, sites_file):
    a = site("a", {"openssl": "3.0.7", "zlib": "1.3.0"})
    b = site("b", {"openssl": "1.0.2"})
    c = site("c", {})
    proc = site_status(sites_file("site-a local:%s" % a, "site-b local:%s" % b, "site-c  local:%s" % c))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].endswith(": 3 sites (0 failed), 2 packages, 0 outdated, 0 vulnerable")
    assert lines[2].split() == ["package", "site-a", "site-b", "site-c"]
    assert lines[3].split() == ["openssl", "3.0.7", "1.0.2", "-"]
    assert lines[4].split() == ["zlib", "1.3.0", "-", "-"]


def test_a_command_site_is_read_from_the_json_its_command_prints(site, sites_file):
    a = site("a", {"zlib": "1.3.0"})
    remote = site("remote", {"zlib": "1.2.11", "curl": "8.0"})
    proc = site_status(sites_file("a local:%s" % a, "remote cmd:%s" % pm_command(remote)), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["sites"][1] == {"name": "remote", "source": "cmd:" + pm_command(remote), "ok": True,
                                  "error": None, "packages": 2, "outdated": 0, "vulnerable": 0}
    assert {p["name"]: sorted(p["sites"]) for p in report["packages"]} == {"curl": ["remote"],
                                                                          "zlib": ["a", "remote"]}


def test_a_failed_site_is_shown_failed_while_the_others_are_reported(site, sites_file, tmp_path):
    good = site("good", {"zlib": "1.3.0"})
    sites = sites_file("good local:%s" % good,
                       "missing local:%s" % (tmp_path / "nowhere"),
                       "broken cmd:echo 'ssh: connect to host ce01 port 22: Connection refused' >&2; exit 255",
                       "garbage cmd:echo hello",
                       "asks cmd:read answer && echo \"$answer\"",
                       "also-good cmd:%s" % pm_command(good))
    proc = site_status(sites, "--format", "json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    status = {s["name"]: (s["ok"], s["error"]) for s in report["sites"]}
    assert status["good"] == (True, None) and status["also-good"] == (True, None)
    assert status["missing"] == (False, "the root %s does not exist (exit 1)" % (tmp_path / "nowhere"))
    assert status["broken"] == (False, "ssh: connect to host ce01 port 22: Connection refused (exit 255)")
    assert status["garbage"][1].startswith("did not print pm's JSON list of installed packages")
    assert status["asks"] == (False, "exit 1"), "stdin is closed: nothing waits for an answer"
    assert report["summary"]["failed"] == 4
    assert report["packages"][0]["sites"] == {
        "good": {"version": "1.3.0", "outdated": False, "vulnerabilities": []},
        "also-good": {"version": "1.3.0", "outdated": False, "vulnerabilities": []}}
    assert "siteStatus: broken failed: ssh: connect to host ce01" in proc.stderr
    text = site_status(sites).stdout
    assert "FAILED missing (local:%s)" % (tmp_path / "nowhere") in text
    assert "broken (FAILED)" in text.splitlines()[2]


def test_a_site_that_hangs_is_killed_after_the_timeout(site, sites_file, tmp_path):
    good = site("good", {"zlib": "1.3.0"})
    proc = site_status(sites_file("good local:%s" % good, "hangs cmd:sleep 600"),
                       "--timeout", "1", "--format", "json", timeout=60)
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["sites"][1]["error"] == "no answer within 1 seconds"
    assert report["sites"][0]["ok"]


def test_sites_are_asked_in_parallel(site, sites_file, tmp_path):
    # each site's job waits for the other one to have started: only parallel jobs finish
    one, two = tmp_path / "one-started", tmp_path / "two-started"
    wait = "touch %s; for i in $(seq 200); do [ -e %s ] && exec %s; sleep 0.05; done; exit 9"
    root = site("r", {"zlib": "1.3.0"})
    sites = sites_file("one cmd:" + wait % (one, two, pm_command(root)),
                       "two cmd:" + wait % (two, one, pm_command(root)))
    proc = site_status(sites, "--jobs", "2")
    assert proc.returncode == 0, proc.stderr


def test_never_two_jobs_on_one_site_at_once(site, sites_file, tmp_path):
    # lines naming one root (or one command) are one site: their jobs run one after the other
    root = site("r", {"zlib": "1.3.0"})
    busy = tmp_path / "busy"
    job = "mkdir %s || exit 7; sleep 0.3; rmdir %s; %s" % (busy, busy, pm_command(root))
    lines = ["name%d cmd:%s" % (n, job) for n in range(3)]
    lines += ["local%d local:%s" % (n, root) for n in range(2)] + ["local-again local:%s/." % root]
    proc = site_status(sites_file(*lines), "--jobs", "6", "--format", "json")
    assert proc.returncode == 0, proc.stdout
    assert all(s["ok"] for s in json.loads(proc.stdout)["sites"])


def test_a_site_named_twice_or_a_bad_line_is_invalid_input(sites_file, tmp_path):
    proc = site_status(sites_file("a local:/x", "a local:/y"))
    assert proc.returncode == 3 and "line 3: site a is listed twice" in proc.stderr
    proc = site_status(sites_file("a remote:/x"))
    assert proc.returncode == 3 and "line 2: expected NAME local:PATH or NAME cmd:COMMAND" in proc.stderr


# -- marks: outdated and vulnerable --------------------------------------------------------------

def test_versions_older_than_the_repositorys_newest_are_marked(site, sites_file, repo):
    a = site("a", {"openssl": "1.0.2", "zlib": "1.3.0", "local-only": "1.0"})
    proc = site_status(sites_file("a local:%s" % a), "--repo", repo)
    lines = proc.stdout.splitlines()
    assert lines[2].split() == ["package", "newest", "a"]
    assert lines[3].split() == ["local-only", "n/a", "1.0"], "n/a: not in the repository; -: not installed"
    assert lines[4].split() == ["openssl", "3.0.7", "1.0.2", "[old]"]
    assert lines[5].split() == ["zlib", "1.3.0", "1.3.0"], "a release candidate is not newer than a release"
    assert "[old]: older than the newest in %s" % repo in proc.stdout


def test_the_repository_and_the_list_may_be_on_a_web_server(site, sites_file, repo, serve, tmp_path):
    top = tmp_path / "www"
    shutil.copytree(repo, top / "repo")
    (top / "vulns").write_text(VULNERABILITIES)
    url = serve(top).url
    a = site("a", {"openssl": "1.0.2"})
    proc = site_status(sites_file("a local:%s" % a), "--repo", url + "/repo", "--vulns", url + "/vulns")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[3].split() == ["openssl", "3.0.7", "1.0.2", "[old]", "[VULN]"]


def test_a_repository_without_an_index_is_an_error(site, sites_file, tmp_path):
    a = site("a", {"openssl": "1.0.2"})
    (tmp_path / "empty").mkdir()
    proc = site_status(sites_file("a local:%s" % a), "--repo", tmp_path / "empty")
    assert proc.returncode == 1 and "has no index" in proc.stderr and "repoPackager" in proc.stderr
    assert proc.stdout == ""


def test_versions_a_vulnerability_list_names_are_marked(site, sites_file, tmp_path):
    a = site("a", {"openssl": "1.0.2"})
    b = site("b", {"openssl": "3.0.7"})
    vulns = tmp_path / "vulns"
    vulns.write_text(VULNERABILITIES + "broken\n")
    proc = site_status(sites_file("a local:%s" % a, "b local:%s" % b), "--vulns", vulns)
    assert proc.returncode == 0
    assert proc.stdout.splitlines()[3].split() == ["openssl", "1.0.2", "[VULN]", "3.0.7"]
    assert "VULN openssl 1.0.2 on a: remote-code-execution (openssl <1.1.1), see " \
           "https://example.org/CVE-2014-0160" in proc.stdout
    assert "warning: %s line 3: expected NAME CONSTRAINT TYPE URL" % vulns in proc.stderr


def test_the_json_report_field_by_field(site, sites_file, repo, tmp_path):
    a = site("a", {"openssl": "1.0.2", "zlib": "1.3.0"})
    vulns = tmp_path / "vulns"
    vulns.write_text(VULNERABILITIES)
    sites = sites_file("a local:%s" % a, "down local:%s" % (tmp_path / "gone"))
    proc = site_status(sites, "--format", "json", "--repo", repo, "--vulns", vulns,
                       env={"SOURCE_DATE_EPOCH": "1700000000"})
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert sorted(report) == ["format", "generated", "packages", "repository", "sites", "summary",
                              "vulnerabilities", "warnings"]
    assert report["format"] == 1
    assert report["generated"] == "2023-11-14T22:13:20Z"
    assert report["repository"] == str(repo)
    assert report["vulnerabilities"] == str(vulns)
    assert report["warnings"] == []
    assert report["sites"] == [
        {"name": "a", "source": "local:%s" % a, "ok": True, "error": None, "packages": 2, "outdated": 1,
         "vulnerable": 1},
        {"name": "down", "source": "local:%s" % (tmp_path / "gone"), "ok": False,
         "error": "the root %s does not exist (exit 1)" % (tmp_path / "gone"), "packages": 0, "outdated": 0,
         "vulnerable": 0}]
    assert report["packages"] == [
        {"name": "openssl", "newest": "3.0.7", "in_repository": True,
         "sites": {"a": {"version": "1.0.2", "outdated": True, "vulnerabilities": [
             {"type": "remote-code-execution", "url": "https://example.org/CVE-2014-0160",
              "constraint": "<1.1.1"}]}},
         "versions": {"1.0.2": 1}, "installed": 1, "outdated": 1, "vulnerable": 1},
        {"name": "zlib", "newest": "1.3.0", "in_repository": True,
         "sites": {"a": {"version": "1.3.0", "outdated": False, "vulnerabilities": []}},
         "versions": {"1.3.0": 1}, "installed": 1, "outdated": 0, "vulnerable": 0}]
    assert report["summary"] == {"sites": 2, "failed": 1, "packages": 2, "outdated": 1, "vulnerable": 1}


def test_the_report_file_is_replaced_whole(site, sites_file, tmp_path):
    a = site("a", {"zlib": "1.3.0"})
    out = tmp_path / "www" / "status.json"
    out.parent.mkdir()
    out.write_text("old report")
    proc = site_status(sites_file("a local:%s" % a), "--format", "json", "-o", out)
    assert proc.returncode == 0 and proc.stdout == ""
    assert json.loads(out.read_text())["summary"]["sites"] == 1
    assert os.listdir(out.parent) == ["status.json"]


# -- the HTML page ----------------------------------------------------------------------------------

class TableReader(html.parser.HTMLParser):
    """The rows of one table of a page (by id; default the first): [(tag, class, text),
    ...] per row; ``external`` lists what would load something from elsewhere."""

    def __init__(self, table=None):
        super().__init__()
        self.rows, self.cell, self.external = [], None, []
        self.table, self.inside, self.seen = table, False, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("link", "img", "iframe", "object") or (tag != "a" and ("src" in attrs or "href" in attrs)):
            self.external.append((tag, attrs))
        if tag == "table" and not self.seen and (self.table is None or attrs.get("id") == self.table):
            self.inside = self.seen = True
        if not self.inside:
            return
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th") and self.rows:
            self.cell = [tag, attrs.get("class", ""), ""]

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[2] += data

    def handle_endtag(self, tag):
        if tag == "table":
            self.inside = False
        if tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append(tuple(self.cell))
            self.cell = None


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no chromium on this machine (apt-get install chromium) to render the page")


def browser(*args, timeout=120):
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--no-first-run", "--disable-extensions", "--user-data-dir=%s" % args[0]] + list(args[1:])
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_the_html_page_is_self_contained(site, sites_file, tmp_path):
    a = site("a", {"zlib": "1.3.0"})
    page = site_status(sites_file("a local:%s" % a), "--format", "html").stdout
    reader = TableReader()
    reader.feed(page)
    assert reader.external == []
    assert "url(" not in page and "@import" not in page
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page


def test_site_names_and_versions_are_escaped_in_html(sites_file, tmp_path):
    sites = sites_file("a&b cmd:echo '{\"packages\": [{\"name\": \"x\", \"version\": \"<b>1</b>\"}]}'")
    page = site_status(sites, "--format", "html").stdout
    assert "a&amp;b" in page and "&lt;b&gt;1&lt;/b&gt;" in page and "<b>1</b>" not in page


def test_a_headless_browser_shows_the_table_with_its_marks(site, sites_file, repo, tmp_path):
    a = site("a", {"openssl": "1.0.2", "zlib": "1.3.0"})
    b = site("b", {"zlib": "1.3.0"})
    vulns = tmp_path / "vulns"
    vulns.write_text(VULNERABILITIES)
    page = tmp_path / "status.html"
    proc = site_status(sites_file("a local:%s" % a, "b local:%s" % b, "down local:%s" % (tmp_path / "gone")),
                       "--format", "html", "-o", page, "--repo", repo, "--vulns", vulns)
    assert proc.returncode == 1
    dump = browser(tmp_path / "chromium-profile", "--dump-dom", page.as_uri())
    assert dump.returncode == 0, dump.stderr[-2000:]
    reader = TableReader("status")
    reader.feed(dump.stdout)
    header, openssl, zlib, installed, outdated, vulnerable = [tuple(row) for row in reader.rows]
    assert [text for _, _, text in header] == ["Package", "Newest", "a", "b", "downfailed"]
    assert header[4][1] == "site failed"
    assert openssl == (("th", "pkg", "openssl"), ("td", "newest", "3.0.7"), ("td", "old vuln", "1.0.2oldvulnerable"),
                       ("td", "absent", "\u00b7"), ("td", "unknown", "?"))
    assert zlib == (("th", "pkg", "zlib"), ("td", "newest", "1.3.0"), ("td", "", "1.3.0"), ("td", "", "1.3.0"),
                    ("td", "unknown", "?"))
    assert [text for _, _, text in installed] == ["installed", "", "2", "1", "?"], "per-site totals"
    assert [text for _, _, text in outdated] == ["outdated", "", "1", "0", "?"]
    assert [text for _, _, text in vulnerable] == ["vulnerable", "", "1", "0", "?"]
    summary = TableReader("summary")
    summary.feed(dump.stdout)
    assert [[text for _, _, text in row] for row in summary.rows] == [
        ["Package", "Newest", "Versions (sites)", "Installed on", "Outdated on", "Vulnerable on"],
        ["openssl", "3.0.7", "1.0.2 \u00d71", "1", "1", "1"],
        ["zlib", "1.3.0", "1.3.0 \u00d72", "2", "0", "0"]]
    assert "1 failed" in dump.stdout and "the root %s does not exist" % (tmp_path / "gone") in dump.stdout
    shot = tmp_path / "status.png"
    result = browser(tmp_path / "chromium-profile", "--screenshot=%s" % shot, "--window-size=900,400",
                     page.as_uri())
    assert result.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- the page at 7, 30 and 300 sites, in a real browser ---------------------------------------------

def fleet(tmp_path, repository, build, count):
    """``count`` sites answering through commands (each prints a stored pm JSON list, as
    ssh to the site would), over 40 packages: a repository with two versions of most of
    them, sites at one or the other, some not installed, some vulnerable, some not in
    the repository at all."""
    repo = repository("fleet-repo")
    names = ["lib%02d" % i for i in range(36)]
    repo.add(*[build(name, version, {"/x": version}) for name in names for version in ("1.0", "2.0")])
    answers = tmp_path / "answers"
    answers.mkdir()
    lines = []
    for n in range(count):
        packages = [{"name": name, "version": "1.0" if (n + i) % 5 == 0 else "2.0", "state": "installed"}
                    for i, name in enumerate(names) if (n * 7 + i) % 6 != 0]
        packages += [{"name": "openssl", "version": "1.0.2" if n % 4 == 0 else "3.0.7", "state": "installed"},
                     {"name": "site-tool-%d" % (n % 3), "version": "0.9", "state": "installed"}]
        (answers / ("s%03d.json" % n)).write_text(json.dumps({"packages": packages}))
        lines.append("site-%03d cmd:cat %s" % (n, answers / ("s%03d.json" % n)))
    vulns = tmp_path / "vulns"
    vulns.write_text(VULNERABILITIES)
    return sites_file_at(tmp_path, lines), repo.path, vulns


def sites_file_at(tmp_path, lines):
    path = tmp_path / "fleet.list"
    path.write_text("\n".join(lines) + "\n")
    return path


def body_data(dom):
    import re
    body = re.search(r"<body([^>]*)>", dom).group(1)
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body))


@pytest.mark.parametrize("count", [7, 30, 300])
def test_the_page_keeps_header_and_package_column_in_view_at_7_30_and_300_sites(tmp_path, repository, build,
                                                                                 count):
    sites, repo, vulns = fleet(tmp_path, repository, build, count)
    page = tmp_path / "status.html"
    proc = site_status(sites, "--format", "html", "-o", page, "--repo", repo, "--vulns", vulns, "--jobs", "8")
    assert proc.returncode == 0, proc.stderr
    profile = tmp_path / "chromium-profile"
    shot = tmp_path / ("status-%d.png" % count)
    result = browser(profile, "--screenshot=%s" % shot, "--window-size=1280,800", "--hide-scrollbars",
                     page.as_uri())
    assert result.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("PM_SITE_STATUS_SHOTS"):          # keep the screenshots to look at
        shutil.copy(shot, os.path.join(os.environ["PM_SITE_STATUS_SHOTS"], shot.name))
    dump = browser(profile, "--window-size=1280,800", "--dump-dom", page.as_uri() + "#check-layout=5000,300")
    assert dump.returncode == 0, dump.stderr[-2000:]
    data = body_data(dump.stdout)
    if int(data["table-width"]) > int(data["area-width"]):        # 30 and 300 sites do not fit
        assert int(data["scroll-left"]) > 0
    assert count < 30 or int(data["scroll-left"]) > 0
    assert abs(int(data["package-left"])) <= 2, "the package column stays in view after a horizontal scroll"
    assert int(data["scroll-top"]) > 0 and abs(int(data["head-top"])) <= 2, "the header row stays in view"
    matrix = TableReader("status")
    matrix.feed(dump.stdout)
    assert len(matrix.rows[0]) == 2 + count and len(matrix.rows) == 1 + 40 + 3
    assert "%d sites (0 failed), 40 packages" % count in dump.stdout
    summary = TableReader("summary")
    summary.feed(dump.stdout)
    openssl = next(row for row in summary.rows if row[0][2] == "openssl")
    old = len([n for n in range(count) if n % 4 == 0])
    assert [text for _, _, text in openssl] == [
        "openssl", "not in repository", "3.0.7 \u00d7%d, 1.0.2 \u00d7%d" % (count - old, old), str(count), "0",
        str(old)]
    lib01 = next(row for row in summary.rows if row[0][2] == "lib01")
    assert int(lib01[4][2]) == len([n for n in range(count) if (n + 1) % 5 == 0 and (n * 7 + 1) % 6 != 0])
    tool = next(row for row in summary.rows if row[0][2] == "site-tool-0")
    assert tool[1] == ("td", "norepo", "not in repository")
    totals = {row[0][2]: [text for _, _, text in row[2:]] for row in matrix.rows[-3:]}
    assert totals["installed"][0] == str(len([i for i in range(36) if i % 6 != 0]) + 2)


def test_the_page_filters_and_sorts_in_the_browser(tmp_path, repository, build):
    sites, repo, vulns = fleet(tmp_path, repository, build, 12)
    page = tmp_path / "status.html"
    assert site_status(sites, "--format", "html", "-o", page, "--repo", repo, "--vulns", vulns).returncode == 0
    dump = browser(tmp_path / "profile", "--dump-dom", page.as_uri() + "#filter=lib0&sort=-Outdated%20on")
    assert dump.returncode == 0, dump.stderr[-2000:]
    import re
    shown = re.findall(r'<tr data-package="([^"]+)"[^>]*?(?: class="([^"]*)")?>', dump.stdout)
    visible = [name for name, classes in shown if "hidden" not in (classes or "")]
    assert visible and all(name.startswith("lib0") for name in visible)
    assert '<span id="shown">%d</span>' % (len(visible) // 2) in dump.stdout
    summary = TableReader("summary")
    summary.feed(dump.stdout)
    outdated = [int(row[4][2]) for row in summary.rows[1:]]
    assert outdated == sorted(outdated, reverse=True), "sorted by the Outdated column, descending"
