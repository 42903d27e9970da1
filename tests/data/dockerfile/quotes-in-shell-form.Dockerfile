FROM a
RUN echo "unterminated
RUN echo 'also unterminated
RUN echo "a 'b' c"
