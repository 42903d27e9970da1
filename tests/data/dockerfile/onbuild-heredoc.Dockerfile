FROM a
ONBUILD RUN <<EOF
echo in trigger
EOF
ONBUILD COPY <<EOF /x
content
EOF
RUN after
