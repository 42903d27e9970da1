FROM a
HEALTHCHECK NONE
HEALTHCHECK CMD curl -f http://localhost/ || exit 1
HEALTHCHECK CMD ["curl", "-f", "http://localhost/"]
HEALTHCHECK --interval=5m --timeout=3s CMD true
HEALTHCHECK --start-period=1s --start-interval=0s --retries=3 CMD ["true"]
HEALTHCHECK   CMD    spaced    command   
HEALTHCHECK CMD
HEALTHCHECK CONNECT TCP 7000
HEALTHCHECK cmd lower case type
