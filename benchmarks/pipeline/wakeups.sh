#!/bin/bash
# wakeups.sh [DIST] [BACKEND] -- system calls per request of the pipeline's
# front end and of each worker, from `strace -f -c` of every process: the
# set-up of per-process.sh (`server.js pipeline 1` with 16 jobs per worker on
# CPU 0, `wrk -t1 -c32` on CPU 1, 1 s of warm-up), then 4 s of load traced.
# libuv's waits are epoll_pwait (its errors: EINTR), the core's own wait
# epoll_wait (epoll backend) or io_uring_enter. strace slows every process:
# compare the counts per request, not the rates.
# DIST: a build directory inside the repository (dist, or a copy with its
# addon next to it); BACKEND: IOMUX_BACKEND for every process (default: none).
set -uo pipefail
cd "$(dirname "$0")/../.."
DIST=$(pwd)/${1:-dist}
BE=${2:-}
TR=$(mktemp -d)
. benchmarks/pipeline/start.sh
trap 'stop_pipeline; rm -rf "$TR"' EXIT
start_pipeline "$DIST" "$BE" 1
procs=$SPID # the front end, then the workers (the leaves)
for k in $kids; do [ -z "$(pgrep -P "$k")" ] && procs="$procs $k"; done
tracers=""
for p in $procs; do strace -f -c -o "$TR/$p" -p "$p" 2>/dev/null & tracers="$tracers $!"; done
sleep 0.5
n=$(taskset -c 1 wrk -t1 -c32 -d4s "$URL" | awk '/requests in/{print $1}')
for t in $tracers; do kill -INT "$t"; done
wait $tracers 2>/dev/null
echo "${1:-dist} ${BE:-default backend}: $n requests"
for p in $procs; do
  [ "$p" = "$SPID" ] && echo "front end:" || echo "worker $p:"
  awk -v n="$n" '/^ *[0-9]/ && $NF != "total" {
      e = NF == 6 ? $5 : 0
      if ($4 / n > 0.01) printf "  %-15s %.3f per request (errors %.3f)\n", $NF, $4 / n, e / n }' "$TR/$p"
done
