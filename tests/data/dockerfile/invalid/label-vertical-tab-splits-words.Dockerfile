FROM a
LABEL a=bc
