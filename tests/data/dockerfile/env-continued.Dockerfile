FROM a
ENV A=1 \
    B=2 \
    C="three \
    four"
