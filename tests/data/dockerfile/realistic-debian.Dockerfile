FROM debian:bookworm-slim
LABEL maintainer="ops@example.com" \
      description="A service; with \"quotes\" and \
continued text"
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends \
        ca-certificates \
        curl \
    ; \
    rm -rf /var/lib/apt/lists/*
# a comment between instructions
ENV LANG=C.UTF-8 \
    TZ=Etc/UTC
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
