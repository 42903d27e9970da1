FROM a
COPY --from=x
RUN --network=none
