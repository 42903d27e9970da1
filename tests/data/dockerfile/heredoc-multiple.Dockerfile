FROM a
RUN <<A <<B cat
first
A
second
B
COPY <<one.txt <<two.txt /dst/
1
one.txt
2
two.txt
