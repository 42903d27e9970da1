""".dockerignore matching by Docker's (moby patternmatcher's) documented rules."""

import pytest

from lamina.builder.dockerignore import Matcher, read_patterns
from lamina.errors import InvalidArgument


def _matcher(text):
    return Matcher(read_patterns(text))


def test_read_patterns_cleans_and_skips_comments():
    text = "\ufeff# comment\n\n  /abs/path  \n./rel\n!  ./keep/../kept\na//b/\n  # not a comment\n"
    assert read_patterns(text) == ["abs/path", "rel", "!kept", "a/b", "# not a comment"]


@pytest.mark.parametrize(
    "patterns,path,excluded",
    [
        ("*.pyc", "a.pyc", True),
        ("*.pyc", "sub/a.pyc", False),  # not gitignore: * does not cross directories
        ("**/*.pyc", "sub/deep/a.pyc", True),
        ("**/*.pyc", "a.pyc", True),
        ("**/*.go", "x/y/z.go", True),
        ("**/*.go", "z.go", True),
        ("**/*.go", "z.gox", False),
        ("*/temp*", "somedir/temporary.txt", True),
        ("*/temp*", "somedir/sub/temp", False),
        ("*/*/temp*", "somedir/subdir/temporary.txt", True),
        ("temp?", "tempa", True),
        ("temp?", "temp/x", False),  # "?" is exactly one character, never "/"
        ("build", "build/out/bin", True),  # a matched directory excludes what is below
        ("/build", "build/x", True),
        ("./build", "./build/x", True),
        ("build/", "build/x", True),
        ("**", "anything/at/all", True),
        ("docs/**", "docs/a/b.md", True),
        ("docs/**", "docsx/a", False),
        ("a/**/b", "a/b", True),
        ("a/**/b", "a/x/y/b", True),
        ("[a-c].txt", "b.txt", True),
        ("[!a-c].txt", "d.txt", True),
        ("[!a-c].txt", "a.txt", False),
        ("file.(x)", "file.(x)", True),
        ("\\*star", "*star", True),
        ("\\*star", "xstar", False),
    ],
)
def test_matches(patterns, path, excluded):
    assert _matcher(patterns).matches(path) is excluded


def test_exceptions_reinclude_and_last_match_wins():
    m = _matcher("*.md\n!README.md\nREADME-secret.md\n")
    assert m.matches("CHANGES.md")
    assert not m.matches("README.md")
    assert m.matches("README-secret.md")
    m = _matcher("*.md\nREADME-secret.md\n!README*.md\n")
    assert not m.matches("README-secret.md")


def test_exception_inside_excluded_directory():
    m = _matcher("logs\n!logs/keep.txt\n")
    assert m.matches("logs")
    assert m.matches("logs/other.txt")
    assert not m.matches("logs/keep.txt")
    assert m.excluded_dir_may_contain_included("logs")
    assert not m.excluded_dir_may_contain_included("cache")


def test_excluded_dir_may_contain_included():
    assert not _matcher("node_modules\n").excluded_dir_may_contain_included("node_modules")
    m = _matcher("vendor\n!**/LICENSE\n")
    assert m.excluded_dir_may_contain_included("vendor/a/b")
    m = _matcher("*\n!src/*.py\n")
    assert m.excluded_dir_may_contain_included("src")
    assert not m.excluded_dir_may_contain_included("docs")
    assert m.matches("docs/x.py") and not m.matches("src/x.py") and m.matches("src/x.txt")


def test_paths_are_cleaned():
    m = _matcher("a/b\n")
    assert m.matches("./a/b") and m.matches("/a/b/") and m.matches("a/./c/../b/d")


def test_bad_pattern():
    with pytest.raises(InvalidArgument):
        Matcher(["[z-a]"])
