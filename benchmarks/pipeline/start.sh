# start.sh -- sourced by per-process.sh and wakeups.sh.
#
# start_pipeline DIST BACKEND WARM: starts `server.js pipeline 1` (16 jobs per
# worker) on CPU 0 with the build in DIST (and IOMUX_BACKEND=BACKEND unless
# it is empty), waits until it listens, loads it with `wrk -t1 -c32` on CPU 1
# for WARM seconds, and sets SPID (the front end), URL, and kids (its
# descendants: the supervisor's services and their workers).
# stop_pipeline: stops it; the caller's EXIT trap runs it.

start_pipeline() {
  PIPE_OUT=$(mktemp)
  env ${2:+IOMUX_BACKEND=$2} IOMUX_BENCH_DIST="$1" IOMUX_BENCH_CONCURRENCY=16 \
    taskset -c 0 node benchmarks/pipeline/server.js pipeline 1 > "$PIPE_OUT" 2>&1 &
  SPID=$!
  for _ in $(seq 300); do grep -q listening "$PIPE_OUT" && break; sleep 0.1; done
  local port k
  port=$(awk '/listening/{print $2}' "$PIPE_OUT")
  URL="http://127.0.0.1:$port/is_prime?possible_prime=97"
  taskset -c 1 wrk -t1 -c32 -d"$3"s "$URL" > /dev/null
  kids=$(pgrep -P "$SPID" || true)
  for k in $kids; do kids="$kids $(pgrep -P "$k" || true)"; done
}

stop_pipeline() {
  [ -n "${SPID:-}" ] && { kill "$SPID" 2>/dev/null; wait "$SPID" 2>/dev/null; }
  rm -f "${PIPE_OUT:-}"
}
