FROM a
RUN echo [0m
LABEL a="bc"
RUN abc
