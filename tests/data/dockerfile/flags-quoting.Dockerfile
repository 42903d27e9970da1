FROM a
COPY --chown="a b" --from='c d' x y
COPY --x=a\ b --y="" z w
RUN --mount=type=cache,target="/root/.cache" x
