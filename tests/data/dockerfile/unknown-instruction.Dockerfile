FROM a
FOO bar baz
FROM b
