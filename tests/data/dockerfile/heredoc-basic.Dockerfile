FROM a
RUN <<EOF
echo hello
echo world
EOF
RUN after
