FROM a
RUN <<EOF
FROM b
# comment

RUN c \
EOF
CMD done
