"""Shell completion for bash and zsh and the man page, all generated from pm's own
argument parser: they offer every command, alias and option the parser has, and the man
page shipped in the sdist is the one tools/make_manpage.py writes."""

import shutil
import subprocess
import sys

import pytest

import pm
from conftest import PM, REPO


def completion(shell):
    proc = subprocess.run([sys.executable, str(PM), "completion", shell], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def bash_complete(script, tmp_path, *words):
    """What bash offers after ``words`` (the last one is the word being completed)."""
    (tmp_path / "pm.bash").write_text(script)
    program = ('source "%s"; COMP_WORDS=(%s); COMP_CWORD=%d; _pm; printf "%%s\\n" "${COMPREPLY[@]}"'
               % (tmp_path / "pm.bash", " ".join("'%s'" % w for w in words), len(words) - 1))
    proc = subprocess.run(["bash", "-c", program], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_bash_completion_offers_commands_aliases_options_and_choices(tmp_path):
    script = completion("bash")
    assert bash_complete(script, tmp_path, "pm", "ins") == ["install"]
    assert bash_complete(script, tmp_path, "pm", "li") == ["list", "list-installed"]
    assert bash_complete(script, tmp_path, "pm", "install", "./a.tar", "--no-") == ["--no-deps", "--no-scripts"]
    assert bash_complete(script, tmp_path, "pm", "--root", "x", "list", "--inc") == ["--include-removed"]
    assert bash_complete(script, tmp_path, "pm", "opm", "node", "add", "n1", "--role", "c") == ["client"]
    assert bash_complete(script, tmp_path, "pm", "completion", "") == ["bash", "zsh"]


def test_bash_completion_has_every_command_and_option_of_the_parser(tmp_path):
    script = completion("bash")
    for path, _, options, subcommands, _ in pm.parser_tree(pm.build_parser()):
        offered = bash_complete(script, tmp_path, "pm", *path, "-")
        assert {o for strings, _, _, _ in options for o in strings if o.startswith("-")} <= set(offered), path
        if subcommands:
            assert set(subcommands) <= set(bash_complete(script, tmp_path, "pm", *path, "")), path


def test_bash_completion_offers_installed_package_names(pm, build, root, tmp_path):
    pm("install", build("hello", "1.0", {"/h": "h"}), build("help2man", "1.0", {"/m": "m"}))
    script = completion("bash")
    (tmp_path / "pm.bash").write_text(script)
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "pm").write_text("#!/bin/sh\nexec '%s' '%s' \"$@\"\n" % (sys.executable, PM))
    (shim / "pm").chmod(0o755)
    program = ('PATH="%s:$PATH"; source "%s"; COMP_WORDS=(pm --root "%s" uninstall hel); COMP_CWORD=4; _pm; '
               'printf "%%s\\n" "${COMPREPLY[@]}"' % (shim, tmp_path / "pm.bash", root))
    proc = subprocess.run(["bash", "-c", program], capture_output=True, text=True)
    assert proc.stdout.split() == ["hello", "help2man"]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed (Debian package zsh)")
def test_zsh_completion_loads_and_defines_a_function_per_command(tmp_path):
    (tmp_path / "_pm").write_text(completion("zsh"))
    assert subprocess.run(["zsh", "-n", str(tmp_path / "_pm")]).returncode == 0
    program = ("autoload -U compinit; compinit -u -d %s/zcompdump; source %s/_pm; "
               "whence -w _pm _pm_install _pm_opm_node_add _pm_list_installed" % (tmp_path, tmp_path))
    proc = subprocess.run(["zsh", "-f", "-c", program], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["_pm:", "function", "_pm_install:", "function", "_pm_opm_node_add:", "function",
                                   "_pm_list_installed:", "function"]


def test_the_shipped_man_page_is_the_one_the_generator_writes_from_the_parser():
    proc = subprocess.run([sys.executable, str(REPO / "tools/make_manpage.py"), "-o", "-"], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert (REPO / "docs/pm.1").read_text() == proc.stdout, "run tools/make_manpage.py after changing the parser"
    for path, _, options, _, _ in pm.parser_tree(pm.build_parser())[1:]:
        assert ".SS %s\n" % " ".join(path).replace("-", "\\-") in proc.stdout
        for strings, _, _, _ in options:
            assert strings[0].replace("-", "\\-") in proc.stdout


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_the_man_page_renders_without_warnings():
    proc = subprocess.run(["groff", "-man", "-ww", "-z", str(REPO / "docs/pm.1")], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == ""


def test_the_sdist_ships_the_man_page_license_and_guide(tmp_path):
    import setuptools
    if int(setuptools.__version__.split(".")[0]) < 61:
        pytest.skip("this interpreter's setuptools %s predates pyproject.toml's build requirement "
                    "(setuptools>=61), which pip's isolated build would use" % setuptools.__version__)
    source = tmp_path / "source"
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z"],
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((REPO / name).read_bytes())
    program = ("import sys, os; os.chdir(sys.argv[1]); from setuptools import build_meta; "
               "print(build_meta.build_sdist(sys.argv[2]))")
    proc = subprocess.run([sys.executable, "-c", program, str(source), str(tmp_path / "dist")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    import tarfile
    with tarfile.open(tmp_path / "dist" / proc.stdout.split()[-1]) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    assert {"docs/pm.1", "LICENSE", "docs/commands.md", "docs/packages.md", "pm.py", "tools/repoPackager.py",
            "tools/siteStatus.py", "installer/make_medium.py"} <= names
