FROM a
ENV A="one\ntwo" B=one\\ntwo C='one\ntwo'
