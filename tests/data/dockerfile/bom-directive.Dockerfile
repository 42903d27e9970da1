# escape=`
FROM a
RUN x `
 y
