#!/usr/bin/env python3
"""siteStatus — which version of which package is installed on which site.

For software managers who keep packages in shared areas on many sites (SPEC §13, after
pkgsrc's get-site-status.sh): reads a sites file, asks every site for pm's list of
installed packages — one job per site at a time, several sites in parallel — and
renders a package × site table as text, JSON or one self-contained HTML page, marking
versions older than the newest in a repository and versions a vulnerability list names.

Made for cron: no prompts, nothing assumed about a terminal, the output file replaced
whole (never half-written).  Exit 0 when every site answered, 1 when one failed (it is
shown as failed; the others are still reported), 2 for a usage error, 3 for a bad or missing
sites file, vulnerability list or repository.

Sites file, one site per line, ``#`` comments:
    NAME local:PATH        a pm root on this machine
    NAME cmd:COMMAND ...   a shell command printing ``pm --json list-installed``, e.g.
                           ssh sgm@ce.example.org pm --root /sw/vo --json list-installed

    siteStatus.py SITES [--format text|json|html] [-o FILE] [--vulns FILE|URL]
                        [--repo DIR|URL] [--jobs N] [--timeout SECONDS]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import pm  # noqa: E402  (pm.py lives in the repository root, one directory up)

PM_PATH = os.path.abspath(pm.__file__)
REPORT_FORMAT = 1           # the JSON document's layout; bumped when a field changes meaning
DEFAULT_JOBS = 4
DEFAULT_TIMEOUT = 600       # seconds one site may take (ssh to a busy site is slow)
MAX_SITE_OUTPUT = 64 << 20  # bytes of JSON one site may print


class Site:
    """One line of the sites file: ``kind`` is ``local`` (target: a root) or ``cmd``
    (target: a shell command)."""

    def __init__(self, name: str, kind: str, target: str, line: int):
        self.name, self.kind, self.target, self.line = name, kind, target, line

    @property
    def source(self) -> str:
        return "%s:%s" % (self.kind, self.target)

    @property
    def key(self):
        """What identifies the site itself: two lines with one key are one site, and
        never get two jobs at once."""
        return (self.kind, os.path.realpath(self.target) if self.kind == "local" else self.target)


def read_sites(path: str) -> list:
    """The sites of a sites file; pm.InvalidInput naming the line of a mistake."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as e:
        raise pm.InvalidInput("cannot read the sites file %s: %s" % (path, e.strerror)) from None
    sites, names = [], set()
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition(" ")
        rest = rest.strip()
        kind, sep, target = rest.partition(":")
        if not sep or kind not in ("local", "cmd") or not target.strip():
            raise pm.InvalidInput("%s line %d: expected NAME local:PATH or NAME cmd:COMMAND" % (path, number))
        if name in names:
            raise pm.InvalidInput("%s line %d: site %s is listed twice" % (path, number, name))
        if pm.has_control_chars(name) or "<" in name or ">" in name:
            raise pm.InvalidInput("%s line %d: bad site name %r" % (path, number, name))
        names.add(name)
        sites.append(Site(name, kind, target.strip(), number))
    if not sites:
        raise pm.InvalidInput("%s lists no sites" % path)
    return sites


# -- asking the sites ------------------------------------------------------------------

class SiteResult:
    """What one site answered: ``packages`` {name: version}, or an ``error``."""

    def __init__(self, site: Site, packages: dict | None = None, error: str | None = None):
        self.site, self.packages, self.error = site, packages or {}, error

    @property
    def ok(self) -> bool:
        return self.error is None


def query_site(site: Site, timeout: float) -> SiteResult:
    """Run the site's job: pm's ``--json list-installed`` on a local root, or the site's
    command; never reads stdin, killed (with its children) after ``timeout``."""
    import signal
    import subprocess
    if site.kind == "local":
        command = [sys.executable, PM_PATH, "--root", site.target, "--json", "list-installed"]
    else:
        command = ["/bin/sh", "-c", site.target]
    try:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, start_new_session=True)
    except OSError as e:
        return SiteResult(site, error="cannot run the job: %s" % e.strerror)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except OSError:
            pass
        process.communicate()
        return SiteResult(site, error="no answer within %g seconds" % timeout)
    if process.returncode != 0:
        lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
        why = lines[-1] if lines else pm.describe_exit(process.returncode)
        if why.startswith("pm: error: "):
            why = why[len("pm: error: "):]
        return SiteResult(site, error="%s (%s)" % (why, pm.describe_exit(process.returncode))
                          if lines else why)
    return parse_list_installed(site, stdout)


def parse_list_installed(site: Site, output: bytes) -> SiteResult:
    """The packages of pm's ``--json list-installed`` document, checked."""
    import json
    if len(output) > MAX_SITE_OUTPUT:
        return SiteResult(site, error="printed more than %d bytes" % MAX_SITE_OUTPUT)
    try:
        document = json.loads(output.decode("utf-8"))
        rows = document["packages"]
        packages = {}
        for row in rows:
            name, version = row["name"], row["version"]
            if not pm.valid_package_name(name) or not isinstance(version, str):
                raise ValueError("bad package %r" % (name,))
            if row.get("state", pm.STATE_INSTALLED) == pm.STATE_INSTALLED:
                packages[name] = version
    except (ValueError, KeyError, TypeError) as e:
        return SiteResult(site, error="did not print pm's JSON list of installed packages (%s)" % e)
    return SiteResult(site, packages)


def query_sites(sites: list, jobs: int, timeout: float) -> list:
    """Every site's result, in the sites' order: up to ``jobs`` sites at once, the lines
    naming one site (one root, one command) one after the other."""
    from concurrent.futures import ThreadPoolExecutor
    groups: dict = {}
    for site in sites:
        groups.setdefault(site.key, []).append(site)
    results = {}

    def run(group):
        for site in group:
            results[site.name] = query_site(site, timeout)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for future in [pool.submit(run, group) for group in groups.values()]:
            future.result()
    return [results[site.name] for site in sites]


# -- what is newest, what is vulnerable ------------------------------------------------------

def newest_versions(repository: str) -> dict:
    """{name: newest Version} of a repository's index (a directory, file:// or http(s)://
    URL, as pm's sources; pre-releases count only where a package has nothing else)."""
    location = repository if "://" in repository else os.path.abspath(repository)
    entries = pm.fetch_index(pm.Source(location), pm.Output(verbosity=-1))
    found: dict = {}
    for entry in entries:
        manifest = entry["manifest"]
        found.setdefault(manifest["package"], []).append(pm.Version.parse(manifest["version"]))
    return {name: _newest(versions) for name, versions in found.items()}


def _newest(versions: list):
    versioned = [v for v in versions if not v.unversioned]
    releases = [v for v in versioned if not v.prerelease]
    return max(releases or versioned) if versioned else None


def _is_older(installed: str, newest) -> bool:
    if newest is None:
        return False
    try:
        version = pm.Version.parse(installed)
    except pm.InvalidInput:
        return False
    return not version.unversioned and version < newest


# -- the report --------------------------------------------------------------------------

def build_report(results: list, newest: dict | None, vulnerabilities, generated: float,
                 repository: str | None) -> dict:
    """The JSON document (REPORT_FORMAT): sites, then one row per package with the
    version on each site that has it, whether it is outdated, what it is vulnerable to."""
    import time
    sites = [{"name": r.site.name, "source": r.site.source, "ok": r.ok, "error": r.error,
              "packages": len(r.packages), "outdated": 0, "vulnerable": 0} for r in results]
    by_name = {site["name"]: site for site in sites}
    names = sorted({name for r in results for name in r.packages})
    rows, outdated, vulnerable = [], 0, 0
    for name in names:
        best = newest.get(name) if newest is not None else None
        cells, versions = {}, {}
        for result in results:
            version = result.packages.get(name)
            if version is None:
                continue
            affecting = vulnerabilities.affecting(name, version) if vulnerabilities else []
            cell = {"version": version, "outdated": _is_older(version, best),
                    "vulnerabilities": [{"type": v.kind, "url": v.url, "constraint": str(v.constraint)}
                                        for v in affecting]}
            by_name[result.site.name]["outdated"] += cell["outdated"]
            by_name[result.site.name]["vulnerable"] += bool(affecting)
            versions[version] = versions.get(version, 0) + 1
            cells[result.site.name] = cell
        row = {"name": name, "newest": str(best) if best is not None else None,
               "in_repository": None if newest is None else name in newest, "sites": cells,
               "versions": versions, "installed": len(cells),
               "outdated": sum(c["outdated"] for c in cells.values()),
               "vulnerable": sum(bool(c["vulnerabilities"]) for c in cells.values())}
        outdated += bool(row["outdated"])           # packages, not cells
        vulnerable += bool(row["vulnerable"])
        rows.append(row)
    return {
        "format": REPORT_FORMAT,
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(generated)),
        "repository": repository,
        "vulnerabilities": vulnerabilities.source if vulnerabilities else None,
        "sites": sites,
        "packages": rows,
        "summary": {"sites": len(results), "failed": sum(1 for r in results if not r.ok),
                    "packages": len(rows), "outdated": outdated, "vulnerable": vulnerable},
        "warnings": ["%s line %d: %s" % (vulnerabilities.source, n, p)
                     for n, p in vulnerabilities.malformed] if vulnerabilities else [],
    }


def _cell_text(cell: dict | None) -> str:
    if cell is None:
        return "-"                      # not installed on that site
    marks = (" [old]" if cell["outdated"] else "") + (" [VULN]" if cell["vulnerabilities"] else "")
    return cell["version"] + marks


def render_text(report: dict) -> str:
    """A plain table for mail from cron: no colours, no terminal assumptions."""
    sites = report["sites"]
    header = ["package"] + (["newest"] if report["repository"] else []) + \
        [s["name"] + ("" if s["ok"] else " (FAILED)") for s in sites]
    table = [header]
    for row in report["packages"]:
        table.append([row["name"]] + ([row["newest"] or "n/a"] if report["repository"] else []) +
                     [_cell_text(row["sites"].get(s["name"])) if s["ok"] else "?" for s in sites])
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = ["Site status %s: %s" % (report["generated"], _summary(report["summary"])), ""]
    lines += ["  ".join(value.ljust(width) for value, width in zip(line, widths)).rstrip() for line in table]
    failed = [s for s in sites if not s["ok"]]
    if failed:
        lines.append("")
        lines += ["FAILED %s (%s): %s" % (s["name"], s["source"], s["error"]) for s in failed]
    vulnerable = [(row["name"], site, cell) for row in report["packages"] for site, cell in row["sites"].items()
                  if cell["vulnerabilities"]]
    if vulnerable:
        lines.append("")
        for name, site, cell in vulnerable:
            for v in cell["vulnerabilities"]:
                lines.append("VULN %s %s on %s: %s (%s %s), see %s" % (name, cell["version"], site, v["type"],
                                                                       name, v["constraint"], v["url"]))
    notes = ["-: not installed"]
    if report["repository"]:
        notes.append("[old]: older than the newest in %s" % report["repository"])
        notes.append("n/a: not in the repository")
    if report["vulnerabilities"]:
        notes.append("[VULN]: named by %s" % report["vulnerabilities"])
    if notes:
        lines += ["", "; ".join(notes)]
    return "\n".join(lines) + "\n"


def _summary(summary: dict) -> str:
    """The report's first line; outdated and vulnerable count packages (each may be so
    on several sites)."""
    return "%d site%s (%d failed), %d package%s, %d outdated, %d vulnerable" % (
        summary["sites"], "" if summary["sites"] == 1 else "s", summary["failed"], summary["packages"],
        "" if summary["packages"] == 1 else "s", summary["outdated"], summary["vulnerable"])


HTML_STYLE = """
body { font: 13px/1.35 system-ui, sans-serif; margin: 1em 1.5em; color: #222; background: #fff; }
h1 { font-size: 1.4em; margin: 0 0 .2em; }
h2 { font-size: 1.1em; margin: 1.2em 0 .4em; }
p.summary { margin: 0 0 .6em; color: #444; }
.controls { margin: .4em 0 .6em; }
.controls label { margin-right: 1.2em; }
.scroll { overflow: auto; max-height: 80vh; max-width: 100%; border: 1px solid #bbb; }
.scroll.short { max-height: 30vh; display: inline-block; }
table { border-collapse: separate; border-spacing: 0; }
th, td { border-right: 1px solid #ddd; border-bottom: 1px solid #ddd; padding: .15em .4em;
         text-align: left; white-space: nowrap; background: #fff; }
thead th { position: sticky; top: 0; z-index: 2; background: #eee; cursor: pointer; vertical-align: bottom; }
thead th[aria-sort="ascending"]::after { content: " \\25b2"; }
thead th[aria-sort="descending"]::after { content: " \\25bc"; }
#status thead th.site { writing-mode: vertical-rl; transform: rotate(180deg); text-align: left;
                        padding: .4em .15em; max-height: 12em; overflow: hidden; }
#status .pkg { position: sticky; left: 0; z-index: 1; box-sizing: border-box; width: 13em; min-width: 13em;
               max-width: 13em; overflow: hidden; text-overflow: ellipsis; font-weight: 600; }
#status .newest { position: sticky; left: 13em; z-index: 1; box-sizing: border-box; width: 7em; min-width: 7em;
                  max-width: 7em; overflow: hidden; text-overflow: ellipsis; border-right: 2px solid #999; }
#status thead .pkg, #status thead .newest { z-index: 3; background: #eee; }
#status tfoot th, #status tfoot td { background: #f4f4f4; font-weight: 600; }
td.absent { color: #999; text-align: center; }
td.norepo, span.norepo { color: #7a4f9a; font-style: italic; }
.old { background: #fff3c4; }
.vuln { background: #f9c6c6; font-weight: 600; }
.unknown, th.failed { background: #e6e6e6; color: #777; }
.tag { font-size: .75em; font-weight: normal; margin-left: .3em; padding: 0 .25em; border-radius: 3px;
       background: rgba(0, 0, 0, .08); }
.legend span { display: inline-block; padding: 0 .5em; margin-right: .8em; border: 1px solid #ccc; }
tr.hidden { display: none; }
ul.failed li, ul.vulns li { margin: .2em 0; }
"""

# Sorting (click a column heading), filtering (a name filter and two check boxes), both
# also from the URL, for links: #filter=TEXT&sort=HEADING (sort=-HEADING: descending).
# For checking the layout in a headless browser, &check-layout=X,Y scrolls the matrix by
# X and Y pixels and records on <body> where the first package cell and the first site
# heading then are, relative to the scroll area.
HTML_SCRIPT = """
(function () {
  function key(cell) {
    var text = (cell.getAttribute("data-sort") || cell.textContent).trim();
    var parts = text.split(/[.+-]/);
    if (/^[0-9]+([.][0-9]+)*$/.test(text.split(/[-+ ]/)[0])) {
      return parts.map(function (p) { return /^[0-9]+$/.test(p) ? ("0000000000" + p).slice(-10) : p; }).join(".");
    }
    return text.toLowerCase();
  }
  function sortBy(th) {
    var table = th.closest("table"), body = table.tBodies[0];
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var descending = th.getAttribute("aria-sort") === "ascending";
    Array.prototype.forEach.call(th.parentNode.children, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[index]), y = key(b.cells[index]);
      return (x < y ? -1 : x > y ? 1 : 0) * (descending ? -1 : 1);
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  function filter() {
    var text = document.getElementById("filter").value.toLowerCase();
    var old = document.getElementById("only-outdated").checked;
    var vuln = document.getElementById("only-vulnerable").checked;
    var shown = 0;
    document.querySelectorAll("tr[data-package]").forEach(function (row) {
      var hide = row.getAttribute("data-package").toLowerCase().indexOf(text) < 0 ||
                 (old && row.getAttribute("data-outdated") === "0") ||
                 (vuln && row.getAttribute("data-vulnerable") === "0");
      row.classList.toggle("hidden", hide);
      if (!hide && row.closest("#status")) { shown++; }
    });
    document.getElementById("shown").textContent = shown;
  }
  document.querySelectorAll("thead th").forEach(function (th) {
    th.addEventListener("click", function () { sortBy(th); });
  });
  ["filter", "only-outdated", "only-vulnerable"].forEach(function (id) {
    document.getElementById(id).addEventListener("input", filter);
    document.getElementById(id).addEventListener("change", filter);
  });
  var params = {};
  location.hash.slice(1).split("&").forEach(function (part) {
    var at = part.indexOf("=");
    if (at > 0) { params[decodeURIComponent(part.slice(0, at))] = decodeURIComponent(part.slice(at + 1)); }
  });
  if (params.filter) { document.getElementById("filter").value = params.filter; }
  filter();
  if (params.sort) {
    var wanted = params.sort.replace(/^-/, "");
    var heading = Array.prototype.filter.call(document.querySelectorAll("thead th"), function (th) {
      return th.textContent.trim() === wanted;
    })[0];
    if (heading) { sortBy(heading); if (params.sort[0] === "-") { sortBy(heading); } }
  }
  var match = /^([0-9]+),([0-9]+)$/.exec(params["check-layout"] || "");
  if (match) {
    var area = document.getElementById("matrix");
    area.scrollLeft = +match[1];
    area.scrollTop = +match[2];
    var box = area.getBoundingClientRect();
    var cell = document.querySelector("#status tbody .pkg").getBoundingClientRect();
    var head = document.querySelector("#status thead th.site").getBoundingClientRect();
    var b = document.body.dataset;
    b.scrollLeft = area.scrollLeft; b.scrollTop = area.scrollTop;
    b.packageLeft = Math.round(cell.left - box.left); b.headTop = Math.round(head.top - box.top);
    b.areaWidth = Math.round(box.width); b.tableWidth = Math.round(document.getElementById("status").offsetWidth);
  }
})();
"""


def _versions_text(versions: dict) -> str:
    """``1.0.2 ×3, 3.0.7 ×27``: the versions found, most common first."""
    ordered = sorted(versions.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join("%s \u00d7%d" % (version, count) for version, count in ordered)


def render_html(report: dict) -> str:
    """One self-contained page: inline style and script, no external asset.  A summary
    per package, then the package × site matrix (sticky header row and package column,
    per-site totals at the foot), sortable by any column and filtered by name or mark."""
    from html import escape
    sites = report["sites"]
    with_newest = bool(report["repository"])
    summary = report["summary"]
    out = ['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           '<title>Site status %s</title>' % escape(report["generated"]),
           '<style>%s</style></head><body>' % HTML_STYLE,
           '<h1>Site status</h1>',
           '<p class="summary">%s &middot; generated %s</p>' % (escape(_summary(summary)),
                                                                escape(report["generated"])),
           '<p class="legend"><span class="old">older than the newest</span>'
           '<span class="vuln">vulnerable</span><span class="unknown">site failed</span>'
           '<span class="absent">&middot; not installed</span>'
           '<span class="norepo">not in repository</span></p>',
           '<p class="controls"><label>Package <input id="filter" type="search" placeholder="filter by name">'
           '</label><label><input id="only-outdated" type="checkbox"> only outdated</label>'
           '<label><input id="only-vulnerable" type="checkbox"> only vulnerable</label>'
           '<span><span id="shown">%d</span> of %d packages shown</span></p>' % (summary["packages"],
                                                                                summary["packages"])]
    # the summary per package
    out.append('<h2>Packages</h2><div class="scroll short"><table id="summary"><thead><tr><th scope="col">Package</th>%s'
               '<th scope="col">Versions (sites)</th><th scope="col">Installed on</th>'
               '<th scope="col">Outdated on</th><th scope="col">Vulnerable on</th></tr></thead><tbody>'
               % ('<th scope="col">Newest</th>' if with_newest else ""))
    for row in report["packages"]:
        flags = ' data-package="%s" data-outdated="%d" data-vulnerable="%d"' % (
            escape(row["name"]), row["outdated"], row["vulnerable"])
        newest = ""
        if with_newest:
            newest = '<td>%s</td>' % escape(row["newest"]) if row["newest"] else \
                '<td class="norepo" data-sort="~">not in repository</td>'
        out.append('<tr%s><th scope="row">%s</th>%s<td>%s</td><td data-sort="%010d">%d</td>'
                   '<td data-sort="%010d"%s>%d</td><td data-sort="%010d"%s>%d</td></tr>' % (
                       flags, escape(row["name"]), newest, escape(_versions_text(row["versions"])),
                       row["installed"], row["installed"], row["outdated"],
                       ' class="old"' if row["outdated"] else "", row["outdated"],
                       row["vulnerable"], ' class="vuln"' if row["vulnerable"] else "", row["vulnerable"]))
    out.append('</tbody></table></div>')
    # the matrix
    out.append('<h2>Packages by site</h2><div class="scroll" id="matrix"><table id="status"><thead><tr>'
               '<th scope="col" class="pkg">Package</th>')
    if with_newest:
        out.append('<th scope="col" class="newest">Newest</th>')
    for site in sites:
        if site["ok"]:
            out.append('<th scope="col" class="site" title="%s">%s</th>' % (escape(site["source"]),
                                                                            escape(site["name"])))
        else:
            out.append('<th scope="col" class="site failed" title="%s">%s<span class="tag">failed</span></th>'
                       % (escape(site["error"] or ""), escape(site["name"])))
    out.append('</tr></thead><tbody>')
    for row in report["packages"]:
        out.append('<tr data-package="%s" data-outdated="%d" data-vulnerable="%d"><th scope="row" class="pkg">%s</th>'
                   % (escape(row["name"]), row["outdated"], row["vulnerable"], escape(row["name"])))
        if with_newest:
            if row["newest"]:
                out.append('<td class="newest">%s</td>' % escape(row["newest"]))
            else:
                out.append('<td class="newest norepo" title="not in the repository" data-sort="~">n/a</td>')
        for site in sites:
            cell = row["sites"].get(site["name"])
            if not site["ok"]:
                out.append('<td class="unknown" title="the site failed">?</td>')
            elif cell is None:
                out.append('<td class="absent" title="not installed" data-sort="~">&middot;</td>')
            else:
                classes = [c for c, on in (("old", cell["outdated"]), ("vuln", cell["vulnerabilities"])) if on]
                title = "; ".join("%s: %s" % (v["type"], v["url"]) for v in cell["vulnerabilities"])
                tags = "".join('<span class="tag">%s</span>' % tag for tag in
                               ("old" if cell["outdated"] else "", "vulnerable" if title else "") if tag)
                out.append('<td%s%s>%s%s</td>' % (' class="%s"' % " ".join(classes) if classes else "",
                                                   ' title="%s"' % escape(title) if title else "",
                                                   escape(cell["version"]), tags))
        out.append('</tr>')
    out.append('</tbody><tfoot>')
    for label, field in (("installed", "packages"), ("outdated", "outdated"), ("vulnerable", "vulnerable")):
        out.append('<tr><th scope="row" class="pkg">%s</th>%s' % (label, '<td class="newest"></td>'
                                                                   if with_newest else ""))
        out += ['<td>%s</td>' % (site[field] if site["ok"] else "?") for site in sites]
        out.append('</tr>')
    out.append('</tfoot></table></div>')
    failed = [s for s in sites if not s["ok"]]
    if failed:
        out.append('<h2>Failed sites</h2><ul class="failed">')
        out += ['<li><b>%s</b> (%s): %s</li>' % (escape(s["name"]), escape(s["source"]), escape(s["error"] or ""))
                for s in failed]
        out.append('</ul>')
    vulnerable = [(row["name"], site, cell) for row in report["packages"]
                  for site, cell in row["sites"].items() if cell["vulnerabilities"]]
    if vulnerable:
        out.append('<h2>Vulnerabilities</h2><ul class="vulns">')
        for name, site, cell in vulnerable:
            for v in cell["vulnerabilities"]:
                out.append('<li>%s %s on %s: %s (%s %s), see <a href="%s">%s</a></li>' % tuple(
                    escape(x) for x in (name, cell["version"], site, v["type"], name, v["constraint"],
                                        v["url"], v["url"])))
        out.append('</ul>')
    out.append('<script>%s</script>' % HTML_SCRIPT)
    out.append('</body></html>')
    return "\n".join(out) + "\n"


def render(report: dict, form: str) -> str:
    if form == "json":
        import json
        return json.dumps(report, indent=2, sort_keys=True) + "\n"
    return render_html(report) if form == "html" else render_text(report)


def write_output(path: str, text: str) -> None:
    """Replace ``path`` whole (temporary file beside it, then rename), so that a web
    server or a reader never sees half a report."""
    import tempfile
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".siteStatus.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


# -- command line ------------------------------------------------------------------------

SITES_HELP = """The sites file: one site per line, '#' starts a comment line.
  NAME local:PATH        a pm root on this machine (pm --json list-installed is run on it)
  NAME cmd:COMMAND ...   a shell command printing pm's --json list-installed document, e.g.
                         ral cmd:ssh sgm@ce.example.org pm --root /sw/vo --json list-installed
NAME is unique and has no spaces.  One job per site at a time, --jobs sites at once.

Exit status: 0 every site answered, 1 a site failed (still reported), 2 usage,
3 a bad or missing sites file, vulnerability list or repository."""


def parse_arguments(argv: list):
    import argparse
    parser = argparse.ArgumentParser(
        prog="siteStatus.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Which version of which package is installed on which site: asks every site "
                    "of SITES for pm's\nlist of installed packages and renders a package x site table.",
        epilog=SITES_HELP)
    parser.add_argument("sites", metavar="SITES", help="the sites file (described below)")
    parser.add_argument("--format", choices=("text", "json", "html"), default="text")
    parser.add_argument("-o", "--output", metavar="FILE", help="write the report here (default: stdout)")
    parser.add_argument("--vulns", metavar="FILE|URL", help="mark versions this vulnerability list names")
    parser.add_argument("--repo", metavar="DIR|URL",
                        help="mark versions older than the newest in this repository's index")
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS, metavar="N", help="sites asked at once")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help="how long one site may take")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        raise pm.UsageError("--jobs must be at least 1")
    return args


def main(argv: list | None = None) -> int:
    import time
    try:
        args = parse_arguments(sys.argv[1:] if argv is None else argv)
        sites = read_sites(args.sites)
        vulnerabilities = None
        if args.vulns:
            data = pm.read_location(args.vulns, "vulnerability list", pm.MAX_VULNERABILITY_LIST)
            vulnerabilities = pm.VulnerabilityList(args.vulns, data.decode("utf-8", "replace"))
            for number, problem in vulnerabilities.malformed:
                sys.stderr.write("siteStatus: warning: %s line %d: %s\n" % (args.vulns, number, problem))
        newest = newest_versions(args.repo) if args.repo else None
        results = query_sites(sites, args.jobs, args.timeout)
        generated = float(os.environ.get("SOURCE_DATE_EPOCH") or time.time())
        report = build_report(results, newest, vulnerabilities, generated, args.repo)
        text = render(report, args.format)
        if args.output:
            write_output(args.output, text)
        else:
            sys.stdout.write(text)
    except pm.PmError as e:
        sys.stderr.write("siteStatus: error: %s\n" % e.message)
        return e.exit_code
    except OSError as e:
        sys.stderr.write("siteStatus: error: %s\n" % (e.strerror or e))
        return pm.EXIT_FAILED
    for result in results:
        if not result.ok:
            sys.stderr.write("siteStatus: %s failed: %s\n" % (result.site.name, result.error))
    return pm.EXIT_FAILED if any(not r.ok for r in results) else pm.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
