FROM a
RUN echo ["not", "json"]
CMD echo "[1]"
