FROM a
RUN ["a"] trailing text
CMD ["b"]]
ENTRYPOINT ["c"] ["d"]
