"""JSON through the standard library's C accelerator (``_json``) alone, for the CLI's start-up.

``import json`` costs more than any other module a short command loads: json.decoder,
json.scanner and json.encoder each import ``re``, which brings enum, functools and collections
(15-20 ms on the reference machine, as much as the bare interpreter's start). The C scanner and
encoder those modules wrap need none of it. :func:`loads` and :func:`dumps` call them directly
and give exactly what ``json.loads`` and ``json.dumps`` give; whatever they do not cover (bad
input, a type the encoder does not know, a key that is not a string in an indented document)
is handed to ``json`` itself, so results and errors are json's own, byte for byte.
"""

import _json

_WHITESPACE = " \t\n\r"  # what json skips around a document


class _Options:
    """json.JSONDecoder's defaults, as the C scanner reads them."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"),
                      "NaN": float("nan")}.__getitem__


_scan = _json.make_scanner(_Options())


def loads(text: str | bytes | bytearray):
    """``json.loads(text)``."""
    source = text
    if not isinstance(text, str):
        # json picks UTF-16/32 or UTF-8 with a BOM from the first bytes: json does those
        if not isinstance(text, (bytes, bytearray)) or text[:1] in (b"\xef", b"\xfe", b"\xff") \
                or 0 in text[:4]:
            return _json_module().loads(source)
        text = text.decode("utf-8", "surrogatepass")
    try:
        value, end = _scan(text, len(text) - len(text.lstrip(_WHITESPACE)))
    except Exception:  # noqa: BLE001 - json.loads, below, raises json's own error
        end = -1
    if end == len(text) or (end >= 0 and not text[end:].strip(_WHITESPACE)):
        return value
    return _json_module().loads(source)


def load(file):
    """``json.load(file)``."""
    return loads(file.read())


def dumps(value, *, indent: int | str | None = None, separators: tuple[str, str] | None = None,
          ensure_ascii: bool = True, sort_keys: bool = False) -> str:
    """``json.dumps(value, ...)`` for the options named."""
    try:
        if indent is None:
            item, key = separators or (", ", ": ")
            string = _json.encode_basestring_ascii if ensure_ascii else _json.encode_basestring
            if isinstance(value, str):
                return string(value)
            encode = _json.make_encoder({}, _unknown, string, None, key, item, sort_keys,
                                        False, True)
            return "".join(encode(value, 0))
        out: list[str] = []
        _Indented(indent, separators, ensure_ascii, sort_keys, out).value(value, 0)
        return "".join(out)
    except Exception:  # noqa: BLE001 - json.dumps, below, raises json's own error
        return _json_module().dumps(value, indent=indent, separators=separators,
                                    ensure_ascii=ensure_ascii, sort_keys=sort_keys)


def dump(value, file, **options) -> None:
    """``json.dump(value, file, ...)``."""
    file.write(dumps(value, **options))


class _Unsupported(Exception):
    """A value json.dumps is to deal with (its ``default`` hook, or its TypeError)."""


def _unknown(value):
    raise _Unsupported


def _json_module():
    import json

    return json


def _float(value: float) -> str:
    if value != value:
        return "NaN"
    if value == float("inf"):
        return "Infinity"
    if value == float("-inf"):
        return "-Infinity"
    return float.__repr__(value)


class _Indented:
    """json.dumps with ``indent``: json does it in Python (its C encoder ignores indent); this
    follows json.encoder's order of type checks and its layout exactly, for str keys."""

    def __init__(self, indent, separators, ensure_ascii: bool, sort_keys: bool, out: list):
        self.indent = indent if isinstance(indent, str) else " " * indent
        self.item, self.key = separators or (",", ": ")
        self.string = _json.encode_basestring_ascii if ensure_ascii else _json.encode_basestring
        self.sort_keys = sort_keys
        self.out = out

    def value(self, value, level: int) -> None:
        if isinstance(value, str):
            self.out.append(self.string(value))
        elif value is None:
            self.out.append("null")
        elif value is True:
            self.out.append("true")
        elif value is False:
            self.out.append("false")
        elif isinstance(value, int):
            self.out.append(int.__repr__(value))
        elif isinstance(value, float):
            self.out.append(_float(value))
        elif isinstance(value, (list, tuple)):
            self.array(value, level)
        elif isinstance(value, dict):
            self.object(value, level)
        else:
            raise _Unsupported

    def array(self, items, level: int) -> None:
        if not items:
            self.out.append("[]")
            return
        newline = "\n" + self.indent * (level + 1)
        self.out.append("[" + newline)
        for i, item in enumerate(items):
            if i:
                self.out.append(self.item + newline)
            self.value(item, level + 1)
        self.out.append("\n" + self.indent * level + "]")

    def object(self, doc: dict, level: int) -> None:
        if not doc:
            self.out.append("{}")
            return
        newline = "\n" + self.indent * (level + 1)
        self.out.append("{" + newline)
        for i, (key, item) in enumerate(sorted(doc.items()) if self.sort_keys else doc.items()):
            if not isinstance(key, str):
                raise _Unsupported  # json turns numbers, booleans and None into strings
            if i:
                self.out.append(self.item + newline)
            self.out.append(self.string(key) + self.key)
            self.value(item, level + 1)
        self.out.append("\n" + self.indent * level + "}")
