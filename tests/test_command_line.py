"""SPEC §7: the command line.  pm builds only the options of the command being run; what it
parses, and every usage error, must be exactly what the whole command line gives."""

import pytest

import pm


def whole(argv):
    parser = pm.build_parser()
    try:
        return vars(parser.parse_args(argv))
    except pm.UsageError as e:
        return "usage error: %s" % pm._explain_usage_error(parser, argv, e).message


def as_run(argv):
    try:
        args = pm.parse_arguments(argv)
    except pm.UsageError as e:
        return "usage error: %s" % e.message
    expected = whole(argv)
    return {k: v for k, v in vars(args).items() if k in expected}


@pytest.mark.parametrize("argv", [
    ["install", "a.tar", "--dry-run"],
    ["--root", "install", "list-installed"],          # an option's value that names a command
    ["--wait", "3", "--repository", "uninstall", "uninstall", "--purge", "x"],
    ["-v", "--json", "verify", "a", "b"],
    ["opm", "node", "add", "n01", "--role", "client"],
    ["opm", "request", "n01", "hello", "post-install", "--oda", "sqlite:///x"],
    ["install"],                                       # usage errors
    ["install", "--bogus", "a.tar"],
    ["opm", "node", "add", "n01"],
    ["bogus", "x"],
    ["--root"],
])
def test_the_command_being_run_parses_exactly_as_the_whole_command_line(argv):
    assert as_run(argv) == whole(argv)


def test_only_the_command_being_run_is_built():
    parser = pm.build_parser("files")
    commands = next(a for a in parser._actions if a.dest == "command")
    assert commands.choices["files"]._actions != []
    assert [a.dest for a in commands.choices["install"]._actions] == []


def test_a_wrong_guess_of_the_command_still_runs_the_command_given(monkeypatch):
    # As if --root took no value: "install" looks like the command; it is --root's value.
    monkeypatch.setattr(pm, "_OPTIONS_WITH_VALUES", ())
    args = pm.parse_arguments(["--root", "install", "list-installed"])
    assert (args.command, args.root, args.func) == ("list-installed", "install", pm.cmd_list_installed)
