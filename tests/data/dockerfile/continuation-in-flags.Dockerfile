FROM a
COPY --chown=1:1 \
     --chmod=644 \
     src /dst
