FROM a
RUN <<$X
x
$X
RUN <<E\OF
y
EOF
RUN <<'E F'
z
E F
RUN <<a.b-c_d
w
a.b-c_d
