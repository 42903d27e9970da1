FROM a
HEALTHCHECK --interval=1s \
  --timeout=1s \
  CMD ["a", \
       "b"]
