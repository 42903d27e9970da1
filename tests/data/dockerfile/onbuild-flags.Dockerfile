FROM a
ONBUILD --flag=1 RUN x
ONBUILD RUN --mount=type=cache,target=/c make
