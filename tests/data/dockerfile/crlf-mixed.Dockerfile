FROM a
RUN one
RUN two

RUN three \
 four
