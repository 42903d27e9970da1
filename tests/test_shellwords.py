"""Variable expansion and word splitting, checked against the project's own table of cases.

Each expected value was worked out from the rules of BuildKit's shell lexer
(frontend/dockerfile/shell/lex.go, ``ProcessWord`` and ``ProcessWords``), which lamina follows:

- ``$NAME`` reads letters, digits and ``_``; ``$`` then digits reads all the digits; one of
  ``@ * # ? - $ ! 0`` is a whole name (never set). ``$`` before anything else stays ``$``.
- Unset and empty variables expand to nothing; values are inserted as they are (their quotes,
  escapes and ``$`` are not read again).
- In ``${NAME<op>word}`` the word is expanded (quotes, escapes, nested ``${}``) before the
  variable is looked at, so an error in it is an error even where the word is not used.
- Single quotes keep everything literally. Double quotes expand ``$``, and the escape character
  escapes only ``"``, ``$`` and itself there (before anything else it stays). Outside quotes the
  escape character makes the next character literal, and at the very end it is dropped.
- Splitting into words (``expand_words``) happens at unquoted, unescaped whitespace, including
  whitespace that came out of an expansion (quoted or not inside a ``${}`` word); an empty
  quoted string makes no word.
"""

import pytest

from lamina.builder.shellwords import Lexer, ShellWordError, expand, expand_words

ENV = {
    "HOME": "/root", "USER": "me", "EMPTY": "", "SPACED": "a  b", "GREETING": "hello world",
    "UNI": "h\u00e9llo", "P": "a/b/c.tar.gz", "X_1": "x1", "_U": "u",
    "QUOTE": "it's \"x\" \\n $HOME",
}
E = ShellWordError  # the expected outcome of a word that cannot be expanded

EXPAND = [
    # plain text
    ("", ""), ("hello", "hello"), ("hello world", "hello world"),
    ("  lead and trail  ", "  lead and trail  "), ("a\nb", "a\nb"), ("100%", "100%"),
    ("h\u00e9llo \u65e5\u672c", "h\u00e9llo \u65e5\u672c"),
    ("#not-a-comment $USER", "#not-a-comment me"),
    # $NAME
    ("$USER", "me"), ("$USER$USER", "meme"), ("x$USER-y", "xme-y"), ("$USER_x", ""),
    ("$HOME/bin", "/root/bin"), ("$UNSET", ""), ("a${UNSET}b", "ab"), ("$EMPTY", ""),
    ("$X_1", "x1"), ("$_U", "u"), ("$X_1$_U", "x1u"), ("$UNI", "h\u00e9llo"),
    ("$UNI$UNI", "h\u00e9lloh\u00e9llo"), ("$USER.x", "me.x"), ("$USER:-x", "me:-x"),
    ("$user", ""),  # names are case-sensitive
    ("$USER\u00e9", ""), ("\u00e9$USER\u00e9", "\u00e9"),  # a letter is part of the name
    ("$HOME/$USER/.cache", "/root/me/.cache"), ("--opt=$USER", "--opt=me"),
    ("$USER\t$HOME", "me\t/root"), ("{$USER}", "{me}"), ("}$USER{", "}me{"), ("$USER}", "me}"),
    ("$SPACED", "a  b"), ("$QUOTE", "it's \"x\" \\n $HOME"),
    # a lone $, digits and special parameters
    ("$", "$"), ("a$", "a$"), ("$ x", "$ x"), ("$/", "$/"), ("$HOME$", "/root$"),
    ('$"x"', "$x"), ("$'x'", "$x"), ("$$", ""), ("$1", ""), ("$12x", "x"), ("$0", ""),
    ("$@", ""), ("$*", ""), ("$#", ""), ("$?", ""), ("$-", ""), ("$!", ""), ("$-x", "x"),
    ("${1}", ""), ("${@}", ""),
    # ${NAME}
    ("${USER}", "me"), ("${USER}_x", "me_x"), ("${USER}${HOME}", "me/root"), ("${X_1}", "x1"),
    ("${X_1}${_U}", "x1u"), ("${HOME}$", "/root$"), ("${HOME}/${USER}/.cache", "/root/me/.cache"),
    ("${USER}${EMPTY}${UNSET}x", "mex"), ("${GREETING}!", "hello world!"), ("${P}", "a/b/c.tar.gz"),
    ("${QUOTE}", "it's \"x\" \\n $HOME"),
    # ${NAME:-word} ${NAME-word}: the word when unset (or, with the colon, empty)
    ("${UNSET:-def}", "def"), ("${EMPTY:-def}", "def"), ("${USER:-def}", "me"),
    ("${UNSET:-}", ""), ("${UNSET:-$USER}", "me"), ("${UNSET:-${USER}x}", "mex"),
    ("${UNSET:-a b}", "a b"), ("${UNSET:- spaced }", " spaced "), ("${UNSET:-'q  q'}", "q  q"),
    ('${UNSET:-"$USER"}', "me"), (r"${UNSET:-\}}", "}"), ('${UNSET:-"}"}', "}"),
    ("${UNSET:-'}'}", "}"), ("${UNSET:-$}", "$"), ("${UNSET:-${UNSET2:-deep}}", "deep"),
    ("${UNSET:-${EMPTY:-${USER}}}", "me"), ("${USER:-a}${UNSET:-b}", "meb"),
    ("${user:-lower}", "lower"), ("key=${UNSET:-v}", "key=v"),
    ("${UNSET:-\u65e5\u672c}", "\u65e5\u672c"),
    ("${UNSET-def}", "def"), ("${EMPTY-def}", ""), ("${USER-def}", "me"), ("${UNSET-}", ""),
    # ${NAME:+word} ${NAME+word}: the word when set (and, with the colon, not empty)
    ("${USER:+alt}", "alt"), ("${EMPTY:+alt}", ""), ("${UNSET:+alt}", ""),
    ("${USER+alt}", "alt"), ("${EMPTY+alt}", "alt"), ("${UNSET+alt}", ""),
    ("${USER+$HOME}", "/root"), ("${USER:+${HOME}/x}", "/root/x"), ("${USER:+}", ""),
    ("${USER:+${UNSET:-fallback}}", "fallback"), ("${UNI:+\u00fc}", "\u00fc"),
    ("${UNSET:-a}-${UNSET-b}-${UNSET:+c}-${UNSET+d}", "a-b--"),
    ("${EMPTY:-a}-${EMPTY-b}-${EMPTY:+c}-${EMPTY+d}", "a---d"),
    ("${USER:-a}-${USER-b}-${USER:+c}-${USER+d}", "me-me-c-d"),
    ("${EMPTY:+${UNSET:?never}}", E),  # the word is expanded first, so its error stands
    # ${NAME:?message} ${NAME?message}: an error when unset (or, with the colon, empty)
    ("${USER:?msg}", "me"), ("${USER?msg}", "me"), ("${EMPTY?msg}", ""), ("${USER:?}", "me"),
    ("${EMPTY:?msg}", E), ("${UNSET:?msg}", E), ("${UNSET?msg}", E), ("${UNSET:?}", E),
    ("${EMPTY:?}", E), ("${UNSET?}", E),
    # prefix and suffix removal (shortest, ## and %% longest), replacement
    ("${P%/*}", "a/b"), ("${P%%/*}", "a"), ("${P#*.}", "tar.gz"), ("${P##*.}", "gz"),
    ("${P##*/}", "c.tar.gz"), ("${P%.tar.gz}", "a/b/c"), ("${P#a/}", "b/c.tar.gz"),
    ("${P%?}", "a/b/c.tar.g"), ("${P%%.*}.zip", "a/b/c.zip"), ("${UNSET%x}", ""),
    ("${UNSET##*}", ""), ("${P/tar/zip}", "a/b/c.zip.gz"), ("${P//\\//-}", "a-b-c.tar.gz"),
    ("${P/*./}", "gz"), ("${UNSET/a/b}", ""),
    # malformed substitutions
    ("${", E), ("${USER", E), ("${}", E), ("${:-x}", E), ("${{USER}}", E), ("${USER:x}", E),
    ("${USER^}", E), ("${USER:-x", E), ("${#USER}", E), ("x${UNSET:-${}}", E),
    # the escape character outside quotes
    (r"\$USER", "$USER"), (r"\${USER}", "${USER}"), (r"\\", "\\"), (r"a\ b", "a b"),
    (r"x\ ", "x "), (r"\ ", " "), ("\\\t", "\t"), (r"\a", "a"), ("abc\\", "abc"),
    (r"\\$USER", "\\me"), (r"\'", "'"), (r"\"", '"'), (r"$USER\x", "mex"),
    (r"a\\\\b", r"a\\b"), (r"\\'x'", "\\x"), (r'\"$USER\"', '"me"'),
    # single quotes: everything literal
    ("'$USER'", "$USER"), ("'a b'", "a b"), (r"'a\b'", r"a\b"), (r"'it'\''s'", "it's"),
    ("'\"'", '"'), ("''", ""), ("'${UNSET:-x}'", "${UNSET:-x}"), (r"'a\'", "a\\"),
    (r"'\\'", "\\\\"), ("'\"$USER\"'", '"$USER"'),
    # double quotes: $ expands; the escape character escapes only " $ and itself
    ('"$USER"', "me"), ("\"a 'b' c\"", "a 'b' c"), (r'"a\"b"', 'a"b'), (r'"a\$b"', "a$b"),
    (r'"\$USER"', "$USER"), (r'"a\\b"', r"a\b"), (r'"a\b"', r"a\b"), (r'"a\'b"', r"a\'b"),
    (r'"\\"', "\\"), (r'"\\\""', '\\"'), (r'"a\\$USER"', "a\\me"), ('""', ""),
    ('"${USER}s"', "mes"), ('"${UNSET:-a b}"', "a b"), ('"$SPACED"', "a  b"),
    ('"${USER:+"inner"}"', "inner"), ("\"'$USER'\"", "'me'"), ('"\'"', "'"),
    # quotes inside a word
    ("a'b'c", "abc"), ('a"b"c', "abc"), ('"a"\'b\'c', "abc"), ("'a'\"b\"c'd'", "abcd"),
    ('"a b"\'c d\'', "a bc d"),
    # unbalanced quotes
    ("'oops", E), ('"oops', E), ("a'b", E), ('"a\\"', E), ("x\"$USER", E),
]

EXPAND_BACKTICK = [  # after ``# escape=``` (Windows-style Dockerfiles): \ is an ordinary character
    ("`$USER", "$USER"), ("C:\\path\\file", "C:\\path\\file"), ("``", "`"), ("a`", "a"),
    ("a` b", "a b"), ("$USER`x", "mex"), ("\\$USER", "\\me"), ("`'x`'", "'x'"),
    ("'a`b'", "a`b"), ('"a`"b"', 'a"b'), ('"a`$b"', "a$b"), ('"a``b"', "a`b"), ('"a`b"', "a`b"),
    ('"a\\b"', "a\\b"), ("${UNSET:-`}}", "}"),
]

WORDS = [
    ("a b c", ["a", "b", "c"]), ("  a   b  ", ["a", "b"]), ("", []), ("   ", []),
    ("a\tb\nc", ["a", "b", "c"]), ('"a b" c', ["a b", "c"]), ("'a b' c", ["a b", "c"]),
    ('"a"b c', ["ab", "c"]), ("a'b c'd", ["ab cd"]), (r"a\ b c", ["a b", "c"]),
    (r"a\\ b", ["a\\", "b"]),
    # an unquoted expansion is split too; a quoted one is not
    ("$SPACED", ["a", "b"]), ('"$SPACED"', ["a  b"]), ("'$SPACED'", ["$SPACED"]),
    ("x$SPACED", ["xa", "b"]), ("$GREETING!", ["hello", "world!"]),
    ("$USER$HOME", ["me/root"]), ("${USER} ${HOME}", ["me", "/root"]),
    ("${UNSET:-x y}", ["x", "y"]), ('${UNSET:-"x y"}', ["x", "y"]),
    ("$QUOTE", ["it's", '"x"', "\\n", "$HOME"]),
    # nothing makes no word
    ("$EMPTY", []), ("a $EMPTY b", ["a", "b"]), ('""', []), ("''", []), ('"" a', ["a"]),
    ("'oops", E), ('a "b', E), ("${UNSET:?gone}", E),
]

WORDS_BACKTICK = [
    ("a` b c", ["a b", "c"]), ("C:\\x D:\\y", ["C:\\x", "D:\\y"]), ('`"a b`"', ['"a', 'b"']),
]


def _check(function, source, expected, escape):
    if expected is E:
        with pytest.raises(ShellWordError):
            function(source, ENV, escape)
    else:
        assert function(source, ENV, escape) == expected


@pytest.mark.parametrize("source,expected", EXPAND)
def test_expand(source, expected):
    _check(expand, source, expected, "\\")


@pytest.mark.parametrize("source,expected", EXPAND_BACKTICK)
def test_expand_backtick_escape(source, expected):
    _check(expand, source, expected, "`")


@pytest.mark.parametrize("source,expected", WORDS)
def test_expand_words(source, expected):
    _check(expand_words, source, expected, "\\")


@pytest.mark.parametrize("source,expected", WORDS_BACKTICK)
def test_expand_words_backtick_escape(source, expected):
    _check(expand_words, source, expected, "`")


def test_case_counts():
    assert len(EXPAND) + len(EXPAND_BACKTICK) > 200
    assert len(WORDS) + len(WORDS_BACKTICK) > 20
    sources = [s for s, _ in EXPAND]
    assert len(set(sources)) == len(sources)


@pytest.mark.parametrize("source,fragment", [
    ("${UNSET:?must be set}", "UNSET: must be set"),
    ("${UNSET?}", "UNSET: is not allowed to be unset"),
    ("${UNSET:?}", "UNSET: is not allowed to be unset"),
    ("${EMPTY:?}", "EMPTY: is not allowed to be empty"),
    ("${EMPTY:?empty here}", "EMPTY: empty here"),
    ("${", "missing '}'"),
    ("${}", "bad substitution"),
    ("${USER^}", "unsupported modifier"),
    ("'a", "single-quote"),
    ('"a', "double-quote"),
])
def test_error_messages(source, fragment):
    with pytest.raises(ShellWordError) as info:
        expand(source, ENV)
    assert fragment in str(info.value)


def test_lexer_options():
    """The variants the Dockerfile parser uses (BuildKit's SkipUnsetEnv, RawQuotes, RawEscapes
    and SkipProcessQuotes)."""
    keep_unset = Lexer(ENV, skip_unset=True)
    assert keep_unset.run("$UNSET ${UNSET} ${UNSET:-x} ${UNSET#p} $USER") == (
        "$UNSET ${UNSET} ${UNSET:-x} ${UNSET#p} me",
        ["$UNSET", "${UNSET}", "${UNSET:-x}", "${UNSET#p}", "me"])
    assert Lexer(ENV, raw_quotes=True).run("'a b' \"$USER\"") == (
        "'a b' \"me\"", ["'a b'", '"me"'])
    assert Lexer(ENV, raw_escapes=True).run(r'a\ b \$USER "x"') == (
        r"a\ b \$USER x", [r"a\ b", r"\$USER", "x"])
    assert Lexer(ENV, process_quotes=False).run("'$USER' \"a b\"") == (
        "'me' \"a b\"", ["'me'", '"a', 'b"'])
    assert Lexer(ENV, escape="`", raw_escapes=True).run("a` b") == ("a` b", ["a` b"])


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
