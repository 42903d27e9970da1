# escape is `
# escape:`
FROM a
RUN a \
 b
