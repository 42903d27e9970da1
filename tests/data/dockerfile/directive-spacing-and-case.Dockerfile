#  ESCAPE  =  `
#Syntax=docker/dockerfile:1
FROM a
RUN x `
 y
