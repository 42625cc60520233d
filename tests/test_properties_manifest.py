"""SPEC §4 as properties: pm's manifest verdicts agree with the jsonschema library on
manifest_schema.json, and the Lua literal parser is safe (only InvalidInput, whatever
the text), faithful (literals of random values read back as those values) and bounded
(MAX_MANIFEST_DEPTH, _ITEMS, _STRING, _BYTES)."""

import json

import jsonschema
import msgpack
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import pm
from conftest import REPO
from strategies import any_constraint_texts, any_version_texts, lua_values, manifests, names

SCHEMA = json.loads((REPO / "manifest_schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def pm_verdict(check, value):
    try:
        result = check(value)
    except pm.InvalidInput:
        return False
    if check is pm.parse_manifest:
        msgpack.packb(result)               # what pm accepts, its database can hold
    return True


def agree(manifest):
    expected = VALIDATOR.is_valid(manifest)
    why = [e.message for e in VALIDATOR.iter_errors(manifest)]
    assert pm_verdict(pm.validate_manifest, manifest) == expected, (manifest, why)
    text = json.dumps(manifest).encode()
    assert pm_verdict(pm.parse_manifest, text) == expected, (text, why)


# -- pm against jsonschema --------------------------------------------------------------

def test_the_schema_is_a_valid_draft_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@given(manifests())
@example({"package": "a", "version": "1"})
@example({"package": "a", "version": "1", "configFiles": ["/etc/a/"], "provides": [], "authors": ["x"]})
@example({"package": "a", "version": "1", "hidden": 1})
@example({"package": "a", "version": "1", "authors": [1]})
@example({"version": "1"})
@example([])
def test_pm_and_jsonschema_give_every_manifest_the_same_verdict(manifest):
    agree(manifest)


@given(names)
def test_package_names_agree(name):
    agree({"package": name, "version": "1.0"})
    agree({"package": "a", "version": "1.0", "dependencies": {name: "*"}, "provides": [name]})


@given(any_version_texts)
def test_versions_agree(version):
    agree({"package": "a", "version": version})


@given(any_constraint_texts)
def test_constraints_agree(constraint):
    agree({"package": "a", "version": "1", "dependencies": {"b": constraint}})
    agree({"package": "a", "version": "1", "conflicts": {"b": constraint}})


# -- the Lua literal parser: safe --------------------------------------------------------

LUA_TOKENS = ["{", "}", "[", "]", "[[", "]]", "[==[", "]==]", "=", "==", ",", ";", "--", "--[[", "\n", " ",
              '"', "'", "\\", "\\x4", "\\u{", "\\u{110000}", "\\z", "\\999", "\\65", "1", "0x1F", "1e5", "1e", "0xFFFFFFFFFFFFFFFFFF",
              "-", ".", "..", "true", "false", "nil", "package", "version", "os.execute", "(", ")", "function",
              "end", "\u00e9", "\u0663", "\x00", "\r"]


@given(st.one_of(st.text(), st.lists(st.sampled_from(LUA_TOKENS), max_size=40).map("".join)))
@example("{" * 100_000)
@example("{[" * 10_000)
@example('{ a = "\\')
@example("{ a = [==[ x ]=] }")
def test_the_lua_parser_raises_only_invalid_input_on_any_text(text):
    try:
        value = pm.LuaLiteralParser(text).parse()
    except pm.InvalidInput as e:
        assert "\n" not in e.message
    else:
        assert isinstance(value, dict)


@given(st.binary(max_size=300))
@example(b"\xef\xbb\xbf{}")
@example(b'{"package": "a", "version": "1", "description": "\\ud800"}')
@example(b'{"package": "a", "version": "1", "x": {"\\udfff": 1}}')
@example(b'{"package": "a", "version": "1", "x": 1e999999}')
def test_parse_manifest_raises_only_invalid_input_on_any_bytes(data):
    pm_verdict(pm.parse_manifest, data)


# -- the Lua literal parser: faithful --------------------------------------------------

LUA_KEYWORDS = {"and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if", "in",
                "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while"}
SPACE = st.sampled_from(["", " ", "\n", "\t", "  ", " -- a comment\n", "--[[ a\nblock ]]", "--[==[ ]] ]==] ",
                         "\r\n", "\f"])
SHORT_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\a": "\\a", "\b": "\\b", "\f": "\\f", "\v": "\\v",
                 "\\": "\\\\", '"': '\\"', "'": "\\'"}


def lua_string(text, draw):
    """``text`` as a Lua string literal: quoted with escapes of every kind, or a long bracket."""
    form = draw(st.sampled_from(["double", "single", "long"]))
    if form == "long" and "\r" not in text:        # Lua turns \r in long strings into \n
        level = 0
        while (text + "]" + "=" * level + "]").find("]" + "=" * level + "]") != len(text):
            level += 1
        lead = "\n" if draw(st.booleans()) or text.startswith("\n") else ""   # a first newline is skipped
        return "[" + "=" * level + "[" + lead + text + "]" + "=" * level + "]"
    quote = '"' if form != "single" else "'"
    out = []
    for c in text:
        how = draw(st.integers(0, 3))
        if c in SHORT_ESCAPES and (c in (quote, "\\", "\n", "\r") or how):
            piece = SHORT_ESCAPES[c] if how != 3 or c != "\n" else "\\\n"
        elif how == 1 and ord(c) < 128:
            piece = "\\x%02x" % ord(c)
        elif how == 2 and ord(c) < 128:
            piece = "\\%03d" % ord(c)
        elif how == 3:
            piece = "\\u{%x}" % ord(c)
        else:
            piece = c
        if piece[0] not in " \t\n\r\f\v" and draw(st.integers(0, 20)) == 0:
            out.append("\\z" + draw(st.sampled_from(["", " ", "\n  \t"])))     # skips the spaces after it
        out.append(piece)
    return quote + "".join(out) + quote


def lua_literal(value, draw):
    """A Lua table-constructor literal for a JSON-like value, its spelling drawn at random."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if draw(st.booleans()):
            return ("-" if value < 0 else "") + draw(st.sampled_from(["0x%x", "0X%X"])) % abs(value)
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return lua_string(value, draw)
    fields = []
    if isinstance(value, list):
        explicit = draw(st.booleans())
        for index, item in enumerate(value, 1):
            fields.append(("[%d]%s=%s" % (index, draw(SPACE), draw(SPACE)) if explicit else "") + lua_literal(item, draw))
        if explicit:
            fields = draw(st.permutations(fields))
    else:
        for key, item in value.items():
            if key.isidentifier() and key.isascii() and key not in LUA_KEYWORDS:
                spelled = key
            else:
                literal = lua_string(key, draw)
                space = draw(SPACE) or (" " if literal.startswith("[") else "")    # "[[[" opens a long string
                spelled = "[" + space + literal + draw(SPACE) + "]"
            fields.append(spelled + draw(SPACE) + "=" + draw(SPACE) + lua_literal(item, draw))
    text = ""
    for i, field in enumerate(fields):
        text += draw(SPACE) + field + draw(SPACE)
        if i < len(fields) - 1 or draw(st.booleans()):
            text += draw(st.sampled_from([",", ";"]))
    return "{" + text + draw(SPACE) + "}"


def as_lua_reads_it(value):
    """The value a Lua table literal gives back: an empty list is an empty table ({})."""
    if isinstance(value, list):
        return [as_lua_reads_it(v) for v in value] if value else {}
    if isinstance(value, dict):
        return {k: as_lua_reads_it(v) for k, v in value.items()}
    return value


@given(st.dictionaries(st.text(max_size=8), lua_values, max_size=4), st.data())
def test_lua_literals_of_random_values_read_back_as_those_values(value, data):
    text = data.draw(SPACE) + lua_literal(value, data.draw) + data.draw(SPACE)
    assert pm.LuaLiteralParser(text).parse() == as_lua_reads_it(value)


@given(st.text(max_size=40), st.data())
def test_lua_strings_of_any_text_read_back_as_that_text(text, data):
    literal = lua_string(text, data.draw)
    assert pm.LuaLiteralParser("{ s = %s }" % literal).parse() == {"s": text}


@pytest.mark.parametrize("literal, text", [("[[\nx]]", "x"), ("[[\n\nx]]", "\nx"), ("[==[a]]b]=]]==]", "a]]b]=]"),
                                           ("[[]]", ""), ("'\\z  \n  x'", "x"), ('"\\u{10FFFF}"', "\U0010ffff"),
                                           ('"a\\\nb"', "a\nb"), ("'\\0651'", "A1"), ("[[a\r\nb\n\rc\rd]]", "a\nb\nc\nd"),
                                           ("[[\r\nx]]", "x"), ("[[\r\n\rx]]", "\nx"), ('"a\\\r\nb"', "a\nb")])
def test_lua_strings_read_as_lua_reads_them(literal, text):
    assert pm.LuaLiteralParser("{ s = %s }" % literal).parse() == {"s": text}


any_characters = st.characters(blacklist_categories=())          # surrogates too
wild_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(any_characters, max_size=4)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(any_characters, max_size=4), inner,
                                                                         max_size=3)), max_leaves=8)


@given(wild_values, st.sampled_from(["json", "lua"]), st.data())
@example(2 ** 64, "json", None)
@example("\ud800", "json", None)
def test_whatever_parse_manifest_accepts_the_database_can_hold(value, syntax, data):
    manifest = {"package": "a", "version": "1", "x": value}
    text = json.dumps(manifest).encode() if syntax == "json" else \
        lua_literal(manifest, data.draw).encode("utf-8", "surrogatepass")
    pm_verdict(pm.parse_manifest, text)         # packs with msgpack what it accepts


# -- the Lua literal parser and JSON: bounded -------------------------------------------

def wrap(value, levels, draw):
    for _ in range(levels):
        value = [value] if draw(st.booleans()) else {"k": value}
    return value


def depth(value):
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


def manifest_with(extra, syntax, draw):
    manifest = {"package": "a", "version": "1", "x": extra}
    return (json.dumps(manifest) if syntax == "json" else lua_literal(manifest, draw)).encode()


@given(lua_values, st.integers(0, pm.MAX_MANIFEST_DEPTH + 2), st.sampled_from(["lua", "json"]), st.data())
def test_manifests_nested_deeper_than_the_bound_are_refused_in_both_syntaxes(value, levels, syntax, data):
    extra = wrap(value, levels, data.draw)
    allowed = 1 + depth(extra) <= pm.MAX_MANIFEST_DEPTH      # the manifest's own table is the first level
    assert pm_verdict(pm.parse_manifest, manifest_with(extra, syntax, data.draw)) == allowed


@pytest.mark.parametrize("syntax", ["lua", "json"])
@pytest.mark.parametrize("over", [0, 1])
def test_the_item_bound_holds_in_both_syntaxes(syntax, over):
    # the manifest table, its three values, and the values of x
    items = [1] * (pm.MAX_MANIFEST_ITEMS - 4 + over)
    data = ('{"package": "a", "version": "1", "x": %s}' % json.dumps(items) if syntax == "json" else
            '{ package = "a", version = "1", x = {%s} }' % ",".join(map(str, items))).encode()
    assert pm_verdict(pm.parse_manifest, data) == (not over)


@pytest.mark.parametrize("spelling", ["json", "double", "long", "escapes"])
@pytest.mark.parametrize("over", [0, 1])
def test_the_string_bound_holds_in_every_spelling(spelling, over):
    text = "n" * (pm.MAX_MANIFEST_STRING + over)
    literal = {"json": json.dumps(text), "double": '"%s"' % text, "long": "[[%s]]" % text,
               "escapes": '"%s%s"' % (text[1000:], "\\110\\x6e" * 500)}[spelling]
    data = ('{"package": "a", "version": "1", "note": %s}' if spelling == "json" else
            '{ package = "a", version = "1", note = %s }') % literal
    assert pm_verdict(pm.parse_manifest, data.encode()) == (not over)


@pytest.mark.parametrize("spelling", ["json", "decimal", "hex"])
@pytest.mark.parametrize("number", [2 ** 63 - 1, 2 ** 63, -2 ** 63, -2 ** 63 - 1])
def test_integers_beyond_64_bits_are_refused_in_every_spelling(spelling, number):
    literal = {"json": str(number), "decimal": str(number), "hex": ("-" if number < 0 else "") + hex(abs(number))}
    data = ('{"package": "a", "version": "1", "x": %s}' if spelling == "json" else
            '{ package = "a", version = "1", x = %s }') % literal[spelling]
    assert pm_verdict(pm.parse_manifest, data.encode()) == (-2 ** 63 <= number < 2 ** 63)


@pytest.mark.parametrize("syntax", ["lua", "json"])
@pytest.mark.parametrize("over", [0, 1])
def test_the_byte_bound_holds_in_both_syntaxes(syntax, over):
    head = '{"package": "a", "version": "1"}' if syntax == "json" else '{ package = "a", version = "1" }'
    data = (head + " " * (pm.MAX_MANIFEST_BYTES - len(head) + over)).encode()
    assert pm_verdict(pm.parse_manifest, data) == (not over)
