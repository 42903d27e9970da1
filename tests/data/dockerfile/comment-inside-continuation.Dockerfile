FROM a
RUN apt-get update \
    # comment in the middle
    && apt-get install -y curl \
# unindented comment
    && echo done
