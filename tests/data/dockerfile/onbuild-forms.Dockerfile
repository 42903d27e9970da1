FROM a
ONBUILD RUN echo hi
ONBUILD ADD . /app/src
ONBUILD COPY --from=builder /x /y
ONBUILD CMD ["a", "b"]
ONBUILD ENV A=1 B="two words"
ONBUILD LABEL legacy value here
ONBUILD HEALTHCHECK --interval=1s CMD true
ONBUILD   WORKDIR   /w  
onbuild run lowercase
ONBUILD ARG X=1
ONBUILD EXPOSE 80 443
