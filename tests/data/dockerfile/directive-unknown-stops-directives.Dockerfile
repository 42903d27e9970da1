# foo=bar
# escape=`
FROM a
RUN x \
 y
