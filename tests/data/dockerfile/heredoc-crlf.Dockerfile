FROM a
RUN <<EOF
line
EOF
RUN x
