#!/bin/bash
# per-process.sh [DIST] -- CPU per request of the pipeline's front end and of
# its workers separately (the overhead row sums them): `server.js pipeline 1`
# with 16 jobs per worker pinned to CPU 0, `wrk -t1 -c32` on CPU 1 for 2 s of
# warm-up, then utime+stime from /proc/PID/stat over 5 s of load.
# DIST: a build directory inside the repository (dist, or a copy such as dist-old).
set -euo pipefail
cd "$(dirname "$0")/../.."
DIST=$(pwd)/${1:-dist}
. benchmarks/pipeline/start.sh
trap stop_pipeline EXIT
start_pipeline "$DIST" "" 2
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
sum() { local t=0; for k in $kids; do t=$((t + $(ticks "$k"))); done; echo $t; }
f0=$(ticks $SPID); w0=$(sum)
n=$(taskset -c 1 wrk -t1 -c32 -d5s "$URL" | awk '/requests in/{print $1}')
f1=$(ticks $SPID); w1=$(sum)
HZ=$(getconf CLK_TCK)
awk -v f=$((f1 - f0)) -v w=$((w1 - w0)) -v n="$n" -v hz="$HZ" -v d="${1:-dist}" \
  'BEGIN { printf "%s: front end %.1f, workers %.1f µs CPU/request (%d requests)\n", d, f * 1e6 / hz / n, w * 1e6 / hz / n, n }'
