# foo=bar
# directive=value
FROM a
