FROM a
ENV a=b\\\\
RUN x
