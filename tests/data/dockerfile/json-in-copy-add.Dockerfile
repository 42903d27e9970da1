FROM a
COPY ["src file", "/dst dir/"]
ADD ["a", "b", "/c/"]
COPY --chown=1:1 ["x", "y"]
