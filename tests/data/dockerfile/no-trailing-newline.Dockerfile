FROM busybox
RUN echo done