/* clocks.h -- the wall and CPU clocks the zmq benchmark's C programs
 * (peer.c, pingpong.c) report their windows in. */
#ifndef ZMQ_BENCH_CLOCKS_H
#define ZMQ_BENCH_CLOCKS_H

#include <sys/resource.h>
#include <time.h>

/* Monotonic wall time, seconds. */
static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* User plus system CPU time of the whole process (every thread), seconds. */
static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

#endif
