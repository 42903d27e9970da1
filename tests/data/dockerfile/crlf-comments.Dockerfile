# escape=`
# comment
FROM a
RUN x `
  y
