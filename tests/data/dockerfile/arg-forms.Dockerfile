ARG A
ARG B=1
ARG C="with space" D='single quoted' E=plain
ARG F=
ARG G=a\ b
ARG H="a \"quoted\" word"
ARG I=$OTHER J=${OTHER:-x}
FROM scratch
ARG K L M
