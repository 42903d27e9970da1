# escape=``
FROM a
