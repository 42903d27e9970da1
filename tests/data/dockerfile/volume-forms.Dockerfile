FROM a
VOLUME /data
VOLUME /a /b  /c
VOLUME ["/x", "/y z"]
VOLUME [ ]
VOLUME ["/d"] extra
