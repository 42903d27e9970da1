"""The Dockerfile parser, checked against BuildKit's own parser, plus heredocs and checks.

The oracle is BuildKit's Go parser as shipped in the PyPI wheel ``dockerfile`` (a test extra).
Every case under ``tests/data/dockerfile/`` (lamina's own; ``invalid/`` holds files the parser
must refuse) is parsed by both and the results compared field by field, and so are random
Dockerfiles that hypothesis writes. Where the two represent one AST differently, both sides are
brought to one form (``_oracle_view``, ``_lamina_view``). Where they really disagree, the
difference is written down below (``EXPECTED_DIFFERENCES``, ``PINNED_DIFFERENCES``) and checked to
still be there, so that an entry goes when the parser is changed to agree.
"""

import glob
import json
import os

import dockerfile as oracle
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lamina.builder.dockerfile import (
    KNOWN_INSTRUCTIONS,
    DockerfileError,
    Heredoc,
    dump_ast,
    parse,
    parse_flags,
)
from lamina.builder.plan import check
from lamina.errors import InvalidArgument

CASES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "dockerfile")


def _names(directory):
    return sorted(os.path.basename(p)[: -len(".Dockerfile")]
                  for p in glob.glob(os.path.join(directory, "*.Dockerfile")))


VALID = _names(CASES_DIR)
INVALID = _names(os.path.join(CASES_DIR, "invalid"))


def _read(name, invalid=False):
    directory = os.path.join(CASES_DIR, "invalid") if invalid else CASES_DIR
    with open(os.path.join(directory, name + ".Dockerfile"), "rb") as f:
        return f.read().decode("utf-8")


# ---------------------------------------------------------------------------- the two views


def _oracle_view(source):
    """BuildKit's parse as a list of comparable tuples, or ``("error", message)``.

    The wheel reports the instruction word as written (BuildKit's AST lowercases it; an empty
    word or line comes as None) and, for ONBUILD, the trigger's word, values and JSON flag in
    place of ONBUILD's own. Heredocs: name, file descriptor and body.
    """
    try:
        commands = oracle.parse_string(source)
    except oracle.GoParseError as error:
        return ("error", str(error))
    return [((c.cmd or "").lower(), c.sub_cmd.lower() if c.sub_cmd else None, c.json,
             c.original or "", c.start_line, c.end_line, list(c.flags), list(c.value),
             [(h.name, h.file_descriptor, h.content) for h in c.heredocs])
            for c in commands]


def _values(node):
    """An instruction's AST values in the wheel's form.

    ENV and LABEL: lamina keeps BuildKit's AST triples (key, value, separator: "=", or "" for
    the legacy ``ENV key value``); the wheel reports the pairs. The separators are checked here
    and dropped. ONBUILD inside ONBUILD: BuildKit's value is one node holding the trigger (an
    empty value with children, reported as ``[""]``); lamina keeps the trigger's text in
    ``args`` and its node in ``sub``.
    """
    args = list(node.args)
    if node.cmd in ("env", "label"):
        separators = args[2::3]
        assert separators == ["="] * len(separators) or separators == [""], args
        return [a for k, a in enumerate(args) if k % 3 != 2]
    if node.cmd == "onbuild" and node.sub is not None:
        return [""]
    return args


def _lamina_view(source):
    """lamina's parse in the same form, or ``("error", reason)``.

    An ONBUILD trigger's heredocs are kept in ``sub``; the wheel reports none for ONBUILD, so
    test_onbuild_heredoc checks them.
    """
    try:
        df = parse(source)
    except DockerfileError as error:
        return ("error", error.reason)
    out = []
    for i in df.instructions:
        node = i.sub if i.sub is not None else i
        out.append((i.cmd, i.sub.cmd if i.sub is not None else None, node.json, i.original,
                    i.start_line, i.end_line, list(i.flags), _values(node),
                    [(h.name, h.file_descriptor, h.content) for h in i.heredocs]))
    return out


# ---------------------------------------------------------------------------- real differences
# These tests do not change src/. Each difference below has a case that shows it and checks that
# it is still there: when the parser is changed to agree with BuildKit, remove the entry.


def _unknown_instruction_values(view):
    """BuildKit gives an unknown instruction one empty value whatever follows it (parseIgnore
    returns an empty node; the AST reads ``(foo "")``); lamina gives it none, ``(foo)``. Only
    the AST differs: check() refuses the instruction either way."""
    return [(*c[:7], [] if (c[1] or c[0]) not in KNOWN_INSTRUCTIONS and c[7] == [""] else c[7],
             c[8]) for c in view]


def _flags_as_text(view):
    """BuildKit reads the flag words byte by byte, each byte taken for a character, so a
    non-ASCII character comes out as one Latin-1 character per UTF-8 byte ("é" as "Ã©");
    lamina keeps the character. Decoded back here: exact unless a byte is 0x85 or 0xA0, which Go
    takes for a space (see "healthcheck-type-cut-mid-character"; the generator avoids them)."""
    return [(*c[:6], [f.encode("latin-1").decode("utf-8") for f in c[6]], *c[7:]) for c in view]


# case file -> what turns BuildKit's view into lamina's, everything else being equal
EXPECTED_DIFFERENCES = {
    "unknown-instruction": _unknown_instruction_values,
    "flags-non-ascii": _flags_as_text,
}


def _last(view):
    """The last instruction's (original, flags, json, values), or the view's error."""
    if view[0] == "error":
        return view
    return (view[-1][3], view[-1][6], view[-1][2], view[-1][7])


# source -> (BuildKit's last instruction, lamina's), each as _last gives it
PINNED_DIFFERENCES = {
    # A JSON number beyond float64: Go's decoder fails, so BuildKit falls back to the shell
    # form; Python reads inf, and lamina refuses the array as not all strings.
    "FROM a\nCMD [1e999]\n": (
        ("CMD [1e999]", [], False, ["[1e999]"]),
        ("error", "when using JSON array syntax, arrays must be comprised of strings only")),
    # A lone UTF-16 surrogate escape in JSON: Go decodes it as U+FFFD, Python keeps the lone
    # surrogate (which cannot be written out as UTF-8 later).
    'FROM a\nCMD ["\\ud800"]\n': (('CMD ["\\ud800"]', [], True, ["\ufffd"]),
                                  ('CMD ["\\ud800"]', [], True, ["\ud800"])),
    # U+001C..U+001F are whitespace to Python's str.strip/split/isspace, not to Go's
    # unicode.IsSpace: lamina trims them off arguments, splits ENV/LABEL pairs on them and takes
    # a continuation line of nothing else for an empty one; BuildKit keeps them as text.
    "FROM a\nRUN x\x1c\n": (("RUN x\x1c", [], False, ["x\x1c"]),
                            ("RUN x\x1c", [], False, ["x"])),
    "FROM a\nENV a=b\x1ec=d\n": (("ENV a=b\x1ec=d", [], False, ["a", "b\x1ec=d"]),
                                 ("ENV a=b\x1ec=d", [], False, ["a", "b", "c", "d"])),
    "FROM a\nRUN x \\\n\x1f\nRUN y\n": (("RUN y", [], False, ["y"]),
                                        ("RUN x RUN y", [], False, ["x RUN y"])),
    # HEALTHCHECK's type word is also found byte by byte, and bytes 0x85 and 0xA0 (in the UTF-8
    # of U+0145 and many other characters) are spaces to Go: BuildKit cuts the character in two
    # and returns a string that is not UTF-8 (the wheel cannot decode it). lamina reads
    # characters.
    "FROM a\nHEALTHCHECK C\u0145D x\n": (
        UnicodeDecodeError, ("HEALTHCHECK C\u0145D x", [], False, ["C\u0145D", "x"])),
    # The oracle is the one behind here: the wheel's BuildKit predates the ``check`` directive
    # (current BuildKit's parser/directives.go knows syntax, escape and check), so for it
    # ``# check=`` ends the directives and the ``# escape=`` after it is a comment. lamina
    # follows current BuildKit.
    "# check=error=true\n# escape=`\nFROM a\nRUN a `\n b\n": (
        ("b", [], False, [""]), ("RUN a  b", [], False, ["a  b"])),
}


@pytest.mark.parametrize("source", list(PINNED_DIFFERENCES))
def test_pinned_differences(source):
    buildkit, lamina = PINNED_DIFFERENCES[source]
    if buildkit is UnicodeDecodeError:
        with pytest.raises(UnicodeDecodeError):
            _oracle_view(source)
    else:
        assert _last(_oracle_view(source)) == buildkit
    assert _last(_lamina_view(source)) == lamina


# ---------------------------------------------------------------------------- the cases


@pytest.mark.parametrize("name", VALID)
def test_case_agrees_with_buildkit(name):
    source = _read(name)
    expected = _oracle_view(source)
    assert expected[0] != "error", f"BuildKit refuses {name}: {expected[1]}"
    got = _lamina_view(source)
    if name in EXPECTED_DIFFERENCES:
        assert got != expected, f"{name} now agrees with BuildKit: drop its expected difference"
        expected = EXPECTED_DIFFERENCES[name](expected)
    assert got == expected


@pytest.mark.parametrize("name", INVALID)
def test_invalid_case_refused_like_buildkit(name):
    source = _read(name, invalid=True)
    expected = _oracle_view(source)
    assert expected[0] == "error", f"BuildKit accepts invalid/{name}"
    with pytest.raises(DockerfileError) as info:
        parse(source)
    assert ("error", info.value.reason) == expected


def test_case_counts():
    assert len(VALID) >= 100 and len(INVALID) >= 20
    assert set(EXPECTED_DIFFERENCES) <= set(VALID)


# ---------------------------------------------------------------------------- random Dockerfiles


# Short random text: no NUL (the wheel passes C strings), no lone surrogates (not UTF-8), no
# U+001C..U+001F and no character with a 0x85 or 0xA0 byte in its UTF-8 (pinned differences).
_CHARACTERS = st.characters(blacklist_categories=("Cs",),
                            blacklist_characters="\0\n\r\x1c\x1d\x1e\x1f")
_TEXT = st.text(_CHARACTERS.filter(lambda c: not {0x85, 0xA0} & set(c.encode())), max_size=6)
_TOKENS = st.sampled_from([
    "a", "busybox:1.36", "/app", "x=1", "k=v", 'k="v w"', "k='v w'", "key=", "=v", "$HOME",
    "${A:-b}", "--flag", "--from=build", '--chown="a b"', "--", "-x", "AS", "as", "CMD", "NONE",
    "RUN", '"quoted words"', "'single'", '"', "'", "\\", "`", "\\ ", "\\\\", "[", "]", '["a"]',
    "#", "# not", "<<EOF", "<<-EOF", '<<"EOF"', "<<'EOF'", "3<<EOF", "<<E2", "<<", "<<<x", "=",
    ",", "é", "日本", "🙂", "&&", "|", ";", ">out", "\x0b", "\x0c",
])
_HEREDOC_NAMES = {"<<EOF": "EOF", "<<-EOF": "EOF", '<<"EOF"': "EOF", "<<'EOF'": "EOF",
                  "3<<EOF": "EOF", "<<E2": "E2"}
_BODY_LINES = st.sampled_from(["echo hi", "RUN inner", "\tindented", "", "   ", "# comment",
                               "$VAR \\", "EOF ", " EOF", "\tEOF", "FROM x", "E", "`"])
# No ``# check=``: the oracle predates it (PINNED_DIFFERENCES).
_DIRECTIVES = st.sampled_from([
    "# escape=`", "# escape=\\", "#escape = `", "# ESCAPE=`", "# syntax=docker/dockerfile:1",
    "# foo=bar", "# a comment", "", "  # escape=`",
])
_SPACE = st.sampled_from([" ", " ", "  ", "\t", " \t "])


@st.composite
def _json_array(draw):
    items = draw(st.lists(_TEXT.map(lambda s: json.dumps(s, ensure_ascii=False))
                          | _TEXT.map(json.dumps)
                          | st.sampled_from(["1", "null", "true", '["x"]', "'q'", '"\\t"']),
                          max_size=4))
    text = "[" + draw(st.sampled_from([",", ", ", " , "])).join(items)
    text += draw(st.sampled_from(["]", "]", "]", " ]", ",]", "", "] tail", "]]"]))
    return text


@st.composite
def _instruction(draw):
    """One instruction: its lines, joined by continuations, and any heredoc bodies after it."""
    keyword = draw(st.sampled_from(sorted(KNOWN_INSTRUCTIONS)))
    keyword = "".join(c.upper() if draw(st.booleans()) else c for c in keyword)
    words = [draw(st.sampled_from(["--mount=type=cache,target=/c", "--from=a", "--link",
                                   '--x="a b"', "--network=none", "--interval=5s"]))
             for _ in range(draw(st.integers(0, 2)))]
    if keyword.lower() == "onbuild":
        words.append(draw(st.sampled_from(["RUN", "COPY", "CMD", "ENV", "ONBUILD", "ADD"])))
    if draw(st.integers(0, 3)) == 0:
        words.append(draw(_json_array()))
    else:
        words += draw(st.lists(_TOKENS | _TEXT, max_size=6))
    lines = [keyword]
    for word in words:
        if draw(st.integers(0, 4)) == 0:  # continue on the next line
            escape = draw(st.sampled_from(["\\", "\\", "`"]))
            lines[-1] += draw(st.sampled_from(["", " "])) + escape
            lines[-1] += draw(st.sampled_from(["", " "]))
            lines += draw(st.lists(st.sampled_from(["", "  ", "# inside", "  # inside"]),
                                   max_size=2))
            lines.append(draw(st.sampled_from(["", " ", "  ", "\t"])) + word)
        else:
            lines[-1] += draw(_SPACE) + word
    for word in words:
        name = _HEREDOC_NAMES.get(word)
        if name is None:
            continue
        lines += draw(st.lists(_BODY_LINES, max_size=3))
        if draw(st.integers(0, 7)):
            lines.append(draw(st.sampled_from(["", "", "\t"])) + name)
    return lines


@st.composite
def dockerfiles(draw):
    """Directives, blank and comment lines and instructions, with LF, CRLF or both, a final
    newline or none, and sometimes a byte-order mark."""
    lines = draw(st.lists(_DIRECTIVES, max_size=3))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.integers(0, 5))
        if kind == 0:
            lines.append(draw(st.sampled_from(["", "  ", "\t"])))
        elif kind == 1:
            lines.append(draw(st.sampled_from(["", "  "])) + "#" + draw(_TEXT))
        else:
            lines += draw(_instruction())
    newline = draw(st.sampled_from(["\n", "\r\n", None]))
    text = "".join(line + (newline or draw(st.sampled_from(["\n", "\r\n"]))) for line in lines)
    if draw(st.booleans()):
        text = text.rstrip("\r\n")
    if draw(st.integers(0, 5)) == 0:
        text = "\ufeff" + text
    return text


@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=dockerfiles())
def test_random_dockerfiles_agree_with_buildkit(text):
    expected = _oracle_view(text)
    if expected[0] != "error":
        # heredoc bodies and terminators that no heredoc takes are read as instructions, and
        # the flags may hold random text
        expected = _flags_as_text(_unknown_instruction_values(expected))
    assert _lamina_view(text) == expected


# ---------------------------------------------------------------------------- the AST dump


@pytest.mark.parametrize("source,expected", [
    ("FROM a AS b\n", '(from "a" "AS" "b")\n'),
    ("FROM a\nENV k v w\nENV a=b c=\"d e\"\n",
     '(from "a")\n(env "k" "v w" "")\n(env "a" "b" "=" "c" "\\"d e\\"" "=")\n'),
    ("FROM a\nLABEL x=\n", '(from "a")\n(label "x" "" "=")\n'),
    ("FROM a\nCOPY --from=x --chown=1:1 a b\n",
     '(from "a")\n(copy ["--from=x" "--chown=1:1"] "a" "b")\n'),
    ("FROM a\nONBUILD RUN echo hi\nONBUILD ONBUILD CMD [\"x\"]\n",
     '(from "a")\n(onbuild (run "echo hi"))\n(onbuild (onbuild (cmd "x")))\n'),
    ("FROM a\nHEALTHCHECK --interval=5s CMD a b\nHEALTHCHECK\nCMD\n",
     '(from "a")\n(healthcheck ["--interval=5s"] "CMD" "a b")\n(healthcheck)\n(cmd)\n'),
    ('FROM a\nCMD ["a", "b c"]\nRUN <<EOF\nx\nEOF\n',
     '(from "a")\n(cmd "a" "b c")\n(run "<<EOF")\n'),
    # strconv.Quote: escapes for control characters, printable Unicode kept, \u for the rest
    ("FROM a\nRUN echo\t\u00e9\x01\\\u200b\U0001f642\n",
     '(from "a")\n(run "echo\\t\u00e9\\x01\\\\\\u200b\U0001f642")\n'),
])
def test_dump_ast(source, expected):
    assert dump_ast(parse(source)) == expected


# ---------------------------------------------------------------------------- lamina's own API


def test_error_format_and_class():
    with pytest.raises(InvalidArgument) as info:
        parse("FROM busybox\n\nENV PATH\n")
    assert info.value.line == 3
    assert str(info.value) == "Dockerfile:3: ENV must have two arguments"


def test_instruction_fields():
    df = parse("FROM a AS b\nCOPY --from=b --chown=1:1 \\\n  x /y\nCMD [\"a\", \"b c\"]\n")
    from_, copy, cmd = df.instructions
    assert (from_.cmd, from_.args, from_.start_line, from_.end_line) == ("from", ["a", "AS", "b"], 1, 1)
    assert copy.flags == ["--from=b", "--chown=1:1"]
    assert copy.args == ["x", "/y"]
    assert (copy.start_line, copy.end_line) == (2, 3)
    assert copy.original == "COPY --from=b --chown=1:1   x /y"
    assert cmd.json and cmd.args == ["a", "b c"]
    assert parse_flags(copy) == {"from": "b", "chown": "1:1"}


def test_directives():
    df = parse("# syntax=docker/dockerfile:1\n# escape=`\nFROM a\nRUN echo `\n  hi\n")
    assert df.directives == {"syntax": "docker/dockerfile:1", "escape": "`"}
    assert df.escape == "`"
    assert df.instructions[1].args == ["echo   hi"]


def test_directive_after_unknown_directive_is_a_comment():
    df = parse("# foo=bar\n# escape=`\nFROM a\n")
    assert df.escape == "\\" and df.directives == {}


def test_duplicate_directive():
    with pytest.raises(DockerfileError):
        parse("# escape=`\n# escape=\\\nFROM a\n")


def test_bad_escape_directive():
    with pytest.raises(DockerfileError):
        parse("# escape=x\nFROM a\n")


def test_heredocs():
    df = parse(
        "FROM a\n"
        "RUN <<EOF\necho $HOME\nEOF\n"
        "COPY <<-\"A\" <<'B' /dst/\n\tone\n\tA\ntwo\nB\n"
        "RUN x\n"
    )
    run, copy, last = df.instructions[1:]
    assert run.heredocs == [Heredoc("EOF", "echo $HOME\n", True, False)]
    assert run.original == "RUN <<EOF\necho $HOME\nEOF\n"
    assert (run.start_line, run.end_line) == (2, 4)
    assert copy.heredocs == [Heredoc("A", "\tone\n", False, True), Heredoc("B", "two\n", False)]
    assert copy.args == ['<<-"A"', "<<'B'", "/dst/"]
    assert (last.start_line, last.args) == (10, ["x"])


def test_heredoc_only_for_run_copy_add_shell_form():
    df = parse('FROM a\nCMD <<EOF\nRUN ["a"] <<EOF\n')
    assert [i.cmd for i in df.instructions] == ["from", "cmd", "run"]
    assert all(not i.heredocs for i in df.instructions)


def test_onbuild_heredoc():
    df = parse("FROM a\nONBUILD RUN <<EOF\nhi\nEOF\n")
    onbuild = df.instructions[1]
    assert onbuild.sub.heredocs == [Heredoc("EOF", "hi\n")]
    assert onbuild.end_line == 4


def test_unterminated_heredoc():
    with pytest.raises(DockerfileError) as info:
        parse("FROM a\nRUN <<EOF\nhi\n")
    assert info.value.line == 2


def test_json_fallback_and_errors():
    df = parse("FROM a\nRUN [NaN]\nCMD ['a']\n")
    assert [(i.json, i.args) for i in df.instructions[1:]] == [(False, ["[NaN]"]), (False, ["['a']"])]
    with pytest.raises(DockerfileError):
        parse("FROM a\nRUN [1]\n")


def test_bom_and_crlf():
    df = parse(b"\xef\xbb\xbfFROM a\r\nRUN b \\\r\n c\r\n")
    assert dump_ast(df) == '(from "a")\n(run "b  c")\n'


@pytest.mark.parametrize(
    "source",
    [
        "FROM a\nCOPY x /y\nRUN --mount=type=cache,target=/c --network=none make\n",
        "ARG V=1\nFROM a:$V AS build\nFROM scratch\nCOPY --from=build /x /x\n",
        "FROM a\nHEALTHCHECK --interval=5s --retries=3 CMD true\nHEALTHCHECK NONE\n",
        "FROM a\nONBUILD RUN echo hi\nSHELL [\"/bin/bash\", \"-c\"]\nUSER me\nWORKDIR /w\n",
        "FROM a\nCOPY <<EOF /x\nhi\nEOF\n",
        "FROM a\nADD --link --chmod=755 --checksum=sha256:00 http://x/y /z\n",
    ],
)
def test_check_accepts(source):
    check(source)


@pytest.mark.parametrize(
    "source,line,fragment",
    [
        ("FROM a\nFOO bar\n", 2, "unknown instruction: FOO"),
        ("RUN x\nFROM a\n", 1, "no build stage"),
        ("ARG x\n", 1, "no stages"),
        ("FROM a b\n", 1, "one or three"),
        ("FROM a FOR b\n", 1, '"AS"'),
        ("FROM a AS 1b\n", 1, "invalid name"),
        ("FROM a\nCOPY x\n", 2, "at least two"),
        ("FROM a\nCOPY --bogus=1 x y\n", 2, "Unknown flag: bogus"),
        ("FROM a\nCOPY --chown x y\n", 2, "Missing a value"),
        ("FROM a\nRUN --from=x y\n", 2, "Unknown flag: from"),
        ("FROM a\nRUN --network=bridge y\n", 2, "network"),
        ("FROM a\nWORKDIR\n", 2, "exactly one"),
        ("FROM a\nENV\n", 2, "at least one"),
        ("FROM a\nSHELL /bin/sh\n", 2, "JSON form"),
        ("FROM a\nHEALTHCHECK\n", 2, "at least one"),
        ("FROM a\nHEALTHCHECK CONNECT x\n", 2, "Unknown type"),
        ("FROM a\nHEALTHCHECK CMD\n", 2, "Missing command"),
        ("FROM a\nHEALTHCHECK NONE x\n", 2, "no arguments"),
        ("FROM a\nHEALTHCHECK --interval=1x CMD y\n", 2, "invalid duration"),
        ("FROM a\nHEALTHCHECK --timeout=1us CMD y\n", 2, "less than 1ms"),
        ("FROM a\nHEALTHCHECK --retries=-1 CMD y\n", 2, "negative"),
        ("FROM a\nHEALTHCHECK --bogus=1 CMD y\n", 2, "Unknown flag"),
        ("FROM a\nONBUILD ONBUILD RUN x\n", 2, "Chaining"),
        ("FROM a\nONBUILD FROM x\n", 2, "isn't allowed"),
        ("FROM a\n\n\nENV x=${y\n", 4, "missing"),
        ("FROM a AS x\nFROM b AS X\n", 2, "duplicate"),
    ],
)
def test_check_rejects(source, line, fragment):
    with pytest.raises(DockerfileError) as info:
        check(source)
    assert info.value.line == line
    assert fragment in str(info.value)
    assert str(info.value).startswith(f"Dockerfile:{line}: ")
    assert "\n" not in str(info.value)
