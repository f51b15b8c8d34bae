/*
 * sync-floor.c -- the floor under the sync benchmark's contended hand-off:
 * the same single wake-up in C. Two processes (pinned to CPUs 0 and 1 when
 * there are two) take turns: one stores the time in a shared page and rings
 * the other's doorbell (iomux_sync_bell_ring, a unix datagram), which sleeps
 * in poll() and, once woken, records now - then. Then the roles swap. A
 * second run does the same over a socketpair with blocking reads. The ringer
 * spins 200 µs before each ring so that the other side sleeps.
 *
 *   cc -O2 -Ideps/iomux/include benchmarks/micro/sync-floor.c deps/iomux/src/shm_sync.c deps/iomux/src/shm.c -o floor
 *   ./floor [samples]     prints one JSON line: one-way wake-up p50/p99/max in µs
 */
#define _GNU_SOURCE
#include "iomux_sync.h"

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void pin(int cpu) {
  if (sysconf(_SC_NPROCESSORS_ONLN) < 2) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  sched_setaffinity(0, sizeof set, &set); /* best effort */
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

struct shared {
  volatile uint64_t stamp;
  double lat[];
};

/* side 0 or 1 of n rounds; mode 0: bells, 1: socketpair. Side 0 rings first. */
static int side(int me, int n, int mode, struct shared *sh, int fds[2], const char *paths[2]) {
  pin(me);
  int sender = mode == 0 ? iomux_sync_bell_sender() : -1;
  int my = fds[me];
  for (int i = 0; i < n; i++) {
    if ((i & 1) == me) {
      /* give the other side 200 µs to go to sleep (spinning, as the
       * JavaScript hand-off's holder does), then ring */
      uint64_t until = now_ns() + 200000;
      while (now_ns() < until) {
      }
      sh->stamp = now_ns();
      __atomic_thread_fence(__ATOMIC_SEQ_CST);
      int rc;
      if (mode == 0) {
        rc = iomux_sync_bell_ring(sender, paths[!me], (uint32_t)i);
      } else {
        char c = 1;
        ssize_t w;
        do w = write(my, &c, 1);
        while (w < 0 && errno == EINTR);
        rc = w == 1 ? 0 : -1;
      }
      if (rc) return 2;
      /* the answer of the other side comes as its own ring next round */
    } else {
      if (mode == 0) {
        struct pollfd p = {my, POLLIN, 0};
        int r;
        do r = poll(&p, 1, 5000);
        while (r < 0 && errno == EINTR);
        if (r != 1) return 3;
        uint64_t t = now_ns();
        if (iomux_sync_bell_drain(my) < 1) return 4;
        sh->lat[i] = (double)(t - sh->stamp) / 1000.0;
      } else {
        char c;
        ssize_t r;
        do r = read(my, &c, 1); /* blocking */
        while (r < 0 && errno == EINTR);
        uint64_t t = now_ns();
        if (r != 1) return 3;
        sh->lat[i] = (double)(t - sh->stamp) / 1000.0;
      }
    }
  }
  return 0;
}

static int run(int n, int mode, double out[3]) {
  size_t bytes = sizeof(struct shared) + (size_t)n * sizeof(double);
  struct shared *sh = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (sh == MAP_FAILED) return -1;
  char dir[] = "/tmp/iomux-floor-XXXXXX";
  char pa[64], pb[64];
  const char *paths[2] = {pa, pb};
  int fds[2];
  if (mode == 0) {
    if (!mkdtemp(dir)) return -1;
    snprintf(pa, sizeof pa, "%s/0", dir);
    snprintf(pb, sizeof pb, "%s/1", dir);
    fds[0] = iomux_sync_bell_open(pa);
    fds[1] = iomux_sync_bell_open(pb);
    if (fds[0] < 0 || fds[1] < 0) return -1;
  } else if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) < 0) {
    return -1;
  }
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) _exit(side(1, n, mode, sh, fds, paths));
  int rc = side(0, n, mode, sh, fds, paths);
  int st = 0;
  waitpid(pid, &st, 0);
  if (rc || !WIFEXITED(st) || WEXITSTATUS(st)) return -1;
  qsort(sh->lat, (size_t)n, sizeof(double), cmp);
  out[0] = sh->lat[n / 2];
  out[1] = sh->lat[(size_t)((double)n * 0.99)];
  out[2] = sh->lat[n - 1];
  close(fds[0]);
  close(fds[1]);
  if (mode == 0) {
    unlink(pa);
    unlink(pb);
    rmdir(dir);
  }
  munmap(sh, bytes);
  return 0;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 5000;
  if (n < 10) n = 10;
  double bell[3], pair[3];
  if (run(n, 0, bell) || run(n, 1, pair)) {
    fprintf(stderr, "sync-floor: %s\n", strerror(errno));
    return 1;
  }
  printf("{\"samples\":%d,\"bell\":{\"p50\":%.1f,\"p99\":%.1f,\"max\":%.1f},\"socketpair\":{\"p50\":%.1f,\"p99\":%.1f,\"max\":%.1f}}\n",
         n, bell[0], bell[1], bell[2], pair[0], pair[1], pair[2]);
  return 0;
}
