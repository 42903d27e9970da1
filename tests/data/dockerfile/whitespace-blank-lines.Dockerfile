


FROM a



RUN x


