"""lamina.cjson gives what json gives, byte for byte and error for error, without importing json
(and re) on its way."""

import json
import subprocess
import sys

import pytest

from lamina import cjson

DOCS = [
    None, True, False, 0, -7, 2**70, 1.5, -0.0, 1e300, 3.141592653589793, float("nan"),
    float("inf"), float("-inf"), "", "plain", 'quote " backslash \\ tab \t nl \n nul \x00',
    "é ü ß 中文 \u2028 \U0001f600", "\ud800 lone surrogate", [], {}, [[]], {"": {}}, (1, 2),
    [1, "two", 3.0, None, True, False, [], {}, {"a": [1, {"b": []}]}],
    {"Id": "abc", "Config": {"Env": ["A=1", "B=é"], "Cmd": None, "Labels": {}},
     "Mounts": [], "State": {"Running": False, "Pid": 0, "ExitCode": 0}, "Size": 1.25,
     "zeta": 1, "alpha": 2},
    {"b": 1, "a": {"d": [1, 2], "c": ()}},
]
OPTIONS = [
    {}, {"separators": (",", ":")}, {"indent": 4}, {"indent": 2}, {"indent": 0}, {"indent": "\t"},
    {"indent": 4, "sort_keys": True}, {"sort_keys": True}, {"ensure_ascii": False},
    {"indent": 4, "ensure_ascii": False}, {"separators": (",", ":"), "ensure_ascii": False},
    {"indent": 2, "separators": (", ", " = ")},
]


class Text(str):
    pass


class Number(int):
    def __repr__(self):
        return "not used by json"


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_dumps_is_json_dumps(options):
    for doc in [*DOCS, Text("sub"), [Text("s"), Number(5)], {"k": Number(3)}]:
        assert cjson.dumps(doc, **options) == json.dumps(doc, **options), (doc, options)


@pytest.mark.parametrize("options", [{}, {"indent": 4}, {"separators": (",", ":")}], ids=str)
def test_dumps_hands_json_what_it_cannot_encode(options):
    # keys json turns into strings (an indented document's are json's own work)
    odd_keys = {7: "a", 2.5: "b", True: "c", False: "f", None: "d", "e": {3: []}}
    assert cjson.dumps(odd_keys, **options) == json.dumps(odd_keys, **options)
    for bad in [{"a": object()}, [{1, 2}], {(1, 2): "tuple key"}, b"bytes"]:
        with pytest.raises(TypeError) as ours:
            cjson.dumps(bad, **options)
        with pytest.raises(TypeError) as theirs:
            json.dumps(bad, **options)
        assert str(ours.value) == str(theirs.value)
    circular: list = []
    circular.append(circular)
    with pytest.raises(ValueError, match="Circular reference detected"):
        cjson.dumps(circular, **options)
    deep: list = []
    for _ in range(600):  # deeper than lamina's own recursion goes; json's own still encodes it
        deep = [deep]
    assert cjson.dumps(deep, **options) == json.dumps(deep, **options)


def test_loads_is_json_loads():
    texts = [json.dumps(doc, **options) for doc in DOCS for options in OPTIONS
             if options.get("separators") != (", ", " = ")]
    texts += ["  \n\t{}\r\n ", '[1, 2.50, -0, 1E3, 1e-2, "\\u00e9\\ud83d\\ude00"]', "NaN",
              "-Infinity", "123", '"x"', '{"a": 1, "a": 2}', "1" * 50]
    for text in texts:
        for given in (text, text.encode("utf-8", "surrogatepass"),
                      bytearray(text.encode("utf-8", "surrogatepass"))):
            ours, theirs = cjson.loads(given), json.loads(given)
            assert repr(ours) == repr(theirs) and type(ours) is type(theirs), given
    for encoding in ("utf-8-sig", "utf-16", "utf-16-le", "utf-32-be"):  # json's own detection
        assert cjson.loads('{"a": "é"}'.encode(encoding)) == {"a": "é"}


@pytest.mark.parametrize("text", [
    "", "   ", "{", '{"a": ', '"unterminated', '{"a": 1} x', "[1,]", "{'a': 1}", '"\x01"',
    "\ufeff{}", b"\xff\xfe", b"{\xff}", "1" * 5000, "[" * 100_000, 5, None])
def test_loads_fails_as_json_does(text):
    with pytest.raises(Exception) as theirs:
        json.loads(text)
    with pytest.raises(type(theirs.value)) as ours:
        cjson.loads(text)
    assert str(ours.value) == str(theirs.value)
    if isinstance(theirs.value, json.JSONDecodeError):
        assert (ours.value.pos, ours.value.lineno, ours.value.colno) == (
            theirs.value.pos, theirs.value.lineno, theirs.value.colno)


def test_load_and_dump(tmp_path):
    doc = {"a": [1, "é"], "b": None}
    with open(tmp_path / "f", "w") as f:
        cjson.dump(doc, f, separators=(",", ":"))
    assert (tmp_path / "f").read_text() == json.dumps(doc, separators=(",", ":"))
    with open(tmp_path / "f", "rb") as f:
        assert cjson.load(f) == doc


def test_imports_neither_json_nor_re():
    code = ("import sys; from lamina import cjson; "
            "doc = cjson.loads(b'{\"a\": [1, 2.5, \"\\\\u00e9\"], \"b\": {}}'); "
            "cjson.dumps(doc); cjson.dumps(doc, indent=4); cjson.dumps(doc, separators=(',', ':'));"
            "print(sorted(m for m in ('json', 're', 'enum', 'functools') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": str(cjson.__file__).rsplit("/lamina/", 1)[0]})
    assert out.stdout.split() == ["[]"]
