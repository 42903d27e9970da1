# escape=`
FROM a
RUN <<EOF
C:\path `
EOF
RUN a `
 b
