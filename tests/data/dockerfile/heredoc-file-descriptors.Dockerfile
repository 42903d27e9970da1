FROM a
RUN 3<<EOF 4<<"X" cat /dev/fd/3 /dev/fd/4
three
EOF
four
X
