FROM a
VOLUME [{"a": "b"}]
