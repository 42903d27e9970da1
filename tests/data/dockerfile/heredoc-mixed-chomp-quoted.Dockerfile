FROM a
RUN <<-EOF cat <<"B"
	hi $x
	EOF
bb
B
RUN x
