/*
 * http_check.c -- the checking HTTP client of benchmarks/run.js for the rows
 * "express" and "fastify". One thread, epoll, keep-alive connections, one
 * request in flight per connection; every response is parsed and compared
 * with the one its own request asked for.
 * Compiled by the runner at bench time:  cc -O2 -Wall -o <tmp>/http_check http_check.c
 *
 *   http_check HOST PORT CONNECTIONS SECONDS [WAIT_SECONDS]
 *
 * Each connection sends GET /users/<n> for 16 values of n in turn (starting
 * at a different one per connection); every response must be
 *
 *   HTTP/1.1 200 ...  with a Content-Length header and the body
 *   {"id":"<n>","name":"user <n>"}  of its own request's n,
 *
 * with no byte after it (one request in flight: the server has nothing else
 * to say). A response that is not that counts as a mismatch. At the
 * deadline no new request is sent and the ones in flight are waited for
 * (WAIT_SECONDS at most, default 5). A connection closed or reset by the
 * server, a response still missing after the wait, bytes after a response,
 * or a response without a Content-Length or too big to be the expected one
 * fails the run: the client prints the reason to stderr and exits 1.
 * Otherwise it prints one JSON line, in the shape of autocannon's result for
 * the fields the runner reads:
 *
 *   {"requests":{"total":N},"duration":S,"latency":{"p50":MS,"p90":MS,"p99":MS,"max":MS},
 *    "errors":0,"timeouts":0,"non2xx":K,"checked":N,"mismatches":M,"firstMismatch":...,"clientCpuS":S}
 *
 * and exits 0 (the runner fails the run on any mismatch). Its cost per
 * request is one write and one read plus a share of epoll_wait, and parsing
 * a few hundred bytes: far below what a framework on node costs, so the
 * server, not this client, is what saturates.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
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
#include <time.h>
#include <unistd.h>

#define CLIENT_NAME "http_check"
#include "client.h"

#define NIDS 16
#define RBUF 4096
#define MAX_EVENTS 256
/* Latency histogram, microseconds: 1 us steps below 1024 us, then 32 steps
 * per power of two. */
#define H_LIN 1024
#define H_SUB 32
#define H_N (H_LIN + 40 * H_SUB)

typedef struct {
  int fd;
  int next;          /* index of the id of the next request */
  int want;          /* index of the id in flight, -1 when idle */
  size_t got;        /* bytes of the response received */
  size_t woff;       /* bytes of the request written */
  uint64_t sent_ns;
  char buf[RBUF];
} conn;

static const char *host;
static int port;
static char reqs[NIDS][128];
static size_t req_len[NIDS];
static char bodies[NIDS][64];
static size_t body_len[NIDS];
static conn *conns;
static int nconns;
static int epfd;
static uint64_t hist[H_N];
static uint64_t responses, mismatches, non2xx;
static char first_mismatch[2048];

static int h_index(uint64_t us) {
  if (us < H_LIN) return (int)us;
  int e = 63 - __builtin_clzll(us); /* >= 10 */
  int i = H_LIN + (e - 10) * H_SUB + (int)((us >> (e - 5)) & (H_SUB - 1));
  return i < H_N ? i : H_N - 1;
}

static double h_value_ms(int i) {
  if (i < H_LIN) return i / 1000.0;
  int e = 10 + (i - H_LIN) / H_SUB;
  uint64_t sub = (uint64_t)((i - H_LIN) % H_SUB);
  return (double)((H_SUB + sub) << (e - 5)) / 1000.0;
}

static double h_pct(double p) {
  uint64_t total = 0, acc = 0;
  for (int i = 0; i < H_N; i++) total += hist[i];
  if (!total) return 0;
  for (int i = 0; i < H_N; i++) {
    acc += hist[i];
    if (acc * 100.0 >= total * p) return h_value_ms(i);
  }
  return h_value_ms(H_N - 1);
}

/* JSON string contents for up to 200 bytes of s. */
static void json_escape(char *out, size_t cap, const char *s, size_t len) {
  size_t o = 0;
  for (size_t i = 0; i < len && i < 200 && o + 7 < cap; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      out[o++] = '\\';
      out[o++] = (char)c;
    } else if (c < 0x20 || c >= 0x7f) {
      o += (size_t)snprintf(out + o, cap - o, "\\u%04x", c);
    } else {
      out[o++] = (char)c;
    }
  }
  out[o] = 0;
}

/* Counts a wrong response; the first one is kept (as a JSON object) for the
 * report: its status, its body and the body its request asked for. */
static void mismatch(int status, const char *body, size_t len, int k) {
  mismatches++;
  if (first_mismatch[0]) return;
  char got[1500], want[400];
  json_escape(got, sizeof got, body, len);
  json_escape(want, sizeof want, bodies[k], body_len[k]);
  snprintf(first_mismatch, sizeof first_mismatch, "{\"status\":%d,\"body\":\"%s\",\"want\":\"%s\"}",
           status, got, want);
}

static void send_request(int i) {
  conn *c = &conns[i];
  int k = c->want >= 0 ? c->want : c->next;
  if (c->want < 0) {
    c->want = k;
    c->next = (k + 1) % NIDS;
    c->got = 0;
    c->woff = 0;
    c->sent_ns = now_ns();
  }
  while (c->woff < req_len[k]) {
    ssize_t w = send(c->fd, reqs[k] + c->woff, req_len[k] - c->woff, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)i};
        if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl MOD");
        return;
      }
      die("send");
    }
    c->woff += (size_t)w;
  }
}

/* The value of header `name` (length n) in the head [p, end), or NULL. */
static const char *header(const char *p, const char *end, const char *name, size_t n, size_t *vlen) {
  for (;;) {
    const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
    if (!eol || eol == p) return NULL;
    if ((size_t)(eol - p) > n && p[n] == ':' && strncasecmp(p, name, n) == 0) {
      const char *v = p + n + 1;
      while (v < eol && (*v == ' ' || *v == '\t')) v++;
      const char *ve = eol;
      while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
      *vlen = (size_t)(ve - v);
      return v;
    }
    p = eol + 2;
  }
}

/* Checks the response in c->buf once complete. Returns 1 when one whole
 * response was consumed, 0 when more bytes are needed. */
static int check_response(conn *c) {
  const char *b = c->buf;
  const char *hend = memmem(b, c->got, "\r\n\r\n", 4);
  if (!hend) {
    if (c->got == RBUF) fail("a response head longer than 4 KiB");
    return 0;
  }
  const char *first_eol = memmem(b, c->got, "\r\n", 2);
  int status = -1;
  if (c->got >= 12 && memcmp(b, "HTTP/1.", 7) == 0 && b[8] == ' ') status = atoi(b + 9);
  size_t vlen = 0;
  const char *cl = header(first_eol + 2, hend + 2, "content-length", 14, &vlen);
  if (!cl) fail("a response without Content-Length");
  char num[24];
  if (vlen == 0 || vlen >= sizeof num) fail("a response with a malformed Content-Length");
  memcpy(num, cl, vlen);
  num[vlen] = 0;
  char *endp;
  unsigned long long blen = strtoull(num, &endp, 10);
  if (*endp) fail("a response with a malformed Content-Length");
  size_t head_len = (size_t)(hend + 4 - b);
  if (blen > RBUF - head_len) fail("a response longer than 4 KiB");
  if (c->got < head_len + blen) return 0;
  if (c->got > head_len + blen) fail("bytes after a response, with no request in flight");
  int k = c->want;
  responses++;
  uint64_t us = (now_ns() - c->sent_ns) / 1000;
  hist[h_index(us)]++;
  if (status < 200 || status > 399) non2xx++;
  if (status != 200 || blen != body_len[k] || memcmp(b + head_len, bodies[k], blen) != 0)
    mismatch(status, b + head_len, blen, k);
  c->want = -1;
  c->got = 0;
  return 1;
}

/* Reads what the socket has; returns 1 when a response completed. */
static int on_readable(int i) {
  conn *c = &conns[i];
  for (;;) {
    if (c->want < 0) {
      /* Nothing asked: any byte, or a close, is the server's error. */
      char x;
      ssize_t r = recv(c->fd, &x, 1, MSG_PEEK | MSG_DONTWAIT);
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
      if (r == 0) fail("the server closed a keep-alive connection");
      if (r < 0) die("recv");
      fail("bytes from the server with no request in flight");
    }
    ssize_t r = read(c->fd, c->buf + c->got, RBUF - c->got);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return 0;
      die("read");
    }
    if (r == 0) fail("the server closed a connection with a request in flight");
    c->got += (size_t)r;
    return check_response(c);
  }
}

int main(int argc, char **argv) {
  if (argc != 5 && argc != 6) {
    fprintf(stderr, "usage: http_check HOST PORT CONNECTIONS SECONDS [WAIT_SECONDS]\n");
    return 2;
  }
  host = argv[1];
  port = atoi(argv[2]);
  nconns = atoi(argv[3]);
  double seconds = atof(argv[4]);
  double wait_s = argc == 6 ? atof(argv[5]) : 5.0;
  if (port <= 0 || port > 65535 || nconns < 1 || !(seconds > 0) || !(wait_s > 0)) {
    fprintf(stderr, "usage: http_check HOST PORT CONNECTIONS SECONDS [WAIT_SECONDS]\n");
    return 2;
  }
  for (int k = 0; k < NIDS; k++) {
    int id = 1000 + k * 37;
    req_len[k] = (size_t)snprintf(reqs[k], sizeof reqs[k],
                                  "GET /users/%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n", id, host, port);
    body_len[k] = (size_t)snprintf(bodies[k], sizeof bodies[k],
                                   "{\"id\":\"%d\",\"name\":\"user %d\"}", id, id);
  }
  struct sockaddr_in sa = {0};
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) fail("HOST must be an IPv4 address");
  conns = calloc((size_t)nconns, sizeof *conns);
  if (!conns) fail("out of memory");
  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) die("epoll_create1");

  double cpu0 = cpu_s();
  uint64_t t0 = now_ns();
  /* Connect; the first request goes once a connection is writable. */
  for (int i = 0; i < nconns; i++) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) die("setsockopt TCP_NODELAY");
    while (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
      if (errno == EINTR) continue;
      if (errno != EINPROGRESS) die("connect");
      break;
    }
    conns[i].fd = fd;
    conns[i].want = -1;
    conns[i].next = i % NIDS;
    struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)i};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl ADD");
  }
  int connected = 0;
  uint64_t deadline = t0 + (uint64_t)(seconds * 1e9);
  uint64_t drain_limit = deadline + (uint64_t)(wait_s * 1e9);
  int stopping = 0;
  int inflight = 0;
  struct epoll_event evs[MAX_EVENTS];
  for (;;) {
    uint64_t t = now_ns();
    if (!stopping && t >= deadline) stopping = 1;
    if (stopping && inflight == 0) break;
    if (stopping && t >= drain_limit) {
      fprintf(stderr, "http_check: %d responses missing %.1f s after the deadline\n", inflight, wait_s);
      return 1;
    }
    uint64_t until = stopping ? drain_limit : deadline;
    int ms = (int)((until - t + 999999) / 1000000);
    int n = epoll_wait(epfd, evs, MAX_EVENTS, ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int e = 0; e < n; e++) {
      int i = (int)evs[e].data.u32;
      conn *c = &conns[i];
      uint32_t ev = evs[e].events;
      if (ev & EPOLLOUT) {
        if (c->want < 0 && c->got == 0 && c->woff == 0 && c->sent_ns == 0) {
          /* Connected (or refused). */
          int err = 0;
          socklen_t len = sizeof err;
          if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) die("getsockopt SO_ERROR");
          if (err) {
            errno = err;
            die("connect");
          }
          connected++;
        }
        struct epoll_event mod = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &mod) < 0) die("epoll_ctl MOD");
        if (c->want < 0) {
          if (stopping) continue;
          inflight++;
        }
        send_request(i);
        continue;
      }
      if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        if (on_readable(i)) {
          inflight--;
          if (!stopping && now_ns() < deadline) {
            inflight++;
            send_request(i);
          }
        }
      }
    }
  }
  double secs = (now_ns() - t0) / 1e9;
  double cpu = cpu_s() - cpu0;
  for (int i = 0; i < nconns; i++) close(conns[i].fd);
  if (connected != nconns) fail("not every connection was established before the deadline");
  printf("{\"requests\":{\"total\":%llu},\"duration\":%.6f,"
         "\"latency\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f},"
         "\"errors\":0,\"timeouts\":0,\"non2xx\":%llu,\"checked\":%llu,\"mismatches\":%llu,"
         "\"firstMismatch\":%s,\"connections\":%d,\"clientCpuS\":%.4f}\n",
         (unsigned long long)responses, secs, h_pct(50), h_pct(90), h_pct(99), h_pct(100),
         (unsigned long long)non2xx, (unsigned long long)responses, (unsigned long long)mismatches,
         first_mismatch[0] ? first_mismatch : "null", nconns, cpu);
  return 0;
}
