FROM a
RUN x \


