FROM a
RUN --mount=type=cache,target=/c --network=none <<EOF
make
EOF
