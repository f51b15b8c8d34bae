/* peer.c -- the C/libzmq end of the zmq benchmark: the floor.
 *
 *   peer pull   BIND_EP  WARMUP_MS WINDOW_MS
 *   peer push   CONN_EP  SIZE
 *   peer router BIND_EP  WARMUP_MS WINDOW_MS
 *   peer dealer CONN_EP  SIZE INFLIGHT WARMUP_MS WINDOW_MS
 *
 * A binding end prints "endpoint <ep>" once bound. Measuring ends print one
 * JSON line with their window's message count, wall and CPU seconds
 * (getrusage: every thread of the process, libzmq's I/O thread included).
 */
#include <zmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clocks.h"

static void die(const char *what) {
  fprintf(stderr, "peer: %s: %s\n", what, zmq_strerror(zmq_errno()));
  exit(1);
}

static void *open_socket(void *ctx, int type, const char *ep, int bind) {
  void *s = zmq_socket(ctx, type);
  if (!s) die("zmq_socket");
  int linger = 0;
  zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
  /* ZMQ_BENCH_SNDBUF / ZMQ_BENCH_RCVBUF, as peer.js: unset, the OS default. */
  const char *snd = getenv("ZMQ_BENCH_SNDBUF"), *rcv = getenv("ZMQ_BENCH_RCVBUF");
  int v;
  if (snd && *snd && (v = atoi(snd), zmq_setsockopt(s, ZMQ_SNDBUF, &v, sizeof v)) != 0)
    die("ZMQ_SNDBUF");
  if (rcv && *rcv && (v = atoi(rcv), zmq_setsockopt(s, ZMQ_RCVBUF, &v, sizeof v)) != 0)
    die("ZMQ_RCVBUF");
  if (bind) {
    if (zmq_bind(s, ep) != 0) die("zmq_bind");
    char last[256];
    size_t n = sizeof last;
    if (zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, last, &n) != 0) die("ZMQ_LAST_ENDPOINT");
    printf("endpoint %s\n", last);
    fflush(stdout);
  } else if (zmq_connect(s, ep) != 0) {
    die("zmq_connect");
  }
  return s;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* The dealer's result; it keeps the traffic going after it, until killed,
 * since the server's window ends after its own. */
static void report(long count, double wall, double cpu, double *lat, size_t n) {
  qsort(lat, n, sizeof *lat, cmp_double);
  printf("{\"messages\":%ld,\"wall\":%.6f,\"cpu\":%.6f,\"p50\":%.3f,\"p99\":%.3f}\n", count, wall, cpu,
         n ? lat[n / 2] * 1e6 : 0, n ? lat[(size_t)(n * 0.99)] * 1e6 : 0);
  fflush(stdout);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: peer pull|push|router|dealer ENDPOINT ...\n");
    return 2;
  }
  const char *role = argv[1], *ep = argv[2];
  void *ctx = zmq_ctx_new();
  if (strcmp(role, "push") == 0 && argc >= 4) {
    size_t size = (size_t)atol(argv[3]);
    void *s = open_socket(ctx, ZMQ_PUSH, ep, 0);
    char *buf = calloc(1, size);
    for (;;) if (zmq_send(s, buf, size, 0) < 0) die("zmq_send");
  }
  if (strcmp(role, "pull") == 0 && argc >= 5) {
    double warm = atof(argv[3]) / 1e3, win = atof(argv[4]) / 1e3;
    void *s = open_socket(ctx, ZMQ_PULL, ep, 1);
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, s, 0) < 0) die("recv");
    double t0 = now_s() + warm, t1 = t0 + win, c0 = 0, w0 = 0;
    long count = 0;
    int measuring = 0;
    for (;;) {
      if (zmq_msg_recv(&m, s, 0) < 0) die("recv");
      if ((++count & 255) == 0) {
        double t = now_s();
        if (!measuring && t >= t0) { measuring = 1; count = 0; c0 = cpu_s(); w0 = t; }
        else if (measuring && t >= t1) break;
      }
    }
    printf("{\"messages\":%ld,\"wall\":%.6f,\"cpu\":%.6f}\n", count, now_s() - w0, cpu_s() - c0);
    fflush(stdout);
    return 0;
  }
  if (strcmp(role, "router") == 0 && argc >= 5) {
    double warm = atof(argv[3]) / 1e3, win = atof(argv[4]) / 1e3;
    void *s = open_socket(ctx, ZMQ_ROUTER, ep, 1);
    zmq_msg_t id, body;
    zmq_msg_init(&id);
    zmq_msg_init(&body);
    double t0 = 0, t1 = 0, c0 = 0, w0 = 0;
    long count = 0;
    int state = 0; /* 0 before the first message, 1 warming up, 2 measuring */
    for (;;) {
      if (zmq_msg_recv(&id, s, 0) < 0) die("recv id");
      if (zmq_msg_recv(&body, s, 0) < 0) die("recv body");
      if (zmq_msg_send(&id, s, ZMQ_SNDMORE) < 0) die("send id");
      if (zmq_msg_send(&body, s, 0) < 0) die("send body");
      count++;
      if (state == 0) { state = 1; t0 = now_s() + warm; t1 = t0 + win; }
      if ((count & 63) == 0) {
        double t = now_s();
        if (state == 1 && t >= t0) { state = 2; count = 0; c0 = cpu_s(); w0 = t; }
        else if (state == 2 && t >= t1) break;
      }
    }
    printf("{\"messages\":%ld,\"wall\":%.6f,\"cpu\":%.6f}\n", count, now_s() - w0, cpu_s() - c0);
    fflush(stdout);
    /* keep answering until killed, so the client's window is not cut short */
    for (;;) {
      if (zmq_msg_recv(&id, s, 0) < 0) break;
      if (zmq_msg_recv(&body, s, 0) < 0) break;
      zmq_msg_send(&id, s, ZMQ_SNDMORE);
      zmq_msg_send(&body, s, 0);
    }
    return 0;
  }
  if (strcmp(role, "dealer") == 0 && argc >= 7) {
    size_t size = (size_t)atol(argv[3]);
    int inflight = atoi(argv[4]);
    double warm = atof(argv[5]) / 1e3, win = atof(argv[6]) / 1e3;
    if (size < sizeof(double)) size = sizeof(double);
    void *s = open_socket(ctx, ZMQ_DEALER, ep, 0);
    char *buf = calloc(1, size);
    size_t cap = 1 << 20, n = 0;
    double *lat = malloc(cap * sizeof *lat);
    for (int i = 0; i < inflight; i++) {
      double t = now_s();
      memcpy(buf, &t, sizeof t);
      if (zmq_send(s, buf, size, 0) < 0) die("send");
    }
    double t0 = now_s() + warm, t1 = t0 + win, c0 = 0, w0 = 0;
    int measuring = 0;
    long count = 0;
    zmq_msg_t m;
    zmq_msg_init(&m);
    for (;;) {
      if (zmq_msg_recv(&m, s, 0) < 0) die("recv");
      double t = now_s(), sent;
      memcpy(&sent, zmq_msg_data(&m), sizeof sent);
      if (measuring == 1) {
        count++;
        if (n < cap) lat[n++] = t - sent;
        if (t >= t1) {
          measuring = 2;
          report(count, now_s() - w0, cpu_s() - c0, lat, n);
        }
      } else if (measuring == 0 && t >= t0) {
        measuring = 1;
        c0 = cpu_s();
        w0 = t;
      }
      memcpy(buf, &t, sizeof t);
      if (zmq_send(s, buf, size, 0) < 0) die("send");
    }
  }
  fprintf(stderr, "peer: bad arguments\n");
  return 2;
}
