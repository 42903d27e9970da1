# check=skip=JSONArgsRecommended;error=true
FROM a
CMD x
