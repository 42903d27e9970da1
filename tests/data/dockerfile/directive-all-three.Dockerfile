# syntax=x
# escape=`
# check=error=true
FROM a
RUN a `
b
