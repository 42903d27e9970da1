FROM a
COPY --from=build src dst
COPY --chown=user:group --chmod=0644 src dst
COPY --link src dst
COPY --link=false --parents src dst
ADD --keep-git-dir=true https://example.com/repo.git /src
ADD --checksum=sha256:abc https://example.com/f /f
COPY --exclude=*.tmp --exclude=*.log . /app
RUN --mount=type=bind,source=.,target=/src --mount=type=secret,id=tok make
RUN --network=none --security=sandbox true
