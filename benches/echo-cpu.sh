#!/bin/bash
# CPU time per echo round trip of the server and of the load client, beside echo_bench's figures.
#
#   benches/echo-cpu.sh BIN KIND C SECS      e.g. benches/echo-cpu.sh target/release/examples/echo_bench greenfiber 50 3
#
# Starts `BIN server KIND` on CPU 0 and `BIN client 127.0.0.1:PORT C SECS` on CPU 1 (as
# `echo_bench run` does), and prints round trips/s, p99, user and system µs per round trip for
# each side (from /proc/PID/stat and /usr/bin/time), each side's CPU use, voluntary sleeps per
# 1000 round trips, and the CPU used by anything else on the machine meanwhile ("other"; a run
# with more than 5% is marked NOISY). Round trips are counted over the client's warm-up too
# (rt/s x (SECS + 0.5)), as its CPU time is.
set -e
BIN=$1; KIND=$2; C=$3; SECS=$4
coproc SRV { exec taskset -c 0 "$BIN" server "$KIND"; }
read -r line <&"${SRV[0]}"
PORT=${line#port }
PID=$SRV_PID
sleep 0.2
TCK=$(getconf CLK_TCK)
cpu() { read -r _ u n s i w q sq st _ < /proc/stat; echo $((u + n + s + q + sq + st)); }
s0=$(awk '{print $14, $15}' /proc/$PID/stat); v0=$(awk '/^voluntary_ctxt/{print $2}' /proc/$PID/status)
A0=$(cpu); T0=$(date +%s.%N)
OUT=$( { /usr/bin/time -f "CT %U %S %w" taskset -c 1 "$BIN" client 127.0.0.1:$PORT "$C" "$SECS"; } 2>&1 )
T1=$(date +%s.%N); A1=$(cpu)
s1=$(awk '{print $14, $15}' /proc/$PID/stat); v1=$(awk '/^voluntary_ctxt/{print $2}' /proc/$PID/status)
kill $PID; wait $PID 2>/dev/null || true
echo "$OUT" | awk -v k="$KIND" -v c="$C" -v s="$s0 $s1" -v t="$TCK" -v wall="$(echo "$T1 - $T0" | bc)" \
    -v secs="$SECS" -v all=$((A1 - A0)) -v sv=$((v1 - v0)) '
/rt_per_s/ { rt = $2; p = $4 } /^CT/ { cu = $2; cs = $3; cw = $4 }
END {
  split(s, a, " "); su = (a[3] - a[1]) / t; ss = (a[4] - a[2]) / t; n = rt * (secs + 0.5)
  other = all / t - su - ss - cu - cs
  printf "%-10s C=%-4s rt/s=%6.0f p99=%6s | srv u=%.2f s=%.2f us/rt util=%3.0f%% | cli u=%.2f s=%.2f us/rt util=%3.0f%% | sleeps/krt srv=%.1f cli=%.1f | other=%.0f%%%s\n",
    k, c, rt, p, 1e6 * su / n, 1e6 * ss / n, 100 * (su + ss) / wall, 1e6 * cu / n, 1e6 * cs / n,
    100 * (cu + cs) / wall, 1000 * sv / n, 1000 * cw / n, 100 * other / wall, (other / wall > 0.05 ? " NOISY" : "")
}'
