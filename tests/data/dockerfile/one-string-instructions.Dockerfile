FROM a
WORKDIR /path with spaces/
WORKDIR   relative/dir   
USER nobody
USER 1000:1000
STOPSIGNAL SIGKILL
STOPSIGNAL 9
MAINTAINER  Jane Doe <jane@example.com>  
MAINTAINER "quoted name"
