FROM a
RUN cat <<EOF \
    | sort
b
a
EOF
