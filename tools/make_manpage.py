#!/usr/bin/env python3
"""make_manpage: write pm's man page (roff, section 1) from its command-line parser.

usage: make_manpage.py [-o FILE]       (default: docs/pm.1 beside this repository's pm.py)

The commands, their options and help texts come from pm.build_parser(), as `pm -h`
and `pm completion` do, so the page cannot drift from the program; the exit codes,
files and environment are pm's own constants.  `python3 tools/make_manpage.py` after a
change to the command line; a test checks that docs/pm.1 is what this writes.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import pm  # noqa: E402

DEFAULT_OUTPUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "pm.1")


def roff(text):
    """Text safe in a roff line: backslashes doubled, a leading dot or quote escaped."""
    text = str(text).replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text[:1] in (".", "'") else text


def option_text(strings, value, choices):
    if not value:
        shown = strings
    else:
        placeholder = "{%s}" % ",".join(choices) if choices else value
        shown = ["%s %s" % (s, placeholder) for s in strings]
    return ", ".join("\\fB%s\\fR" % roff(s) for s in shown)


def page():
    parser = pm.build_parser()
    tree = pm.parser_tree(parser)
    top_options = tree[0][2]
    lines = ['.TH PM 1 "" "pm %s" "User Commands"' % pm.__version__,
             ".SH NAME", "pm \\- a small, careful package manager for tar\\-container packages",
             ".SH SYNOPSIS", ".B pm", "[\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR] [\\fIARGUMENTS\\fR]",
             ".SH DESCRIPTION",
             roff("pm installs tar-container packages (a CONTROL/manifest and a DATA/ tree) into a live root "
                  "or an image directory, records every file it owns, resolves versions and dependencies from "
                  "its sources, keeps configuration files, rehearses every change with --dry-run, and leaves "
                  "the old state or the new one after a failure or a kill at any instant."),
             ".SH GLOBAL OPTIONS", "Global options may come before or after the command."]
    for strings, help_text, value, choices in top_options:
        lines += [".TP", option_text(strings, value, choices), roff(help_text)]
    lines.append(".SH COMMANDS")
    for path, sub, options, subcommands, values in tree[1:]:
        usage = " ".join(sub.format_usage().split()[1:])     # "pm install [-h] ..."
        aliases = [a for a, c in pm.COMMAND_ALIASES.items() if (c,) == path]
        lines += [".SS %s" % roff(" ".join(path)), ".nf", roff(usage), ".fi"]
        if sub.description:
            lines += [".PP", roff(sub.description)]
        if aliases:
            lines += [".PP", "Also: %s." % ", ".join("\\fB%s\\fR" % a for a in aliases)]
        own = [o for o in options if o not in top_options]
        for strings, help_text, value, choices in own:
            lines += [".TP", option_text(strings, value, choices), roff(help_text)]
    lines += [".SH EXIT STATUS", ".TP", "0", "done, also when there was nothing to do",
              ".TP", "1", "refused or failed (a missing dependency, a conflict, a downgrade, a failing script, "
              "a question answered no, search or owner finding nothing)",
              ".TP", "2", "usage error", ".TP", "3",
              "invalid input: a bad or hostile package, manifest, index or configuration file; nothing was changed",
              ".TP", "4", "the root's lock was held past \\-\\-wait", ".TP", "5", "verify found damage",
              ".TP", str(pm.EXIT_INTERRUPTED), "interrupted (Ctrl\\-C), after an unfinished change was rolled back",
              ".SH ENVIRONMENT", ".TP", ".B PM_ROOT", "the root when \\-\\-root is not given (default /)",
              ".TP", ".B PM_ODA", "the ODA of pm opm when \\-\\-oda is not given",
              ".SH FILES"]
    for path, what in ((pm.SOURCES_LIST, "the sources, one directory or URL per line"),
                       (pm.SOURCES_DIR + "/*.list", "more sources"),
                       (pm.PM_CONF, "settings: oda, vulnerabilities, check_vulnerabilities, architecture"),
                       (pm.OPM_CONF, "the OPM role and name of this node"),
                       (pm.DB_DIR, "the database, the lock, the journal and the kept package scripts"),
                       (pm.CACHE_DIR, "downloaded indexes and packages (pm clean empties the package cache)")):
        lines += [".TP", ".I ROOT%s" % roff(path), roff(what)]
    lines += [".SH SEE ALSO", roff("The user guide in docs/ of pm's repository (docs/commands.md: every "
                                   "command's JSON document); pm completion bash|zsh."), ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="make_manpage.py", description="write pm's man page from its parser")
    parser.add_argument("-o", "--output", default=DEFAULT_OUTPUT, metavar="FILE", help="default: docs/pm.1")
    args = parser.parse_args(argv)
    text = page()
    if args.output == "-":
        sys.stdout.write(text)
        return 0
    temporary = args.output + ".tmp"
    with open(temporary, "w") as f:
        f.write(text)
    os.replace(temporary, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
