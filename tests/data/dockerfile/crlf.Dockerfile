FROM a
RUN echo one \
    two
ENV A=1 \
  B=2
CMD ["x"]
