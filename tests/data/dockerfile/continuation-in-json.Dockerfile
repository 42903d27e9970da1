FROM a
CMD ["a", \
     "b", \
     "c"]
