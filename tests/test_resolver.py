"""SPEC §10: pm's resolver, one case per file in tests/resolver/ (as apk-tools' solver
tests): a repository, what is installed, a command, and the result or the explanation.

A case file reads:

    # what the case shows
    repository:
      app 2.0 -> lib >=1,<2; tool        dependencies, separated by ';'
      chrony 4.0 -> !ntp *               a conflict
      busybox 1.36 -> +sh                a name it provides
      secret 1.0 @hidden                 hidden: no candidate unless named
      tool 2.0 @arch=riscv64             built for one architecture
    architecture: x86_64                 the root's (default: any candidate is offered)
    installed:
      lib 1.0
    file:                               package files given on the command line
      lib 1.1
    command: install app --pre          or: upgrade [NAME...]
    result:                             every package installed afterwards
      app 2.0
      lib 1.5
    error:                              instead of result: lines the message contains
      no acceptable version of lib

Plus a property test: on generated repositories pm's resolver finds a solution exactly
when resolvelib (the reference) does — an exhaustive search settles the cases
where resolvelib is known to be wrong — and every solution it finds holds.
"""

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import pm

CASES = sorted((Path(__file__).parent / "resolver").glob("*.case"))


def parse_package(line):
    head, _, relations = line.partition("->")
    words = head.split()
    manifest = {"package": words[0], "version": words[1]}
    if "@hidden" in words[2:]:
        manifest["hidden"] = True
    for word in words[2:]:
        if word.startswith("@arch="):
            manifest["architecture"] = word[len("@arch="):]
    for item in filter(None, (r.strip() for r in relations.split(";"))):
        if item == "@hidden":
            manifest["hidden"] = True
        elif item.startswith("+"):
            manifest.setdefault("provides", []).append(item[1:])
        elif item.startswith("!"):
            name, _, constraint = item[1:].partition(" ")
            manifest.setdefault("conflicts", {})[name] = constraint.strip() or "*"
        else:
            name, _, constraint = item.partition(" ")
            manifest.setdefault("dependencies", {})[name] = constraint.strip() or "*"
    pm.validate_manifest(manifest)
    return manifest


def read_case(path):
    case = {"repository": [], "installed": [], "file": [], "command": None, "result": None, "error": None,
            "architecture": None}
    section = None
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not raw.startswith(" "):
            key, _, rest = line.partition(":")
            section = key.strip()
            assert section in case, "%s: unknown section %r" % (path.name, section)
            if section == "command":
                case["command"] = rest.split()
            elif section == "architecture":
                case["architecture"] = rest.strip()
            elif section in ("result", "error"):
                case[section] = []
            continue
        case[section].append(line.strip())
    return case


def resolve_case(case):
    """Run the case's command through the functions pm install / pm upgrade use."""
    pool = pm.Pool(case.get("architecture"))
    for line in case["installed"]:
        pool.add(pm.Candidate(parse_package(line), installed=True))
    for line in case.get("file", ()):
        pool.add(pm.Candidate(parse_package(line), package="a package file"))
    for line in case["repository"]:
        pool.add(pm.Candidate(parse_package(line), source="repository", entry={}))
    command, *arguments = case["command"]
    options = {a for a in arguments if a.startswith("--")}
    words = [a for a in arguments if not a.startswith("--")]
    pre, same = "--pre" in options, "--allow-same-version" in options
    if command == "install":
        requests = [pm.parse_spec(w) for w in words]
        chosen, _ = pm.resolve_requests(pool, requests, pre=pre, allow_downgrade=same)
    else:
        assert command == "upgrade", command
        chosen, _ = pm.resolve_requests(pool, [], upgrade=set(words) or True, pre=pre)
    return sorted("%s %s" % (c.name, c.version) for c in chosen.values())


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_resolver_case(path):
    case = read_case(path)
    assert (case["result"] is None) != (case["error"] is None), "a case has a result or an error"
    if case["result"] is not None:
        assert resolve_case(case) == sorted(case["result"])
    else:
        with pytest.raises(pm.Unsatisfiable) as raised:
            resolve_case(case)
        for expected in case["error"]:
            assert expected in raised.value.message, raised.value.message


def test_every_case_file_is_collected():
    assert len(CASES) >= 12


def test_backjumping_skips_decisions_that_did_not_cause_the_failure():
    """Twelve unrelated packages of ten versions each sit between the two requirements
    that clash: retrying them in turn would take 10**12 tries."""
    lines = ["app %d.0 -> lib >=2" % v for v in (1, 2)] + ["tool 1.0 -> lib <2", "lib 1.0", "lib 2.0"]
    lines += ["filler%02d %d.0" % (n, v) for n in range(12) for v in range(1, 11)]
    case = {"repository": lines, "installed": [],
            "command": ["install", "app"] + ["filler%02d" % n for n in range(12)] + ["tool"]}
    with pytest.raises(pm.Unsatisfiable) as raised:
        resolve_case(case)
    assert "no acceptable version of lib" in raised.value.message


def test_a_long_chain_resolves_without_recursion_limits():
    lines = ["p%04d 1.0 -> p%04d ^1" % (n, n + 1) for n in range(3000)] + ["p3000 1.0"]
    case = {"repository": lines, "installed": [], "command": ["install", "p0000"]}
    assert len(resolve_case(case)) == 3001


def test_the_work_is_bounded():
    pool = pm.Pool()
    for line in ["app %d.0 -> lib >=2" % v for v in range(1, 40)] + ["tool 1.0 -> lib <2", "lib 1.0", "lib 2.0"]:
        pool.add(pm.Candidate(parse_package(line), source="r", entry={}))
    resolver = pm.Resolver(pool, upgrade={"app"}, max_steps=10)
    with pytest.raises(pm.Unsatisfiable) as raised:
        resolver.resolve([pm.parse_spec("tool"), pm.parse_spec("app")])
    assert "gave up after 10 steps" in raised.value.message


# -- property: pm's resolver agrees with resolvelib ------------------------------------------

CONSTRAINT_KINDS = ("*", ">={v}", "<{v}", "=={v}", "^{v}", ">={v},<{w}", "!={v}")


@st.composite
def repositories(draw):
    """A few packages with up to four versions each; each version depends on some other
    packages with a range of constraint kinds; one to three requested names."""
    names = ["p%d" % i for i in range(draw(st.integers(2, 6)))]
    repository = []
    for name in names:
        for major in sorted(draw(st.sets(st.integers(1, 4), min_size=1, max_size=4))):
            dependencies = {}
            for other in draw(st.lists(st.sampled_from(names), max_size=3, unique=True)):
                v, w = sorted(draw(st.lists(st.integers(1, 5), min_size=2, max_size=2)))
                kind = draw(st.sampled_from(CONSTRAINT_KINDS))
                dependencies[other] = kind.format(v="%d.0" % v, w="%d.0" % max(w, v + 1))
            repository.append({"package": name, "version": "%d.0" % major, "dependencies": dependencies})
    requested = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
    return repository, requested


def resolvelib_solvable(repository, requested):
    """True, False, or None when resolvelib gives up (it may recurse without end on
    some cycles)."""
    import resolvelib

    by_name = {}
    for manifest in repository:
        by_name.setdefault(manifest["package"], []).append(manifest)

    class Provider(resolvelib.AbstractProvider):
        def identify(self, requirement_or_candidate):
            return requirement_or_candidate[0]

        def get_preference(self, identifier, *args, **kwargs):
            return identifier

        def find_matches(self, identifier, requirements, incompatibilities):
            bad = {c[1] for c in incompatibilities[identifier]}
            found = [(identifier, m["version"]) for m in by_name.get(identifier, [])
                     if m["version"] not in bad and all(self.is_satisfied_by(r, (identifier, m["version"]))
                                                        for r in requirements[identifier])]
            return sorted(found, key=lambda c: pm.Version.parse(c[1]).key, reverse=True)

        def is_satisfied_by(self, requirement, candidate):
            return pm.Constraint.parse(requirement[1]).allows(pm.Version.parse(candidate[1]))

        def get_dependencies(self, candidate):
            manifest = next(m for m in by_name[candidate[0]] if m["version"] == candidate[1])
            return sorted(manifest["dependencies"].items())

    try:
        resolvelib.Resolver(Provider(), resolvelib.BaseReporter()).resolve(
            [(name, "*") for name in requested], max_rounds=2000)
        return True
    except resolvelib.ResolutionImpossible:
        return False
    except (resolvelib.ResolutionTooDeep, RecursionError):
        return None


def exhaustively_solvable(repository, requested):
    """The plain truth for tiny repositories: try every choice of one version or none per
    name.  Used where resolvelib and pm disagree, because resolvelib's backjumping can
    report a solvable problem as impossible (sarugaku/resolvelib#206)."""
    import itertools
    by_name = {}
    for manifest in repository:
        by_name.setdefault(manifest["package"], []).append(manifest)
    names = sorted(by_name)
    for choice in itertools.product(*[[None] + by_name[n] for n in names]):
        chosen = dict(zip(names, choice))
        if any(chosen[n] is None for n in requested):
            continue
        if all(dep in chosen and chosen[dep] is not None and
               pm.Constraint.parse(text).allows(pm.Version.parse(chosen[dep]["version"]))
               for manifest in chosen.values() if manifest is not None
               for dep, text in manifest["dependencies"].items()):
            return True
    return False


EXAMPLES = int(os.environ.get("PM_RESOLVER_EXAMPLES") or (1000 if os.environ.get("PM_TEST_ALL") == "1" else 100))


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(repositories())
def test_the_resolver_agrees_with_resolvelib(generated):
    repository, requested = generated
    pool = pm.Pool()
    for manifest in repository:
        pool.add(pm.Candidate(manifest, source="r", entry={}))
    reference = resolvelib_solvable(repository, requested)
    try:
        chosen, _ = pm.resolve_requests(pool, [pm.parse_spec(name) for name in requested])
    except pm.Unsatisfiable as e:
        if reference is True or reference is None:
            assert not exhaustively_solvable(repository, requested), \
                "pm found no solution, but there is one: %s" % e.message
        return
    if reference is False:
        assert exhaustively_solvable(repository, requested), "pm found a solution where none exists"
    for name in requested:
        assert name in chosen
    for candidate in chosen.values():
        for dependency, constraint in candidate.dependencies.items():
            assert dependency in chosen and constraint.allows(chosen[dependency].version), \
                "%s needs %s %s" % (candidate.describe(), dependency, constraint)
