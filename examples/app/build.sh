#!/bin/sh
# The "build step": turns the sources into what the app serves (runs once, in RUN).
set -eu
mkdir -p /app/out
for page in /app/pages/*.txt; do
    name=$(basename "$page" .txt)
    { echo "== $name =="; cat "$page"; } > "/app/out/$name.html"
done
cd /app/out && ls -- *.html > index
