FR\
OM a
RU\
N x
