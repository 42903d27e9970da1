# escape=
FROM a
