FROM a
RUN echo \
      indented
ENV A=1\
  B=2
