"""pm.py reads top to bottom: its contents list names its sections as they are, and no
section uses a name defined in a later one (issue 12).  The planner, in particular, asks
the tree only through a TreeView and never reaches for the Operations or the command
line."""

import ast
import os
import re

import pytest

PM = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pm.py")
HEADER = re.compile(r"^# (\d+)\. (.+)$")


@pytest.fixture(scope="module")
def source():
    with open(PM, encoding="utf-8") as f:
        return f.read()


def sections(text):
    """[(number, title, first line)] of the section headers."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        match = HEADER.match(line)
        if match:
            found.append((int(match.group(1)), match.group(2), number))
    return found


def section_of(line, headers):
    return max((n for n, _, first in headers if first <= line), default=0)


def test_the_contents_list_names_every_section_in_order(source):
    headers = sections(source)
    assert [n for n, _, _ in headers] == list(range(1, len(headers) + 1))
    docstring = ast.get_docstring(ast.parse(source))
    listed = re.findall(r"^\s+(\d+)\. ([^:\n]+)", docstring, re.M)
    assert [(int(n), title.strip()) for n, title in listed] == \
        [(n, title.split(":")[0].strip()) for n, title, _ in headers]


def used_names(node):
    """Names a definition uses at run time (annotations left out: they are strings)."""
    skip = set()
    for sub in ast.walk(node):
        if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for arg in sub.args.args + sub.args.kwonlyargs + sub.args.posonlyargs:
                if arg.annotation is not None:
                    skip.update(id(n) for n in ast.walk(arg.annotation))
            if sub.returns is not None:
                skip.update(id(n) for n in ast.walk(sub.returns))
        elif isinstance(sub, ast.AnnAssign):
            skip.update(id(n) for n in ast.walk(sub.annotation))
    local = {sub.arg for sub in ast.walk(node) if isinstance(sub, ast.arg)}
    local |= {sub.id for sub in ast.walk(node) if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store)}
    local |= {alias.asname or alias.name.split(".")[0] for sub in ast.walk(node)
              if isinstance(sub, (ast.Import, ast.ImportFrom)) for alias in sub.names}
    if isinstance(node, ast.Assign):
        local = set()
    return {sub.id for sub in ast.walk(node) if isinstance(sub, ast.Name) and id(sub) not in skip
            and isinstance(sub.ctx, ast.Load) and sub.id not in local}


def test_no_section_uses_a_name_defined_in_a_later_one(source):
    headers = sections(source)
    tree = ast.parse(source)
    defined = {}
    for node in tree.body:
        names = []
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names = [node.name]
        elif isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        for name in names:
            defined.setdefault(name, section_of(node.lineno, headers))
    later = []
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Assign)):
            continue
        here = section_of(node.lineno, headers)
        for name in sorted(used_names(node)):
            if defined.get(name, 0) > here:
                later.append("%s (section %d) uses %s (section %d)" % (
                    getattr(node, "name", "line %d" % node.lineno), here, name, defined[name]))
    assert later == []


def test_the_planner_reads_the_tree_only_through_its_view(source):
    headers = sections(source)
    tree = ast.parse(source)
    planning = [n for n, title, _ in headers if title.startswith("Planning")][0]
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Planner":
            assert section_of(node.lineno, headers) == planning
            attributes = {sub.attr for sub in ast.walk(node) if isinstance(sub, ast.Attribute)
                          and isinstance(sub.value, ast.Attribute) and sub.value.attr == "tree"}
            assert attributes <= {"lstat", "digest", "read", "listdir", "link_leaves_root"}
            assert "root" not in {sub.attr for sub in ast.walk(node) if isinstance(sub, ast.Attribute)
                                  and isinstance(sub.value, ast.Name) and sub.value.id == "self"}
            assert "out" not in {sub.attr for sub in ast.walk(node) if isinstance(sub, ast.Attribute)
                                 and isinstance(sub.value, ast.Name) and sub.value.id == "self"}
            break
    else:
        pytest.fail("no Planner class")
