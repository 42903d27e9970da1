ARG BASE=busybox
FROM $BASE AS build
MAINTAINER Someone <someone@example.com>
LABEL org.example.version="1.0" org.example.name=demo
ENV PATH=/usr/local/bin:$PATH HOME=/root
ARG VERSION
ADD https://example.com/file.tar.gz /tmp/
COPY --from=build /src /dst
RUN make install
WORKDIR /app
USER 1000:1000
EXPOSE 8080/tcp 53/udp
VOLUME ["/data"]
STOPSIGNAL SIGTERM
SHELL ["/bin/sh", "-ec"]
HEALTHCHECK --interval=30s CMD wget -q -O- http://localhost/ || exit 1
ONBUILD RUN echo triggered
ENTRYPOINT ["/entrypoint.sh"]
CMD ["--help"]
