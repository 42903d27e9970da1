FROM a
COPY --chown=é:ü src /dst
RUN --mount=type=cache,target=/données,id=日本 make
ADD --checksum=🙂 x y
