"""Variable expansion and word splitting, checked against BuildKit's own vectors."""

import os

import pytest

from lamina.builder.shellwords import ShellWordError, expand, expand_words

SHELL_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "..", "shared", "corpus", "buildkit", "frontend", "dockerfile", "shell",
)

# The environment BuildKit's lexer test runs envVarTest with (the file has no header saying so;
# the vectors pin it: PWD, SHELL and KOREAN set, NULL set but empty).
ENV_VAR_TEST_ENV = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "NULL": ""}


def _env_var_vectors():
    with open(os.path.join(SHELL_DIR, "envVarTest"), encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            platform, source, expected = line.split("|", 2)
            if platform.strip() not in ("A", "U"):
                continue
            yield pytest.param(source.strip(), expected.strip(), id=f"line{number}")


def _words_vectors():
    """wordsTest: ``ENV name=value`` lines grow the env; ``input | word,word`` or ``error``."""
    env: dict[str, str] = {}
    with open(os.path.join(SHELL_DIR, "wordsTest"), encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            if line.startswith("ENV "):
                name, _, value = line[4:].lstrip(" ").partition("=")
                env = {**env, name: value}
                continue
            source, expected = line.split("|", 1)
            expected = expected.lstrip(" ")
            yield pytest.param(
                source.strip(), expected, dict(env), id=f"line{number}"
            )


@pytest.mark.parametrize("source,expected", list(_env_var_vectors()))
def test_env_var_vectors(source, expected):
    if expected == "error":
        with pytest.raises(ShellWordError):
            expand(source, ENV_VAR_TEST_ENV)
    else:
        assert expand(source, ENV_VAR_TEST_ENV) == expected


@pytest.mark.parametrize("source,expected,env", list(_words_vectors()))
def test_words_vectors(source, expected, env):
    if expected == "error":
        with pytest.raises(ShellWordError):
            expand_words(source, env)
    else:
        assert expand_words(source, env) == expected.split(",")


def test_vector_counts():
    assert len(list(_env_var_vectors())) > 200
    assert len(list(_words_vectors())) > 20


@pytest.mark.parametrize(
    "word,expected",
    [
        ("${V-x}", "x"),
        ("${E-x}", ""),
        ("${E:-x}", "x"),
        ("${V+x}", ""),
        ("${E+x}", "x"),
        ("${E:+x}", ""),
        ("${P#*/}", "b/c.tar.gz"),
        ("${P##*/}", "c.tar.gz"),
        ("${P%.*}", "a/b/c.tar"),
        ("${P%%.*}", "a/b/c"),
        ("${P#zz}", "a/b/c.tar.gz"),
        ("${P/b/X}", "a/X/c.tar.gz"),
        ("${P//[ab]/X}", "X/X/c.tXr.gz"),
        ("${P/.gz}", "a/b/c.tar"),
        ("${UNSET#x}", ""),
    ],
)
def test_modifiers(word, expected):
    assert expand(word, {"E": "", "P": "a/b/c.tar.gz"}) == expected


def test_backtick_escape():
    assert expand("a`$b`\\", {"b": "x"}, escape="`") == "a$b\\"


def test_error_is_invalid_argument():
    from lamina.errors import InvalidArgument

    with pytest.raises(InvalidArgument):
        expand("${X:?must be set}", {})
