FROM a
RUN echo <<
RUN echo << EOF
RUN cat <<<word
