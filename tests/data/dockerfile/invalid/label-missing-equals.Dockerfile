FROM a
LABEL a=b c d=e
