/*
 * echo_client.c -- the load client of benchmarks/run.js for the TCP
 * scenarios. One thread, epoll, no allocation and no extra syscall on the
 * hot path (one read and one write per round trip), so its own cost per
 * message is little more than the kernel's loopback TCP work, which is the
 * same on both ends of a connection.
 * Compiled by the runner at bench time:  cc -O2 -o <tmp>/echo_client echo_client.c
 *
 *   echo_client echo HOST PORT CONNS SIZE   ping-pong: each connection sends SIZE
 *                                           bytes and waits for all of them to come
 *                                           back before sending again
 *   echo_client bulk HOST PORT CONNS SIZE   each connection streams SIZE-byte writes
 *                                           as fast as the server takes them
 *   echo_client idle HOST PORT MAXCONNS     opens connections on command ("open K",
 *                                           "open K echo", "open K http") and holds them
 *
 * Connections are opened in batches of IOMUX_BENCH_BATCH (default 500): a
 * batch is complete when every connect() of it finished and, in echo mode,
 * when every new connection echoed one ping, so the server has accepted the
 * whole batch before the next one starts and its accept queue (backlog 511)
 * never overflows (an overflow costs a 1 s SYN retransmit). In idle mode the
 * runner paces the batches itself: it sends "open K" and waits until the
 * server reports K more connections.
 *
 * Protocol: once the initial connections are up (none in idle mode), one
 * JSON line
 *   {"event":"connected","connections":N,"connectMs":T}
 * then commands, one per line on stdin:
 *   go SECONDS   runs one phase of traffic and prints one JSON result line
 *   open K [echo|http]
 *                (idle) opens K more connections, then prints
 *                {"event":"opened","connections":TOTAL,"connectMs":T};
 *                with "echo" each new connection first sends one byte and
 *                reads it back, with "http" it sends one keep-alive GET and
 *                reads the whole response (Content-Length), so the server
 *                holds connections that carried traffic
 *   quit (or EOF) closes every connection and exits 0.
 * Echo results count round trips (replies still in flight at the deadline
 * are waited for, and counted, so the phase ends with every connection
 * idle), with round-trip latency percentiles from a 1 us histogram. Bulk
 * results count bytes written. Each result carries the client's own CPU
 * time (getrusage) over the phase, so the runner can tell whether the client
 * was the bottleneck. Errors go to stderr and exit 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define CLIENT_NAME "echo_client"
#include "client.h"

enum { MODE_ECHO, MODE_BULK, MODE_IDLE };

typedef struct {
  int fd;
  size_t got;       /* echo: bytes of the current reply received */
  int busy;         /* echo: a ping is in flight */
  uint64_t sent_ns; /* echo: when it was sent */
} conn;

/* Latency histogram in microseconds: 1 us buckets below 1024 us, then 64
 * buckets per power of two (1.6% resolution) up to 2^40 us. */
#define HIST_LINEAR 1024
#define HIST_SUB 64
#define HIST_US (HIST_LINEAR + 30 * HIST_SUB)
#define MAX_EVENTS 1024

static conn *conns;
static int nconns;
static int mode;
static size_t size;
static unsigned char *payload;
static unsigned char *rbuf;
static size_t rbuf_size;
static uint32_t *hist;
static int epfd;

static void set_interest(int i, uint32_t events) {
  struct epoll_event ev = {0};
  ev.events = events;
  ev.data.u32 = (uint32_t)i;
  if (epoll_ctl(epfd, EPOLL_CTL_MOD, conns[i].fd, &ev) < 0) die("epoll_ctl MOD");
}

/* Opens connections [from, to) and waits for all of them. */
static void connect_batch(const struct sockaddr_in *sa, int from, int to) {
  for (int i = from; i < to; i++) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (const struct sockaddr *)sa, sizeof *sa) < 0 && errno != EINPROGRESS)
      die("connect");
    conns[i].fd = fd;
    struct epoll_event ev = {0};
    ev.events = EPOLLOUT;
    ev.data.u32 = (uint32_t)i;
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl ADD");
  }
  int pending = to - from;
  struct epoll_event evs[MAX_EVENTS];
  uint64_t deadline = now_ns() + 30ull * 1000000000u;
  while (pending > 0) {
    int n = epoll_wait(epfd, evs, MAX_EVENTS, 1000);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    if (now_ns() > deadline) fail("connections not established within 30 s");
    for (int k = 0; k < n; k++) {
      int i = (int)evs[k].data.u32;
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(conns[i].fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err) {
        errno = err;
        die("connect (async)");
      }
      /* Connected: from now on only readability matters (bulk asks for
       * writability per phase). */
      set_interest(i, mode == MODE_IDLE ? EPOLLRDHUP : EPOLLIN);
      pending--;
    }
  }
}

static int hist_index(uint64_t us) {
  if (us < HIST_LINEAR) return (int)us;
  int e = 63 - __builtin_clzll(us); /* >= 10 */
  if (e >= 40) return HIST_US - 1;
  return HIST_LINEAR + (e - 10) * HIST_SUB + (int)((us >> (e - 6)) & (HIST_SUB - 1));
}

static uint64_t hist_value(int i) {
  if (i < HIST_LINEAR) return (uint64_t)i;
  int e = 10 + (i - HIST_LINEAR) / HIST_SUB;
  uint64_t sub = (uint64_t)((i - HIST_LINEAR) % HIST_SUB);
  return (HIST_SUB + sub) << (e - 6);
}

static void json_result_echo(uint64_t rts, double secs, double cpu, uint64_t errors) {
  uint64_t total = 0, p50 = 0, p99 = 0, p999 = 0, max_us = 0;
  for (int i = 0; i < HIST_US; i++) total += hist[i];
  uint64_t acc = 0;
  int have50 = 0, have99 = 0, have999 = 0;
  for (int i = 0; i < HIST_US; i++) {
    if (!hist[i]) continue;
    acc += hist[i];
    max_us = hist_value(i);
    if (!have50 && acc * 100 >= total * 50) { p50 = hist_value(i); have50 = 1; }
    if (!have99 && acc * 100 >= total * 99) { p99 = hist_value(i); have99 = 1; }
    if (!have999 && acc * 1000 >= total * 999) { p999 = hist_value(i); have999 = 1; }
  }
  printf("{\"event\":\"result\",\"mode\":\"echo\",\"connections\":%d,\"size\":%zu,"
         "\"roundTrips\":%llu,\"seconds\":%.6f,\"perSecond\":%.1f,\"clientCpuS\":%.4f,"
         "\"latencyUs\":{\"p50\":%llu,\"p99\":%llu,\"p999\":%llu,\"max\":%llu},\"errors\":%llu}\n",
         nconns, size, (unsigned long long)rts, secs, secs > 0 ? rts / secs : 0.0, cpu,
         (unsigned long long)p50, (unsigned long long)p99, (unsigned long long)p999,
         (unsigned long long)max_us, (unsigned long long)errors);
  fflush(stdout);
}

static void send_ping(int i, uint64_t t) {
  ssize_t w = write(conns[i].fd, payload, size);
  if (w != (ssize_t)size) die("write (a ping must fit the socket buffer)");
  conns[i].busy = 1;
  conns[i].got = 0;
  conns[i].sent_ns = t;
}

/* Echo mode: one ping on each connection of [from, to), and every echo
 * back, before the next batch: proof that the server accepted them all. */
static void verify_batch(int from, int to) {
  struct epoll_event evs[MAX_EVENTS];
  int busy = 0;
  for (int i = from; i < to; i++) {
    send_ping(i, now_ns());
    busy++;
  }
  uint64_t deadline = now_ns() + 30ull * 1000000000u;
  while (busy > 0) {
    int n = epoll_wait(epfd, evs, MAX_EVENTS, 1000);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    if (now_ns() > deadline) fail("the server did not echo on every new connection within 30 s");
    for (int k = 0; k < n; k++) {
      conn *c = &conns[evs[k].data.u32];
      for (;;) {
        ssize_t r = read(c->fd, rbuf, rbuf_size);
        if (r > 0) {
          c->got += (size_t)r;
          if (c->got >= size) break;
          continue;
        }
        if (r == 0) fail("the server closed a connection");
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        if (errno == EINTR) continue;
        die("read");
      }
      if (c->busy && c->got >= size) {
        c->busy = 0;
        busy--;
      }
    }
  }
}

/* Idle mode, "open K echo|http": one exchange on each connection of
 * [from, to), all in flight together, then silence again. */
static const char HTTP_REQUEST[] = "GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
#define HTTP_HEAD_MAX 2048

static int http_complete(const char *buf, size_t len) {
  const char *end = memmem(buf, len, "\r\n\r\n", 4);
  if (!end) {
    if (len >= HTTP_HEAD_MAX) fail("an HTTP response head longer than 2 KiB");
    return 0;
  }
  size_t head = (size_t)(end - buf) + 4;
  size_t body = 0;
  for (const char *p = buf; p < end; p++) {
    if ((p == buf || p[-1] == '\n') && !strncasecmp(p, "content-length:", 15)) {
      body = (size_t)strtoul(p + 15, NULL, 10);
      break;
    }
  }
  if (len > head + body) fail("more bytes than one HTTP response");
  return len == head + body;
}

static void exchange_batch(int from, int to, int http) {
  int k = to - from;
  char *heads = http ? calloc((size_t)k, HTTP_HEAD_MAX) : NULL;
  if (http && !heads) fail("out of memory");
  const void *msg = http ? (const void *)HTTP_REQUEST : (const void *)payload;
  size_t msg_len = http ? sizeof HTTP_REQUEST - 1 : 1;
  for (int i = from; i < to; i++) {
    set_interest(i, EPOLLIN);
    conns[i].got = 0;
    conns[i].busy = 1;
    if (write(conns[i].fd, msg, msg_len) != (ssize_t)msg_len) die("write");
  }
  int busy = k;
  struct epoll_event evs[MAX_EVENTS];
  uint64_t deadline = now_ns() + 30ull * 1000000000u;
  while (busy > 0) {
    int n = epoll_wait(epfd, evs, MAX_EVENTS, 1000);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    if (now_ns() > deadline) fail("not every new connection was answered within 30 s");
    for (int e = 0; e < n; e++) {
      int i = (int)evs[e].data.u32;
      conn *c = &conns[i];
      if (!c->busy) continue;
      for (;;) {
        char *dst = http ? heads + (size_t)(i - from) * HTTP_HEAD_MAX + c->got : (char *)rbuf;
        size_t room = http ? HTTP_HEAD_MAX - c->got : rbuf_size;
        ssize_t r = read(c->fd, dst, room);
        if (r > 0) {
          c->got += (size_t)r;
          if (http ? http_complete(heads + (size_t)(i - from) * HTTP_HEAD_MAX, c->got) : c->got >= 1) {
            if (!http && c->got > 1) fail("more than the one byte sent came back");
            c->busy = 0;
            busy--;
            set_interest(i, EPOLLRDHUP);
            break;
          }
          continue;
        }
        if (r == 0) fail("the server closed a connection");
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        if (errno == EINTR) continue;
        die("read");
      }
    }
  }
  free(heads);
}

static void phase_echo(double seconds) {
  memset(hist, 0, sizeof(uint32_t) * HIST_US);
  double cpu0 = cpu_s();
  uint64_t t0 = now_ns();
  uint64_t deadline = t0 + (uint64_t)(seconds * 1e9);
  uint64_t rts = 0, errors = 0;
  int busy = 0;
  for (int i = 0; i < nconns; i++) {
    send_ping(i, now_ns());
    busy++;
  }
  struct epoll_event evs[MAX_EVENTS];
  uint64_t t = t0;
  int stopping = 0;
  uint64_t drain_deadline = 0;
  while (busy > 0) {
    int timeout_ms;
    if (!stopping) {
      timeout_ms = t >= deadline ? 0 : (int)((deadline - t) / 1000000u) + 1;
    } else {
      if (t > drain_deadline) fail("replies still missing 5 s after the deadline");
      timeout_ms = 100;
    }
    int n = epoll_wait(epfd, evs, MAX_EVENTS, timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    t = now_ns();
    if (!stopping && t >= deadline) {
      stopping = 1;
      drain_deadline = t + 5ull * 1000000000u;
    }
    for (int k = 0; k < n; k++) {
      int i = (int)evs[k].data.u32;
      conn *c = &conns[i];
      for (;;) {
        ssize_t r = read(c->fd, rbuf, rbuf_size);
        if (r > 0) {
          c->got += (size_t)r;
          /* Level-triggered: stop once the reply is complete rather than
           * paying one more read for EAGAIN; anything left raises the
           * event again. */
          if (c->got >= size) break;
          continue;
        }
        if (r == 0) fail("the server closed a connection");
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        if (errno == EINTR) continue;
        die("read");
      }
      if (c->busy && c->got >= size) {
        if (c->got > size) errors++; /* more than was sent: a server bug */
        uint64_t us = (t - c->sent_ns) / 1000u;
        hist[hist_index(us)]++;
        rts++;
        c->busy = 0;
        busy--;
        if (!stopping) {
          send_ping(i, t);
          busy++;
        }
      }
    }
  }
  uint64_t t1 = now_ns();
  json_result_echo(rts, (t1 - t0) / 1e9, cpu_s() - cpu0, errors);
}

static void phase_bulk(double seconds) {
  double cpu0 = cpu_s();
  uint64_t t0 = now_ns();
  uint64_t deadline = t0 + (uint64_t)(seconds * 1e9);
  uint64_t bytes = 0, writes = 0;
  for (int i = 0; i < nconns; i++) set_interest(i, EPOLLOUT | EPOLLET);
  struct epoll_event evs[MAX_EVENTS];
  uint64_t t = t0;
  /* Every connection starts writable; after that, only those the kernel
   * reports writable again. */
  int *list = calloc((size_t)nconns, sizeof(int));
  if (!list) fail("out of memory");
  int nready = nconns;
  for (int i = 0; i < nconns; i++) list[i] = i;
  while (t < deadline) {
    for (int k = 0; k < nready; k++) {
      int i = list[k];
      for (;;) {
        ssize_t w = write(conns[i].fd, payload, size);
        if (w > 0) {
          bytes += (uint64_t)w;
          writes++;
          if ((writes & 63) == 0 && now_ns() >= deadline) break;
          continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (w < 0 && errno == EINTR) continue;
        die("write");
      }
    }
    t = now_ns();
    if (t >= deadline) break;
    int n = epoll_wait(epfd, evs, MAX_EVENTS, (int)((deadline - t) / 1000000u) + 1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    nready = 0;
    for (int k = 0; k < n; k++) {
      if (evs[k].events & (EPOLLERR | EPOLLHUP)) fail("the server closed a connection");
      list[nready++] = (int)evs[k].data.u32;
    }
    t = now_ns();
  }
  free(list);
  for (int i = 0; i < nconns; i++) set_interest(i, EPOLLIN);
  uint64_t t1 = now_ns();
  double secs = (t1 - t0) / 1e9;
  printf("{\"event\":\"result\",\"mode\":\"bulk\",\"connections\":%d,\"size\":%zu,"
         "\"bytes\":%llu,\"writes\":%llu,\"seconds\":%.6f,\"bytesPerSecond\":%.1f,"
         "\"clientCpuS\":%.4f}\n",
         nconns, size, (unsigned long long)bytes, (unsigned long long)writes, secs,
         secs > 0 ? bytes / secs : 0.0, cpu_s() - cpu0);
  fflush(stdout);
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: echo_client echo|bulk HOST PORT CONNS SIZE | idle HOST PORT CONNS\n");
    return 2;
  }
  if (!strcmp(argv[1], "echo")) mode = MODE_ECHO;
  else if (!strcmp(argv[1], "bulk")) mode = MODE_BULK;
  else if (!strcmp(argv[1], "idle")) mode = MODE_IDLE;
  else fail("mode must be echo, bulk or idle");
  if (mode != MODE_IDLE && argc < 6) fail("echo and bulk need SIZE");
  struct sockaddr_in sa = {0};
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)atoi(argv[3]));
  if (inet_pton(AF_INET, argv[2], &sa.sin_addr) != 1) fail("HOST must be an IPv4 address");
  int target = atoi(argv[4]);
  if (target < 1) fail("CONNS must be >= 1");
  size = mode == MODE_IDLE ? 1 : (size_t)atol(argv[5]);
  if (size < 1 || size > (64u << 20)) fail("SIZE out of range");

  /* Room for the connections, whatever the soft limit says. */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)target + 64) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }

  conns = calloc((size_t)target, sizeof(conn));
  payload = malloc(size);
  rbuf_size = size > 65536 ? size : 65536;
  rbuf = malloc(rbuf_size);
  hist = calloc(HIST_US, sizeof(uint32_t));
  if (!conns || !payload || !rbuf || !hist) fail("out of memory");
  for (size_t i = 0; i < size; i++) payload[i] = (unsigned char)('a' + i % 26);
  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) die("epoll_create1");

  int batch = 500;
  const char *b = getenv("IOMUX_BENCH_BATCH");
  if (b && atoi(b) > 0) batch = atoi(b);
  uint64_t c0 = now_ns();
  if (mode != MODE_IDLE) {
    for (int from = 0; from < target; from += batch) {
      int to = from + batch < target ? from + batch : target;
      connect_batch(&sa, from, to);
      nconns = to;
      if (mode == MODE_ECHO) verify_batch(from, to);
    }
  }
  printf("{\"event\":\"connected\",\"connections\":%d,\"connectMs\":%.1f}\n", nconns,
         (now_ns() - c0) / 1e6);
  fflush(stdout);

  char line[256];
  while (fgets(line, sizeof line, stdin)) {
    double secs;
    int k;
    if (!strncmp(line, "quit", 4)) break;
    char what[16] = "";
    if (sscanf(line, "open %d %15s", &k, what) >= 1 && k > 0 && mode == MODE_IDLE) {
      if (nconns + k > target) fail("open: more than MAXCONNS connections");
      if (what[0] && strcmp(what, "echo") && strcmp(what, "http")) fail("open: the exchange must be echo or http");
      uint64_t t0 = now_ns();
      connect_batch(&sa, nconns, nconns + k);
      if (what[0]) exchange_batch(nconns, nconns + k, !strcmp(what, "http"));
      nconns += k;
      printf("{\"event\":\"opened\",\"connections\":%d,\"connectMs\":%.1f}\n", nconns,
             (now_ns() - t0) / 1e6);
      fflush(stdout);
      continue;
    }
    if (sscanf(line, "go %lf", &secs) == 1 && secs > 0) {
      if (mode == MODE_ECHO) phase_echo(secs);
      else if (mode == MODE_BULK) phase_bulk(secs);
      else fail("idle connections take no traffic");
      continue;
    }
    fprintf(stderr, "echo_client: unknown command: %s", line);
    return 2;
  }
  for (int i = 0; i < nconns; i++) close(conns[i].fd);
  return 0;
}
