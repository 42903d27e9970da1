FROM a
COPY <<EOF /etc/app.conf
key=value
EOF
ADD --chmod=755 <<EOF /usr/local/bin/run
#!/bin/sh
exec "$@"
EOF
COPY --chown=1:1 <<-EOF /x
	indented
	EOF
