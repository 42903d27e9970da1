FROM a
RUN <<'EOF'
echo $HOME
EOF
RUN <<"EOF"
echo $HOME
EOF
RUN <<E"O"F
x
EOF
