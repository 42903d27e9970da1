FROM a
# comment ending in backslash \
RUN echo not continued
