/* client.h -- what the benchmark's C load clients (echo_client.c,
 * http_check.c) share: exiting with a message, and the clocks they report
 * in. CLIENT_NAME, defined before the include, prefixes the messages. */
#ifndef IOMUX_BENCH_CLIENT_H
#define IOMUX_BENCH_CLIENT_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#ifndef CLIENT_NAME
#error "define CLIENT_NAME before including client.h"
#endif

/* A failed system call: its name and errno's message, then exit 1. */
static void die(const char *what) {
  fprintf(stderr, CLIENT_NAME ": %s: %s\n", what, strerror(errno));
  exit(1);
}

/* A failed run (bad arguments, a broken peer): the message, then exit 1. */
static void fail(const char *msg) {
  fprintf(stderr, CLIENT_NAME ": %s\n", msg);
  exit(1);
}

/* Monotonic wall time, nanoseconds. */
static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* User plus system CPU time of this process, seconds. */
static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

#endif
