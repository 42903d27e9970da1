FROM a
RUN <<-EOF
	echo tabbed
		EOF not end
	EOF
RUN <<-'X'
	x
		X
