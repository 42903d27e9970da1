FROM a
RUN ["echo", "hello world"]
CMD ["a", "b c", ""]
ENTRYPOINT [ "/bin/sh" , "-c" ]
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
CMD []
RUN   ["spaced"]   
