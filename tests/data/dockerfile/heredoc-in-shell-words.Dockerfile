FROM a
RUN python3 - <<'PY' > /out
print('hi')
PY
RUN bash -c 'cat' <<EOF && echo after
in
EOF
