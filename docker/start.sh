#!/usr/bin/env bash
# The image CMD the platform starts (bash /usr/bin/start.sh): runs /app/start.py. bash stays
# PID 1 and passes SIGTERM / SIGINT (docker stop) on as SIGTERM: python as PID 1 ignores it.
cd /app || exit 1
python3 /app/start.py "$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
wait "$child"; status=$?
while kill -0 "$child" 2>/dev/null; do wait "$child"; status=$?; done
exit "$status"
