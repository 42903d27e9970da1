FROM a
ENV GREETING=héllo NAME="日本語 テキスト" EMOJI=🙂
