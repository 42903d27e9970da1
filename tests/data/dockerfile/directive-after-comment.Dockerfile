# just a comment
# escape=`
FROM a
RUN a \
 b
