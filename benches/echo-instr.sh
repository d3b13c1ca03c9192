#!/bin/bash
# User-space instructions per echo round trip in the server, counted by callgrind: a figure
# that does not depend on the host's speed or load, beside echo_bench's wall-clock ones.
#
#   benches/echo-instr.sh BIN KIND C SECS    e.g. benches/echo-instr.sh target/release/examples/echo_bench greenfiber 50 5
#
# Runs `BIN server KIND` under callgrind and `BIN client 127.0.0.1:PORT C SECS` against it,
# dumps the server's counters when the client is done, and divides them by the round trips
# the client made (its rt/s x SECS; start-up and connection set-up are counted too, a few
# per cent at C=50). Kernel time (the send/recv/epoll syscalls) is not counted: compare
# servers by this and by echo_bench together.
set -euo pipefail
BIN=$1; KIND=$2; C=$3; SECS=$4
OUT=$(mktemp -d)
valgrind --tool=callgrind --callgrind-out-file="$OUT/cg" "$BIN" server "$KIND" > "$OUT/log" 2>&1 &
VG=$!
for _ in $(seq 1 150); do grep -q '^port' "$OUT/log" && break; sleep 0.2; done
PORT=$(awk '/^port/ {print $2}' "$OUT/log")
RES=$("$BIN" client "127.0.0.1:$PORT" "$C" "$SECS")
callgrind_control -d "$VG" > /dev/null 2>&1
sleep 1
kill -9 "$VG" 2> /dev/null || true
wait "$VG" 2> /dev/null || true
IR=$(cat "$OUT"/cg.* | awk '/^summary:/ {s += $2} END {print s}')
echo "$RES $IR" | awk -v k="$KIND" -v c="$C" -v secs="$SECS" \
    '{ printf "%s C=%s: %s rt/s under callgrind, %.0f instructions per round trip\n", k, c, $2, $5 / ($2 * secs) }'
rm -rf "$OUT"
