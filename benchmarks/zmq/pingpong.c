/* pingpong.c -- the physical floor of the zmq benchmark's round-trip rows:
 * two processes exchanging fixed-size messages over loopback TCP with
 * blocking reads and writes, no ZeroMQ, no event loop. What one round trip
 * costs here (two wake-ups of a sleeping process, two TCP sends) bounds what
 * any library can do between two sleeping processes on this machine.
 *
 *   pingpong server tcp://127.0.0.1:*  WARMUP_MS WINDOW_MS
 *   pingpong client tcp://HOST:PORT    SIZE INFLIGHT WARMUP_MS WINDOW_MS
 *
 * Same arguments and output as peer.c's router and dealer: the server prints
 * "endpoint tcp://127.0.0.1:PORT" once listening; both print one JSON line
 * with their window's message count, wall and CPU seconds (and the client
 * p50/p99 latency in µs). The client keeps the traffic going after its line,
 * until killed, since the server's window ends after its own.
 *
 * With PINGPONG_POLL=1 in the environment, both ends read without blocking
 * and retry at once (a busy poll): the floor of a peer that never sleeps.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clocks.h"

static void die(const char *what) {
  fprintf(stderr, "pingpong: %s: %s\n", what, strerror(errno));
  exit(1);
}

static int poll_flag; /* MSG_DONTWAIT under PINGPONG_POLL=1 */

/* Reads exactly len bytes; exits on EOF or error. */
static void read_full(int fd, char *buf, size_t len) {
  size_t got = 0;
  while (got < len) {
    ssize_t n = recv(fd, buf + got, len - got, poll_flag);
    if (n > 0) {
      got += (size_t)n;
    } else if (n == 0) {
      exit(0); /* the peer went away: done */
    } else if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) {
      die("read");
    }
  }
}

static void write_full(int fd, const char *buf, size_t len) {
  size_t put = 0;
  while (put < len) {
    ssize_t n = send(fd, buf + put, len - put, MSG_NOSIGNAL);
    if (n >= 0) put += (size_t)n;
    else if (errno != EINTR) die("send");
  }
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* "tcp://HOST:PORT" (PORT may be '*' for the server) into an IPv4 address. */
static void parse_ep(const char *ep, struct sockaddr_in *sa) {
  memset(sa, 0, sizeof *sa);
  sa->sin_family = AF_INET;
  if (strncmp(ep, "tcp://", 6) != 0) {
    fprintf(stderr, "pingpong: endpoint %s: tcp://HOST:PORT only\n", ep);
    exit(2);
  }
  char host[64];
  const char *colon = strrchr(ep + 6, ':');
  size_t hl = colon ? (size_t)(colon - (ep + 6)) : 0;
  if (!colon || hl == 0 || hl >= sizeof host) {
    fprintf(stderr, "pingpong: endpoint %s: needs HOST:PORT\n", ep);
    exit(2);
  }
  memcpy(host, ep + 6, hl);
  host[hl] = 0;
  if (strcmp(host, "*") == 0) strcpy(host, "127.0.0.1");
  if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) {
    fprintf(stderr, "pingpong: endpoint %s: an IPv4 address is needed\n", ep);
    exit(2);
  }
  sa->sin_port = htons((unsigned short)(strcmp(colon + 1, "*") == 0 ? 0 : atoi(colon + 1)));
}

static void nodelay(int fd) {
  int one = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) die("TCP_NODELAY");
}

int main(int argc, char **argv) {
  const char *poll_env = getenv("PINGPONG_POLL");
  if (poll_env && strcmp(poll_env, "1") == 0) poll_flag = MSG_DONTWAIT;
  if (argc < 3) {
    fprintf(stderr, "usage: pingpong server|client ENDPOINT ...\n");
    return 2;
  }
  const char *role = argv[1];
  struct sockaddr_in sa;
  parse_ep(argv[2], &sa);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) die("socket");
  if (strcmp(role, "server") == 0 && argc >= 5) {
    double warm = atof(argv[3]) / 1e3, win = atof(argv[4]) / 1e3;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    nodelay(fd);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) die("bind");
    if (listen(fd, 1) != 0) die("listen");
    socklen_t sl = sizeof sa;
    if (getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) die("getsockname");
    printf("endpoint tcp://127.0.0.1:%d\n", ntohs(sa.sin_port));
    fflush(stdout);
    int c = accept(fd, NULL, NULL);
    if (c < 0) die("accept");
    nodelay(c);
    /* The size comes first, as a 4-byte header of the connection. */
    unsigned int size;
    read_full(c, (char *)&size, sizeof size);
    if (size == 0 || size > 1 << 20) {
      fprintf(stderr, "pingpong: bad size %u\n", size);
      return 1;
    }
    char *buf = malloc(size);
    if (!buf) die("malloc");
    long count = 0;
    int state = 0;
    double t0 = 0, w0 = 0, c0 = 0;
    for (;;) {
      read_full(c, buf, size);
      write_full(c, buf, size);
      double t = now_s();
      if (state == 0) {
        state = 1;
        t0 = t + warm;
      } else if (state == 1 && t >= t0) {
        state = 2;
        count = 0;
        w0 = t;
        c0 = cpu_s();
      } else if (state == 2) {
        count++;
        if (t >= w0 + win) {
          printf("{\"messages\":%ld,\"wall\":%.6f,\"cpu\":%.6f}\n", count, t - w0, cpu_s() - c0);
          fflush(stdout);
          state = 3;
        }
      }
    }
  }
  if (strcmp(role, "client") == 0 && argc >= 7) {
    unsigned int size = (unsigned int)atoi(argv[3]);
    int inflight = atoi(argv[4]);
    double warm = atof(argv[5]) / 1e3, win = atof(argv[6]) / 1e3;
    if (size < sizeof(double)) size = sizeof(double);
    if (inflight < 1) inflight = 1;
    nodelay(fd);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) die("connect");
    write_full(fd, (const char *)&size, sizeof size);
    char *buf = calloc(1, size);
    if (!buf) die("calloc");
    size_t cap = 1 << 20, nlat = 0;
    double *lat = malloc(cap * sizeof *lat);
    if (!lat) die("malloc");
    double t = now_s();
    double t0 = t + warm, t1 = t0 + win, w0 = 0, c0 = 0;
    long count = 0;
    int state = 0;
    for (int i = 0; i < inflight; i++) {
      memcpy(buf, &t, sizeof t);
      write_full(fd, buf, size);
    }
    for (;;) {
      read_full(fd, buf, size);
      t = now_s();
      double sent;
      memcpy(&sent, buf, sizeof sent);
      if (state == 1) {
        count++;
        if (nlat < cap) lat[nlat++] = t - sent;
        if (t >= t1) {
          state = 2;
          qsort(lat, nlat, sizeof *lat, cmp_double);
          printf("{\"messages\":%ld,\"wall\":%.6f,\"cpu\":%.6f,\"p50\":%.3f,\"p99\":%.3f}\n", count, t - w0,
                 cpu_s() - c0, lat[nlat / 2] * 1e6, lat[(size_t)(nlat * 0.99)] * 1e6);
          fflush(stdout);
        }
      } else if (state == 0 && t >= t0) {
        state = 1;
        w0 = t;
        c0 = cpu_s();
      }
      memcpy(buf, &t, sizeof t);
      write_full(fd, buf, size);
    }
  }
  fprintf(stderr, "pingpong: bad arguments\n");
  return 2;
}
