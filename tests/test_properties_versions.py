"""SPEC §5 as properties: pm's versions agree with the semver library, and pm's
constraints agree with a straightforward reference written here from the SPEC's words
(each comparator expanded to plain comparisons made by ``semver.Version.compare``)."""

import re

import semver
from hypothesis import example, given
from hypothesis import strategies as st

import pm
from strategies import any_constraint_texts, any_version_texts, constraint_texts, version_texts


# -- versions ---------------------------------------------------------------------------

def semver_parse(text):
    return semver.Version.parse(text, optional_minor_and_patch=True)


@given(any_version_texts)
@example("1\u0663.0")            # semver before 3.1 reads Unicode digits as digits
@example("1.0\n")
def test_pm_accepts_a_version_exactly_when_semver_does(text):
    try:
        semver_parse(text)
        semver_accepts = text.isascii() and "\n" not in text
    except (ValueError, TypeError):
        semver_accepts = False
    try:
        version = pm.Version.parse(text)
    except pm.InvalidInput:
        assert not semver_accepts or text == "oppm"
        return
    assert semver_accepts or (text == "oppm" and version.unversioned)


@given(version_texts(), version_texts())
def test_versions_order_as_semver_orders_them_ignoring_build_metadata(a, b):
    expected = semver_parse(a).compare(semver_parse(b))
    x, y = pm.Version.parse(a), pm.Version.parse(b)
    assert (x < y, x == y, x > y) == (expected < 0, expected == 0, expected > 0)
    assert (x <= y, x >= y, x != y) == (expected <= 0, expected >= 0, expected != 0)
    if x == y:
        assert hash(x) == hash(y)


@given(version_texts())
def test_partial_versions_equal_their_full_form_and_oppm_sorts_below_every_version(text):
    full = str(semver_parse(text))
    assert pm.Version.parse(text) == pm.Version.parse(full)
    assert pm.Version.parse("oppm") < pm.Version.parse(text)
    assert pm.Version.parse("oppm") != pm.Version.parse(text)


# -- a reference for constraints --------------------------------------------------------

NUMBER = r"(?:0|[1-9][0-9]*)"
IDENT = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
VERSION = r"%s(?:\.%s){0,2}(?:-%s(?:\.%s)*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?" % (NUMBER, NUMBER, IDENT, IDENT)
COMPARISON = re.compile(r"[ \t]*(?:(?P<op>==|!=|>=|<=|=|>|<|\^|~)?[ \t]*(?P<version>%s)"
                        r"|(?P<wildcard>\*|%s\.\*|%s\.%s\.\*))[ \t]*" % (VERSION, NUMBER, NUMBER, NUMBER))
MALFORMED = "malformed"


class Alternative:
    """Plain comparisons ``(op, semver.Version)`` that must all hold, and the releases
    whose pre-releases the alternative names."""

    def __init__(self):
        self.comparisons, self.named = [], set()


def next_line(version, given, caret):
    """The first version past a ^ or ~ range: the range ends below its pre-releases."""
    major, minor, patch = version.major, version.minor, version.patch
    if not caret:                                   # ~1 -> <2, ~1.2 and ~1.2.3 -> <1.3
        upper = (major + 1, 0, 0) if given == 1 else (major, minor + 1, 0)
    elif major or given == 1:                       # ^1.2.3 -> <2, ^0 -> <1
        upper = (major + 1, 0, 0)
    elif minor or given == 2:                       # ^0.2.3 -> <0.3, ^0.0 -> <0.1
        upper = (0, minor + 1, 0)
    else:                                           # ^0.0.3 -> <0.0.4
        upper = (0, 0, patch + 1)
    return semver.Version(*upper, prerelease="0")


def reference_parse(text):
    """None (any version), a list of Alternatives, or MALFORMED."""
    if "\n" in text or "\r" in text:
        return MALFORMED
    if text.strip(" \t") in ("", "*", "oppm", "/"):
        return None
    result = []
    for alternative_text in text.split("||"):
        alternative = Alternative()
        for part in alternative_text.split(","):
            match = COMPARISON.fullmatch(part)
            if not match:
                return MALFORMED
            if match.group("wildcard"):
                fixed = [int(n) for n in match.group("wildcard").split(".")[:-1]]
                if fixed:
                    low = semver.Version(*(fixed + [0, 0])[:3])
                    high = semver.Version(fixed[0] + 1, 0, 0, "0") if len(fixed) == 1 else \
                        semver.Version(fixed[0], fixed[1] + 1, 0, "0")
                    alternative.comparisons += [(">=", low), ("<", high)]
                continue
            op, version_text = match.group("op") or ">=", match.group("version")
            version = semver_parse(version_text)
            if version.prerelease:
                alternative.named.add((version.major, version.minor, version.patch))
            given = len(version_text.split("+")[0].split("-")[0].split("."))
            if op in ("^", "~"):
                alternative.comparisons += [(">=", version), ("<", next_line(version, given, op == "^"))]
            else:
                alternative.comparisons.append(("==" if op == "=" else op, version))
        result.append(alternative)
    return result


HOLDS = {"==": lambda c: c == 0, "!=": lambda c: c != 0, ">=": lambda c: c >= 0, ">": lambda c: c > 0,
         "<=": lambda c: c <= 0, "<": lambda c: c < 0}


def reference_allows(alternatives, version_text, pre):
    """SPEC §5: "oppm" satisfies everything; a pre-release only when asked for (--pre) or
    when the alternative names a pre-release of the same major.minor.patch."""
    if version_text == "oppm":
        return True
    version = semver_parse(version_text)
    is_pre = bool(version.prerelease)
    if alternatives is None:
        return pre or not is_pre
    for alternative in alternatives:
        if is_pre and not pre and (version.major, version.minor, version.patch) not in alternative.named:
            continue
        if all(HOLDS[op](version.compare(bound)) for op, bound in alternative.comparisons):
            return True
    return False


def test_the_reference_reads_the_examples_of_the_spec():
    def allows(text, version, pre=False):
        return reference_allows(reference_parse(text), version, pre)
    assert allows(">=1.2,<2", "1.5") and not allows(">=1.2,<2", "2.0")
    assert allows("1.2", "1.3") and not allows("1.2", "1.1")               # bare X means >=X
    assert allows("<1 || >=2", "2.1") and not allows("<1 || >=2", "1.5")
    assert allows("1.*", "1.9.9") and not allows("1.*", "2.0.0-rc")
    assert allows("^1.2", "1.9") and not allows("^1.2", "2.0")
    assert allows("~1.2", "1.2.9") and not allows("~1.2", "1.3")
    assert not allows(">=1.0", "1.5.0-beta") and allows(">=1.0", "1.5.0-beta", pre=True)
    assert allows(">=1.5.0-alpha", "1.5.0-beta") and not allows(">=1.5.0-alpha", "1.6.0-beta")
    assert allows("*", "0.1") and allows("oppm", "7") and allows("=1.0", "oppm")
    assert reference_parse(">=>1") is MALFORMED and reference_parse("1.0 2.0") is MALFORMED


# -- pm against the reference -----------------------------------------------------------

@given(any_constraint_texts, st.lists(st.one_of(version_texts(), st.just("oppm")), min_size=1, max_size=8))
@example("\u00b2.*", ["1.0"])
@example("1.0 2.0", ["1.0"])
def test_constraints_parse_and_match_as_the_reference_says(text, versions):
    expected = reference_parse(text)
    try:
        constraint = pm.Constraint.parse(text, "libfoo")
    except pm.InvalidInput as e:
        assert expected is MALFORMED, "pm refused %r: %s" % (text, e.message)
        assert "libfoo" in e.message and repr(text) in e.message
        return
    assert expected is not MALFORMED, "pm accepted %r" % text
    named = [v for v in re.findall(VERSION, text)]            # the boundaries themselves
    versions = versions + named + [v.split("+")[0] + "-rc.1" for v in named if "-" not in v]
    for version in versions:
        for pre in (False, True):
            assert constraint.allows(pm.Version.parse(version), pre) == reference_allows(expected, version, pre), \
                (text, version, pre)


@given(constraint_texts())
def test_every_constraint_of_the_grammar_is_accepted(text):
    assert reference_parse(text) is not MALFORMED
    pm.Constraint.parse(text, "libfoo")


@given(st.text(max_size=20))
def test_any_text_is_a_constraint_or_invalid_input_naming_the_package(text):
    try:
        pm.Constraint.parse(text, "libfoo")
    except pm.InvalidInput as e:
        assert "libfoo" in e.message
        assert reference_parse(text) is MALFORMED
    else:
        assert reference_parse(text) is not MALFORMED


@given(version_texts(), st.sampled_from(["=", "==", ">=", "<=", "^", "~", ""]))
def test_a_constraint_naming_a_version_allows_that_version(version, op):
    assert pm.Constraint.parse(op + version, "libfoo").allows(pm.Version.parse(version))
