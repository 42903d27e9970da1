FROM a
RUN echo a\ b \$c \\d
COPY a\ b c\ d
ENV A=a\\\ b
