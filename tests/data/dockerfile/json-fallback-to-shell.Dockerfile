FROM a
RUN ['single', 'quotes']
RUN ["unterminated
RUN ["trailing", ]
RUN [unquoted]
RUN ["a" "b"]
CMD {"not": "array"}
CMD "just a string"
RUN [NaN]
RUN [Infinity]
RUN ["a	b"]
ENTRYPOINT [
