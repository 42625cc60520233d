"""SPEC §13 audit: installed packages against a vulnerability list, and the same check
when installing (pkgsrc's audit-packages and CHECK_VULNERABILITIES)."""

import pytest

from conftest import payload


VULNERABILITIES = """\
# name constraint type url
openssl <1.1.1 remote-code-execution https://example.org/CVE-2014-0160
openssl >=3.0, <3.0.7 buffer-overflow https://example.org/CVE-2022-3602
zlib   <1.2.12||=1.3.0-beta.1   memory-corruption   https://example.org/CVE-2018-25032
"""


@pytest.fixture
def vulns(tmp_path):
    """``vulns(text)`` writes a vulnerability list and returns its path."""
    def write(text=VULNERABILITIES):
        path = tmp_path / "pkg-vulnerabilities"
        path.write_text(text)
        return path
    return write


def conf(root, text):
    (root / "etc/pm").mkdir(parents=True, exist_ok=True)
    (root / "etc/pm/pm.conf").write_text(text)


# -- pm audit ------------------------------------------------------------------------

def test_an_installed_version_inside_a_listed_range_is_reported_and_exits_1(pm, build, vulns):
    pm("install", build("openssl", "3.0.5", {"/lib/ssl": "x"}), build("zlib", "1.2.13", {"/lib/z": "z"}))
    result = pm("audit", "--vulns", vulns(), expect=1)
    assert result.out == ("openssl 3.0.5 has a buffer-overflow vulnerability (openssl >=3.0, <3.0.7), "
                          "see https://example.org/CVE-2022-3602\n")
    assert "2 installed packages checked against 3 entries" in result.err
    assert "1 affected" in result.err


def test_versions_outside_every_listed_range_are_not_affected(pm, build, vulns):
    pm("install", build("openssl", "3.0.7", {"/lib/ssl": "x"}), build("zlib", "1.3.0", {"/lib/z": "z"}),
       build("curl", "7.0", {"/bin/curl": "c"}))
    result = pm("audit", "--vulns", vulns(), expect=0)
    assert result.out == ""
    assert "0 affected" in result.err


def test_alternatives_in_a_constraint_each_count(pm, build, vulns):
    pm("install", build("zlib", "1.3.0-beta.1", {"/lib/z": "z"}))
    result = pm("--json", "audit", "--vulns", vulns(), expect=1)
    assert [a["package"] for a in result.json["affected"]] == ["zlib"]


def test_a_pre_release_of_a_fixed_version_is_still_affected(pm, build, vulns):
    pm("install", build("openssl", "1.1.1-rc.1", {"/lib/ssl": "x"}))
    pm("audit", "--vulns", vulns(), expect=1)


def test_audit_json_lists_each_affected_entry_with_its_line(pm, build, vulns):
    pm("install", build("openssl", "1.0.2", {"/lib/ssl": "x"}))
    report = pm("--json", "audit", "--vulns", vulns(), expect=1).json
    assert report["affected"] == [{"package": "openssl", "version": "1.0.2", "constraint": "<1.1.1",
                                   "type": "remote-code-execution",
                                   "url": "https://example.org/CVE-2014-0160", "line": 2}]
    assert report["checked"] == 1 and report["entries"] == 3 and report["malformed"] == []


def test_malformed_lines_are_reported_with_their_numbers_and_the_rest_still_counts(pm, build, vulns):
    pm("install", build("openssl", "1.0.2", {"/lib/ssl": "x"}))
    path = vulns(VULNERABILITIES + "openssl <2\n" + "bad*name <1 dos https://x\n"
                 + "openssl >>1 dos https://x\n" + "openssl <9 dos not-a-url\n")
    result = pm("--json", "audit", "--vulns", path, expect=1)
    lines = [(m["line"], m["problem"]) for m in result.json["malformed"]]
    assert [n for n, _ in lines] == [5, 6, 7, 8]
    assert "expected NAME CONSTRAINT TYPE URL" in lines[0][1]
    assert "bad package name" in lines[1][1]
    assert "malformed version constraint '>>1'" in lines[2][1]
    assert "URL" in lines[3][1]
    assert "line 5: expected NAME CONSTRAINT TYPE URL" in result.err
    assert [a["line"] for a in result.json["affected"]] == [2]


def test_malformed_lines_alone_exit_3_because_the_list_may_hide_something(pm, build, vulns):
    pm("install", build("curl", "7.0", {"/bin/curl": "c"}))
    result = pm("audit", "--vulns", vulns("curl\n"), expect=3)
    assert "line 1" in result.err


def test_an_unversioned_package_is_assumed_affected_with_a_warning(pm, build, vulns):
    pm("install", build("openssl", "oppm", {"/lib/ssl": "x"}))
    result = pm("audit", "--vulns", vulns(), expect=1)
    assert "openssl is unversioned (oppm)" in result.err


def test_removed_packages_with_config_remaining_are_not_audited(pm, build, vulns):
    pm("install", build("openssl", "1.0.2", {"/etc/ssl.cnf": "x"}, config=["/etc/ssl.cnf"]))
    pm("uninstall", "openssl")
    pm("audit", "--vulns", vulns(), expect=0)


def test_the_list_named_in_pm_conf_is_read_within_the_root(pm, build, root):
    pm("install", build("openssl", "1.0.2", {"/lib/ssl": "x"}))
    (root / "var/db").mkdir(parents=True)
    (root / "var/db/vulns").write_text(VULNERABILITIES)
    conf(root, "# site settings\nvulnerabilities = /var/db/vulns\n")
    assert "openssl 1.0.2 has a remote-code-execution" in pm("audit", expect=1).out


def test_the_list_may_be_fetched_over_http(pm, build, root, serve, tmp_path):
    (tmp_path / "www").mkdir()
    (tmp_path / "www/vulns").write_text(VULNERABILITIES)
    url = serve(tmp_path / "www").url
    pm("install", build("openssl", "1.0.2", {"/lib/ssl": "x"}))
    assert pm("--json", "audit", "--vulns", url + "/vulns", expect=1).json["source"] == url + "/vulns"
    conf(root, "vulnerabilities = %s/vulns\n" % url)
    pm("audit", expect=1)


def test_an_unreachable_list_is_an_error_not_a_clean_bill(pm, build, root, serve, tmp_path):
    url = serve(tmp_path).url
    result = pm("audit", "--vulns", url + "/missing", expect=1)
    assert "cannot read the vulnerability list" in result.err and "not found" in result.err
    result = pm("audit", "--vulns", tmp_path / "nothing", expect=1)
    assert "cannot read the vulnerability list" in result.err


def test_audit_without_a_list_is_a_usage_error(pm):
    assert "no vulnerability list" in pm("audit", expect=2).err


# -- the install-time check ------------------------------------------------------------

def test_install_warns_when_it_installs_an_affected_version(pm, build, root, vulns):
    conf(root, "vulnerabilities = /etc/pm/vulns\n")
    (root / "etc/pm/vulns").write_text(VULNERABILITIES)
    result = pm("install", build("openssl", "1.0.2", {"/lib/ssl": "x"}), expect=0)
    assert "warning: openssl 1.0.2 has a remote-code-execution vulnerability" in result.err
    assert pm("list-installed").out == "openssl (1.0.2)\n"


def test_install_of_an_unaffected_version_says_nothing(pm, build, root):
    conf(root, "vulnerabilities = /etc/pm/vulns\n")
    (root / "etc/pm/vulns").write_text(VULNERABILITIES)
    result = pm("install", build("openssl", "3.0.7", {"/lib/ssl": "x"}))
    assert "vulnerab" not in result.err


def test_check_vulnerabilities_always_refuses_and_changes_nothing(pm, build, root):
    conf(root, "vulnerabilities = /etc/pm/vulns\ncheck_vulnerabilities = always\n")
    (root / "etc/pm/vulns").write_text(VULNERABILITIES)
    pm("install", build("zlib", "1.3.0", {"/lib/z": "z"}))
    before = payload(root)
    result = pm("install", build("openssl", "3.0.5", {"/lib/ssl": "x"}), build("curl", "8.0", {"/bin/c": "c"}),
                expect=1)
    assert "openssl 3.0.5 has a buffer-overflow vulnerability" in result.err
    assert "nothing was changed" in result.err
    assert payload(root) == before
    assert pm("list-installed").out == "zlib (1.3.0)\n"
    pm("install", build("openssl", "3.0.7", {"/lib/ssl": "x"}))


def test_check_vulnerabilities_always_refuses_an_upgrade_to_an_affected_version(pm, build, root):
    pm("install", build("openssl", "2.0", {"/lib/ssl": "x"}))
    conf(root, "vulnerabilities = /etc/pm/vulns\ncheck_vulnerabilities = always\n")
    (root / "etc/pm/vulns").write_text(VULNERABILITIES)
    pm("install", build("openssl", "3.0.5", {"/lib/ssl": "y"}), expect=1)
    assert pm("list-installed").out == "openssl (2.0)\n"


def test_check_vulnerabilities_always_refuses_when_the_list_cannot_be_read(pm, build, root):
    conf(root, "vulnerabilities = /etc/pm/missing\ncheck_vulnerabilities = always\n")
    result = pm("install", build("curl", "8.0", {"/bin/c": "c"}), expect=1)
    assert "cannot check for vulnerabilities" in result.err
    conf(root, "check_vulnerabilities = always\n")
    assert "names no vulnerability list" in pm("install", build("curl", "8.0", {"/bin/c": "c"}), expect=1).err
    assert payload(root) == {"etc": ("d", 0o755, None), "etc/pm": ("d", 0o755, None),
                             "etc/pm/pm.conf": payload(root)["etc/pm/pm.conf"]}


def test_by_default_an_unreadable_list_only_warns(pm, build, root):
    conf(root, "vulnerabilities = /etc/pm/missing\n")
    result = pm("install", build("curl", "8.0", {"/bin/c": "c"}))
    assert "warning: cannot check for vulnerabilities" in result.err


def test_check_vulnerabilities_never_skips_the_check(pm, build, root):
    conf(root, "vulnerabilities = /etc/pm/vulns\ncheck_vulnerabilities = never\n")
    (root / "etc/pm/vulns").write_text(VULNERABILITIES)
    assert "vulnerab" not in pm("install", build("openssl", "1.0.2", {"/lib/ssl": "x"})).err


def test_a_dry_run_shows_the_same_verdict(pm, build, root):
    conf(root, "vulnerabilities = /etc/pm/vulns\ncheck_vulnerabilities = always\n")
    (root / "etc/pm/vulns").write_text(VULNERABILITIES)
    pm("install", "--dry-run", build("openssl", "1.0.2", {"/lib/ssl": "x"}), expect=1)


def test_a_bad_check_vulnerabilities_value_is_invalid_input(pm, build, root):
    conf(root, "check_vulnerabilities = sometimes\n")
    result = pm("install", build("curl", "8.0", {"/bin/c": "c"}), expect=3)
    assert "check_vulnerabilities must be warn, always, never" in result.err


def test_removals_do_not_consult_the_vulnerability_settings(pm, build, root):
    pm("install", build("curl", "8.0", {"/bin/c": "c"}))
    conf(root, "check_vulnerabilities = sometimes\n")
    pm("uninstall", "curl")
