FROM a
RUN echo a\\
RUN echo b\\\
RUN c
RUN d\\\\
RUN e
