FROM a AS Build
FROM a AS build-1.2_x
COPY --from=Build / /
