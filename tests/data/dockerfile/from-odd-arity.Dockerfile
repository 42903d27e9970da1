FROM a b
FROM a AS
FROM a FOR b
FROM a AS b c
