FROM a
ENV A=one B=two
ARG C D
RUN echo x
LABEL l="a b"
EXPOSE 80 443
