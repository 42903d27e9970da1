FROM a
ONBUILD RUN echo one \
    && echo two
