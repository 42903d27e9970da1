"""The Dockerfile parser against BuildKit's own parser test files, plus heredocs and checks."""

import os

import pytest

from lamina.builder.dockerfile import DockerfileError, Heredoc, check, dump_ast, parse, parse_flags
from lamina.errors import InvalidArgument

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARSER_DIR = os.path.join(
    REPO_ROOT, "..", "shared", "corpus", "buildkit", "frontend", "dockerfile", "parser"
)


def _cases(kind):
    root = os.path.join(PARSER_DIR, kind)
    return sorted(os.listdir(root)) if os.path.isdir(root) else []


POSITIVE = _cases("testfiles")
NEGATIVE = _cases("testfiles-negative")


def test_corpus_present():
    assert len(POSITIVE) >= 30 and len(NEGATIVE) >= 4


@pytest.mark.parametrize("name", POSITIVE)
def test_buildkit_testfile(name):
    directory = os.path.join(PARSER_DIR, "testfiles", name)
    with open(os.path.join(directory, "Dockerfile"), "rb") as f:
        source = f.read()
    with open(os.path.join(directory, "result"), "rb") as f:
        expected = f.read().decode("utf-8")
    assert dump_ast(parse(source)) == expected


@pytest.mark.parametrize("name", NEGATIVE)
def test_buildkit_negative_testfile(name):
    with open(os.path.join(PARSER_DIR, "testfiles-negative", name, "Dockerfile"), "rb") as f:
        source = f.read()
    with pytest.raises(DockerfileError):
        parse(source)


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


ORACLE_EXTRA = [
    'FROM a\nRUN <<-EOF cat <<"B"\n\thi $x\n\tEOF\nbb\nB\nRUN x\n',
    'FROM a\nCOPY --chown="a b" --link x y\n',
    "FROM a\nENV a=b\\\\\\\\\nRUN x\n",
    "FROM a\nRUN 3<<EOF cat\nx\nEOF\n",
    'FROM a\nADD <<EOF <<"E2" /x\n1\nEOF\n2\nE2\n',
    'FROM a\nLABEL a="b c" d=e\nRUN ["a"] trailing\n',
]


@pytest.mark.parametrize("index", range(len(POSITIVE) + len(ORACLE_EXTRA)))
def test_differential_against_buildkit(index):
    """When the `dockerfile` package (BuildKit's Go parser) is installed, agree with it."""
    oracle = pytest.importorskip("dockerfile")
    if index < len(POSITIVE):
        with open(os.path.join(PARSER_DIR, "testfiles", POSITIVE[index], "Dockerfile")) as f:
            source = f.read()
    else:
        source = ORACLE_EXTRA[index - len(POSITIVE)]
    if "\\u0000" in source:
        pytest.skip("the oracle's C strings end at NUL")
    expected = [
        (c.cmd.lower(), c.original, list(c.flags), list(c.value), c.json, c.start_line,
         c.end_line, [(h.name, h.content) for h in c.heredocs])
        for c in oracle.parse_string(source)
    ]
    got = []
    for i in parse(source).instructions:
        args = [a for k, a in enumerate(i.args) if k % 3 != 2] if i.cmd in ("env", "label") else i.args
        if i.sub is not None:
            args = i.sub.args
        got.append((i.cmd, i.original, i.flags, args, i.json or bool(i.sub and i.sub.json),
                    i.start_line, i.end_line, [(h.name, h.content) for h in i.heredocs]))
    assert got == expected
