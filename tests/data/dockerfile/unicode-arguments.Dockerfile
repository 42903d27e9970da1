FROM a
RUN echo 'héllo wörld' ✓
LABEL name="日本語"
WORKDIR /データ
CMD ["¿qué?"]
