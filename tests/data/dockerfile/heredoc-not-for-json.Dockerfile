FROM a
RUN ["<<EOF"]
COPY ["<<EOF", "/x"]
