#!/bin/sh
# The app: prints its pages and records the visit in its own writable layer.
for name in $(cat /app/out/index); do cat "/app/out/$name"; done
echo "visited by $(hostname)" >> /app/visits.log
