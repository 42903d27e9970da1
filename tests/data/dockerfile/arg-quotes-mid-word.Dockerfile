FROM a
ARG a="b"c'd'e
ARG "quoted key"=v
ARG x=""
ARG y=''
