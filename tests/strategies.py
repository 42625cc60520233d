"""Hypothesis strategies for the property tests: versions and constraints from SPEC §5
(valid ones and near misses), manifests from manifest_schema.json (valid ones and each
field broken in the ways the schema tells apart), and JSON-like values for Lua literals."""

import string

from hypothesis import strategies as st

# -- versions -------------------------------------------------------------------------

# Small numbers, so that generated versions and constraints often meet.
numbers = st.one_of(st.integers(0, 3), st.integers(0, 3), st.integers(0, 12))
pre_identifiers = st.sampled_from(["alpha", "beta", "rc", "0", "1", "2", "10", "x-y", "0a", "-", "a1"])
prereleases = st.lists(pre_identifiers, min_size=1, max_size=3).map(".".join)
builds = st.lists(st.sampled_from(["build", "1", "001", "sha-5", "x"]), min_size=1, max_size=2).map(".".join)


@st.composite
def version_texts(draw, partial=True, pre=True):
    """A valid version: 1 to 3 numbers (3 unless ``partial``), maybe -pre and +build."""
    count = draw(st.integers(1, 3)) if partial else 3
    text = ".".join(str(draw(numbers)) for _ in range(count))
    if pre and draw(st.integers(0, 3)) == 0:
        text += "-" + draw(prereleases)
    if draw(st.integers(0, 5)) == 0:
        text += "+" + draw(builds)
    return text


# Characters that matter to the version and constraint grammars, and a few that must not.
GRAMMAR_CHARS = "0123456789.-+*,|<>=!^~ \tabx\n\u0663\u00b2/"


@st.composite
def near_misses(draw, valid):
    """A valid text with one or two small edits (insert, delete, replace, duplicate)."""
    text = draw(valid)
    for _ in range(draw(st.integers(1, 2))):
        i = draw(st.integers(0, len(text)))
        edit = draw(st.sampled_from(["insert", "delete", "replace", "duplicate"]))
        c = draw(st.sampled_from(GRAMMAR_CHARS))
        if edit == "insert":
            text = text[:i] + c + text[i:]
        elif edit == "delete":
            text = text[:i] + text[i + 1:]
        elif edit == "replace":
            text = text[:i] + c + text[i + 1:]
        else:
            j = draw(st.integers(i, len(text)))
            text = text[:j] + text[i:j] + text[j:]
    return text


any_version_texts = st.one_of(
    version_texts(), version_texts(), near_misses(version_texts()),
    st.text(GRAMMAR_CHARS, max_size=12), st.sampled_from(["oppm", "01.0", "1.0.0.0", " 1.0", "1.0\n", "v1.0",
                                                           "1\u0663.0", "1.0.0-", "1.0.0+", "1.0.0-01", ""]))

# -- constraints ----------------------------------------------------------------------

spaces = st.sampled_from(["", "", "", " ", "\t", "  "])
operators = st.sampled_from(["", "=", "==", ">=", ">", "<=", "<", "!=", "^", "~"])


@st.composite
def comparisons(draw):
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return "*"
    if kind == 1:
        return "%d.*" % draw(numbers)
    if kind == 2:
        return "%d.%d.*" % (draw(numbers), draw(numbers))
    return draw(operators) + draw(spaces) + draw(version_texts())


@st.composite
def alternatives(draw):
    parts = draw(st.lists(comparisons(), min_size=1, max_size=3))
    return "".join((draw(spaces) + "," + draw(spaces) if i else "") + p for i, p in enumerate(parts))


@st.composite
def constraint_texts(draw):
    """A valid constraint of SPEC §5."""
    if draw(st.integers(0, 12)) == 0:
        return draw(spaces) + draw(st.sampled_from(["", "*", "oppm", "/"])) + draw(spaces)
    parts = draw(st.lists(alternatives(), min_size=1, max_size=3))
    text = "".join((draw(spaces) + "||" + draw(spaces) if i else "") + p for i, p in enumerate(parts))
    return draw(spaces) + text + draw(spaces)


any_constraint_texts = st.one_of(
    constraint_texts(), constraint_texts(), near_misses(constraint_texts()), near_misses(constraint_texts()),
    st.text(GRAMMAR_CHARS, max_size=16),
    st.sampled_from([">=>1", "=>1", "1..2", "01.2", ">= *", "1.*.3", "||", ",", "1.0,", "^", "oppm,1",
                     "1.2.3.*", ">=1.*", "\u00b2.*", "1.\u0663.*", "*.*", ".*", "1.0 2.0", "~>1.0", "= =1"]))

# -- package names, paths, manifests ------------------------------------------------------

NAME_CHARS = string.ascii_letters + string.digits + "._+-"
valid_names = st.builds(lambda first, rest: first + rest,
                        st.sampled_from(string.ascii_letters + string.digits),
                        st.text(NAME_CHARS, max_size=12))
bad_names = st.one_of(
    st.sampled_from(["", ".hidden", "-rf", "../evil", "a/b", "evil\n", "x" * 129, "sp ace", "\u00e9t\u00e9",
                     "_x", "+x", "a\x00b"]),
    st.text(NAME_CHARS + "/ \n\u00e9", max_size=10))
names = st.one_of(valid_names, valid_names, bad_names)

PATH_CHARS = "abc./\n\x7f\x1b\u00e9-"
valid_config_paths = st.lists(st.text("abcXYZ0-_.", min_size=1, max_size=6).filter(lambda p: p not in (".", "..")),
                              min_size=1, max_size=4).flatmap(
    lambda parts: st.sampled_from(["", "/"]).map(lambda end: "/" + "/".join(parts) + end))
config_paths = st.one_of(
    valid_config_paths, valid_config_paths,
    st.sampled_from(["/etc/../../x", "etc/x", "/etc/./x", "/", "//etc", "/etc//x", "/etc/x\n", "/..", "/../x/",
                     "", "/etc/\x1b", "/etc/.x", "/etc/..x", "/etc/x..", "/etc/\u00e9", "/etc/\u009b"]),
    st.text(PATH_CHARS, max_size=10))

# Any JSON value, small: for wrong-type fields and unknown keys.
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False, allow_infinity=False),
                         st.text(max_size=5))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)), max_leaves=6)


strings = st.text(max_size=8)
FIELDS = {       # field: (valid values, broken values)
    "manifestVersion": (st.just("1.0"), json_values.filter(lambda v: not isinstance(v, str))),
    "package": (valid_names, st.one_of(bad_names, json_values)),
    "version": (version_texts(), st.one_of(any_version_texts, json_values)),
    "name": (strings, json_values),
    "description": (strings, json_values),
    "authors": (st.one_of(strings, st.lists(strings, max_size=3)),
                st.one_of(json_values, st.lists(json_values, min_size=1, max_size=3))),
    "note": (strings, json_values),
    "hidden": (st.booleans(), json_values),
    "repo": (strings, json_values),
    "dependencies": (st.dictionaries(valid_names, constraint_texts(), max_size=3),
                     st.one_of(st.dictionaries(names, any_constraint_texts, min_size=1, max_size=3),
                               st.dictionaries(valid_names, json_values, min_size=1, max_size=2), json_values)),
    "conflicts": (st.dictionaries(valid_names, constraint_texts(), max_size=3),
                  st.one_of(st.dictionaries(names, any_constraint_texts, min_size=1, max_size=3), json_values)),
    "provides": (st.lists(valid_names, max_size=3), st.one_of(st.lists(names, min_size=1, max_size=3), json_values)),
    "configFiles": (st.lists(valid_config_paths, max_size=3),
                    st.one_of(st.lists(config_paths, min_size=1, max_size=3), json_values)),
    "architecture": (st.sampled_from(["any", "x86_64", "arm-v7.a"]),
                     st.one_of(st.text("ab_.-/ \n", max_size=66), st.just("x" * 65), json_values)),
    "essential": (st.booleans(), json_values),
}


@st.composite
def manifests(draw):
    """A manifest object, often valid, often with one field broken (or missing, when
    required), sometimes with many; unknown keys at times; rarely not an object."""
    if draw(st.integers(0, 30)) == 0:
        return draw(json_values)
    mode = draw(st.sampled_from(["valid", "one-broken", "one-broken", "many-broken"]))
    broken = {draw(st.sampled_from(sorted(FIELDS)))} if mode == "one-broken" else set()
    manifest = {}
    for field, (good, bad) in FIELDS.items():
        required = field in ("package", "version")
        if field in broken and required and draw(st.booleans()):
            continue                                        # a missing required field
        if not required and field not in broken and draw(st.booleans()):
            continue                                        # an optional field left out
        if mode == "many-broken" and draw(st.integers(0, 3)) == 0:
            broken.add(field)
        manifest[field] = draw(bad if field in broken else good)
    extra = draw(st.dictionaries(st.text(max_size=6).filter(lambda k: k not in FIELDS), json_values, max_size=2))
    manifest.update(extra)
    return manifest


# -- values for Lua literals ----------------------------------------------------------

lua_scalars = st.one_of(
    st.booleans(), st.integers(-2 ** 63, 2 ** 63 - 1), st.integers(-10, 10), st.sampled_from([-2 ** 63, 2 ** 63 - 1]),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
identifier_keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
lua_keys = st.one_of(identifier_keys, st.text(max_size=8))
lua_values = st.recursive(lua_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(lua_keys, inner, max_size=4)), max_leaves=12)
