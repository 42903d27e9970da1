FROM a
RUN echo last \
