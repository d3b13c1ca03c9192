#!/bin/bash
# User-space instructions per echo round trip in the server, counted by callgrind: a figure
# that does not depend on the host's speed or load, beside echo_bench's wall-clock ones.
#
#   benches/echo-instr.sh BIN KIND C SECS    e.g. benches/echo-instr.sh target/release/examples/echo_bench greenfiber 50 5
#
# Runs `BIN server KIND` under callgrind and `BIN client 127.0.0.1:PORT C SECS` against it,
# dumps the server's counters when the client is done, and divides them by the server's calls
# to libc's send/write family (each round trip is one 64-byte reply written with one call).
# Start-up and connection set-up are counted too (under 1% at C=50). Kernel time (the
# syscalls themselves) is not counted: compare servers by this and by echo_bench together.
#
# With CACHE=1 callgrind also models this machine's caches (48 KiB 12-way L1d, 1 MiB 16-way
# L2, 64-byte lines), and the misses per round trip are printed too: what a server's working
# set costs once many connections no longer fit (benches/RESULTS-net.md, 2026-12-07).
#
#   CACHE=1 benches/echo-instr.sh target/release/examples/echo_bench greenfiber 1000 8
set -euo pipefail
BIN=$1; KIND=$2; C=$3; SECS=$4
OUT=$(mktemp -d)
SIM=()
[[ ${CACHE:-0} == 1 ]] && SIM=(--cache-sim=yes --D1=49152,12,64 --LL=1048576,16,64)
valgrind --tool=callgrind "${SIM[@]}" --callgrind-out-file="$OUT/cg" "$BIN" server "$KIND" > "$OUT/log" 2>&1 &
VG=$!
for _ in $(seq 1 150); do grep -q '^port' "$OUT/log" && break; sleep 0.2; done
PORT=$(awk '/^port/ {print $2}' "$OUT/log")
"$BIN" client "127.0.0.1:$PORT" "$C" "$SECS" > /dev/null 2>&1
callgrind_control -d "$VG" > /dev/null 2>&1
sleep 1
kill -9 "$VG" 2> /dev/null || true
wait "$VG" 2> /dev/null || true
python3 - "$KIND" "$C" "$OUT"/cg.* <<'PY'
import re, sys
kind, conns, files = sys.argv[1], sys.argv[2], sys.argv[3:]
writes = {"send", "write", "sendto", "sendmsg", "writev", "__send", "__libc_send", "__write"}
total = calls = 0
events, sums = [], {}
for f in files:
    names, callee = {}, None
    for line in open(f):
        if line.startswith("events:"):
            events = line.split()[1:]
        if line.startswith("summary:"):
            for name, v in zip(events, line.split()[1:]):
                sums[name] = sums.get(name, 0) + int(v)
            total += int(line.split()[1])
        m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?", line)
        if m:
            if m.group(3):
                names[m.group(2)] = m.group(3).strip()
            if m.group(1) == "cfn":
                callee = names.get(m.group(2))
            continue
        if line.startswith("calls=") and callee in writes:
            calls += int(line.split()[0][len("calls="):])
print(f"{kind} C={conns}: {calls} replies, {total / max(calls, 1):.0f} instructions per round trip")
if "D1mr" in sums:
    per = {k: v / max(calls, 1) for k, v in sums.items()}
    print(f"  per round trip: L1d read misses {per['D1mr']:.2f}, write {per['D1mw']:.2f}; "
          f"L2 read misses {per['DLmr']:.2f}, write {per['DLmw']:.2f}")
PY
rm -rf "$OUT"
