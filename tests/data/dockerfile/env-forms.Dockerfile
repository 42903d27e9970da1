FROM busybox
ENV A 1
ENV B a value with spaces
ENV C=1
ENV D=1 E=2 F=3
ENV G="a b" H='c d' I=e\ f
ENV J=
ENV K=""
ENV L="x \"y\" z"
ENV M='it''s'
ENV N=a"b c"d
ENV O=$PATH:/x P=${Q}
ENV  R   =   S
