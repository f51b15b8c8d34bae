#!/bin/bash
# per-process.sh [DIST] -- CPU per request of the pipeline's front end and of
# its workers separately (the overhead row sums them): `server.js pipeline 1`
# with 16 jobs per worker pinned to CPU 0, `wrk -t1 -c32` on CPU 1 for 2 s of
# warm-up, then utime+stime from /proc/PID/stat over 5 s of load.
# DIST: a build directory inside the repository (dist, or a copy such as dist-old).
set -euo pipefail
cd "$(dirname "$0")/../.."
DIST=$(pwd)/${1:-dist}
OUT=$(mktemp)
IOMUX_BENCH_DIST=$DIST IOMUX_BENCH_CONCURRENCY=16 taskset -c 0 node benchmarks/pipeline/server.js pipeline 1 > "$OUT" 2>&1 &
SPID=$!
trap 'kill $SPID 2>/dev/null; wait $SPID 2>/dev/null; rm -f "$OUT"' EXIT
for _ in $(seq 300); do grep -q listening "$OUT" && break; sleep 0.1; done
PORT=$(awk '/listening/{print $2}' "$OUT")
URL="http://127.0.0.1:$PORT/is_prime?possible_prime=97"
taskset -c 1 wrk -t1 -c32 -d2s "$URL" > /dev/null
kids=$(pgrep -P $SPID || true)
for k in $kids; do kids="$kids $(pgrep -P "$k" || true)"; done
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
sum() { local t=0; for k in $kids; do t=$((t + $(ticks "$k"))); done; echo $t; }
f0=$(ticks $SPID); w0=$(sum)
n=$(taskset -c 1 wrk -t1 -c32 -d5s "$URL" | awk '/requests in/{print $1}')
f1=$(ticks $SPID); w1=$(sum)
HZ=$(getconf CLK_TCK)
awk -v f=$((f1 - f0)) -v w=$((w1 - w0)) -v n="$n" -v hz="$HZ" -v d="${1:-dist}" \
  'BEGIN { printf "%s: front end %.1f, workers %.1f µs CPU/request (%d requests)\n", d, f * 1e6 / hz / n, w * 1e6 / hz / n, n }'
