/*
 * c_epoll.c -- the reference server of benchmarks/run.js: the smallest
 * single-threaded C server on plain epoll that does the same application
 * work as servers/http-hello.js and servers/tcp.js. Its row ("C epoll
 * (reference)") is the floor that the kernel's loopback TCP path sets for
 * any server on the machine: what node:net and iomux cost above it is the
 * runtime's, not the kernel's.
 * Compiled by the runner at bench time:  cc -O2 -o <tmp>/c_epoll c_epoll.c
 *
 *   c_epoll http PORT keepalive   count "\r\n\r\n" terminators (one may be split
 *                                 across reads) and answer each with the same
 *                                 fixed response as http-hello.js, all the
 *                                 responses of one read in one send
 *   c_epoll http PORT close       the same with "Connection: close": one
 *                                 response, then close
 *   c_epoll tcp PORT echo         send every chunk back
 *   c_epoll tcp PORT sink         count the bytes and drop them
 *
 * Like the JS servers it reads the peer's address of every connection (from
 * accept4's sockaddr, formatted as text, as a logger would).
 *
 * Event loop: one epoll_wait per iteration (up to 1024 events, no timeout).
 * The listening socket (127.0.0.1, SO_REUSEADDR, backlog 511, non-blocking)
 * is level-triggered and drained with accept4 until EAGAIN; a connection is
 * registered once, edge-triggered, with EPOLLIN|EPOLLRDHUP|EPOLLOUT (so a
 * short send needs no epoll_ctl MOD later). TCP_NODELAY is set once, on the
 * listening socket: Linux copies it to every accepted one, so a connection
 * costs no setsockopt (iomux does the same). In the http modes the listener
 * has TCP_DEFER_ACCEPT and a connection's first read follows its accept at
 * once, as the iomux HTTP servers do (listen({ deferAccept: true })): the
 * request comes with the connection (IOMUX_BENCH_DEFER_ACCEPT=0 turns both
 * off, as for the JS servers). Reads go into one
 * static 64 KiB buffer until EAGAIN, or until a short read (the socket is
 * then drained) unless the peer's FIN was reported. What a send could not
 * take is queued on the connection and flushed on EPOLLOUT; reading stops
 * while more than 1 MiB is queued. EMFILE/ENFILE on accept: a spare
 * descriptor is given up to accept the peer and close it at once.
 *
 * Protocol with the runner (stdout, as servers/common.js):
 *   listening <port> epoll          once listening (port 0: the one bound)
 *   {"type":"stats",...}            on SIGUSR2 (and SIGWINCH), and on SIGTERM
 *                                   or SIGINT before exiting 0: the application
 *                                   counters under the names the JS server of
 *                                   the mode uses, mem.rss from
 *                                   /proc/self/statm, "loop":null
 * The signals are blocked and read from a signalfd in the epoll set, so a
 * request for stats is never lost between two waits.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_EVENTS 1024
#define READ_SIZE 65536
#define MAX_QUEUED (1u << 20) /* stop reading a connection above this */

enum { MODE_HTTP, MODE_HTTP_CLOSE, MODE_ECHO, MODE_SINK };

typedef struct {
  unsigned char *out; /* bytes a send did not take */
  size_t out_len;
  size_t out_cap;
  int matched;        /* http: bytes of "\r\n\r\n" the last read ended with */
  int open;
  int done;           /* http close: answered, close once flushed */
  int stalled;        /* reading paused while the queue is full */
} conn;

static int mode;
static int defer_accept; /* http modes: TCP_DEFER_ACCEPT, first read at accept */
static int epfd, lfd, sfd;
static int spare_fd = -1; /* given up on EMFILE to accept and drop a peer */
static conn *conns;       /* indexed by descriptor */
static size_t nconns;
static unsigned char rbuf[READ_SIZE];

/* http-hello.js's response; batch holds batch_n copies back to back. */
static const char RESPONSE_KEEPALIVE[] =
    "HTTP/1.1 200 OK\r\nContent-Length: 12\r\nContent-Type: text/plain\r\n\r\nHello World!";
static const char RESPONSE_CLOSE[] =
    "HTTP/1.1 200 OK\r\nContent-Length: 12\r\nContent-Type: text/plain\r\n"
    "Connection: close\r\n\r\nHello World!";
static const char *response;
static size_t response_len;
static unsigned char *batch;
static size_t batch_n;

/* The application counters: http-hello.js's or tcp.js's. */
static unsigned long long st_accepted, st_open, st_requests, st_address_chars, st_bytes;

static void die(const char *what) {
  fprintf(stderr, "c_epoll: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void fail(const char *msg) {
  fprintf(stderr, "c_epoll: %s\n", msg);
  exit(1);
}

static void write_all(int fd, const char *s, size_t len) {
  while (len > 0) {
    ssize_t w = write(fd, s, len);
    if (w < 0) {
      if (errno == EINTR) continue;
      return; /* the runner is gone: nothing to tell */
    }
    s += w;
    len -= (size_t)w;
  }
}

static unsigned long long rss_bytes(void) {
  char buf[128];
  int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t r = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (r <= 0) return 0;
  buf[r] = 0;
  unsigned long long size = 0, resident = 0;
  if (sscanf(buf, "%llu %llu", &size, &resident) != 2) return 0;
  return resident * (unsigned long long)sysconf(_SC_PAGESIZE);
}

static void print_stats(void) {
  char app[256], line[512];
  if (mode == MODE_HTTP || mode == MODE_HTTP_CLOSE) {
    snprintf(app, sizeof app, "{\"accepted\":%llu,\"requests\":%llu,\"addressChars\":%llu}",
             st_accepted, st_requests, st_address_chars);
  } else {
    snprintf(app, sizeof app, "{\"accepted\":%llu,\"open\":%llu,\"bytes\":%llu,\"timeouts\":0}",
             st_accepted, st_open, st_bytes);
  }
  int n = snprintf(line, sizeof line,
                   "{\"type\":\"stats\",\"impl\":\"c\",\"backend\":\"epoll\",\"app\":%s,"
                   "\"mem\":{\"rss\":%llu},\"loop\":null}\n",
                   app, rss_bytes());
  write_all(1, line, (size_t)n);
}

static void *xrealloc(void *p, size_t n) {
  p = realloc(p, n);
  if (!p) fail("out of memory");
  return p;
}

/* n responses back to back, built once for the largest n seen so far. */
static const unsigned char *responses(size_t n) {
  if (n > batch_n) {
    size_t want = n > 2 * batch_n ? n : 2 * batch_n;
    batch = xrealloc(batch, want * response_len);
    for (size_t i = batch_n; i < want; i++) memcpy(batch + i * response_len, response, response_len);
    batch_n = want;
  }
  return batch;
}

static conn *conn_of(int fd) {
  if ((size_t)fd >= nconns) {
    size_t n = nconns ? nconns : 1024;
    while (n <= (size_t)fd) n *= 2;
    conns = xrealloc(conns, n * sizeof(conn));
    memset(conns + nconns, 0, (n - nconns) * sizeof(conn));
    nconns = n;
  }
  return &conns[fd];
}

static void close_conn(int fd) {
  conn *c = &conns[fd];
  /* The queue's memory stays with the slot for the next connection. */
  c->out_len = 0;
  c->open = 0;
  st_open--;
  close(fd); /* also leaves the epoll set: the descriptor is not shared */
}

/* Appends to the queue (it keeps bytes in order behind a short send). */
static void enqueue(conn *c, const unsigned char *p, size_t len) {
  if (c->out_len + len > c->out_cap) {
    size_t cap = c->out_cap ? c->out_cap : 4096;
    while (cap < c->out_len + len) cap *= 2;
    c->out = xrealloc(c->out, cap);
    c->out_cap = cap;
  }
  memcpy(c->out + c->out_len, p, len);
  c->out_len += len;
}

/* Sends or queues; -1 when the connection failed (closed here). */
static int send_or_queue(int fd, const unsigned char *p, size_t len) {
  conn *c = &conns[fd];
  if (c->out_len) {
    enqueue(c, p, len);
    return 0;
  }
  while (len > 0) {
    ssize_t w = send(fd, p, len, MSG_NOSIGNAL);
    if (w >= 0) {
      p += w;
      len -= (size_t)w;
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      enqueue(c, p, len);
      return 0;
    }
    close_conn(fd); /* EPIPE, ECONNRESET, ... */
    return -1;
  }
  return 0;
}

/* EPOLLOUT: sends what is queued; -1 when the connection is gone. */
static int flush(int fd) {
  conn *c = &conns[fd];
  size_t off = 0;
  while (off < c->out_len) {
    ssize_t w = send(fd, c->out + off, c->out_len - off, MSG_NOSIGNAL);
    if (w >= 0) {
      off += (size_t)w;
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    close_conn(fd);
    return -1;
  }
  if (off) {
    memmove(c->out, c->out + off, c->out_len - off);
    c->out_len -= off;
  }
  if (c->out_len == 0 && c->done) {
    close_conn(fd);
    return -1;
  }
  return 0;
}

/* The application's work on one chunk; -1 when the connection is gone. */
static int on_data(int fd, conn *c, const unsigned char *p, size_t len) {
  if (mode == MODE_SINK) {
    st_bytes += len;
    return 0;
  }
  if (mode == MODE_ECHO) {
    st_bytes += len;
    return send_or_queue(fd, p, len);
  }
  /* http-hello.js's scan: the expected byte at position m of "\r\n\r\n" is
   * CR for even m, LF for odd m; on a mismatch the only prefix of the
   * pattern that can end here is "\r". */
  size_t n = 0;
  int m = c->matched;
  for (size_t i = 0; i < len; i++) {
    unsigned char b = p[i];
    if (b == ((m & 1) == 0 ? '\r' : '\n')) {
      if (++m == 4) {
        n++;
        m = 0;
      }
    } else {
      m = b == '\r';
    }
  }
  c->matched = m;
  if (n == 0) return 0;
  if (mode == MODE_HTTP_CLOSE) {
    /* One answer, then close: the request was read whole, so the close
     * sends a FIN after the response. */
    st_requests++;
    c->done = 1;
    if (send_or_queue(fd, (const unsigned char *)response, response_len) < 0) return -1;
    if (c->out_len == 0) {
      close_conn(fd);
      return -1;
    }
    return 0;
  }
  st_requests += n;
  return send_or_queue(fd, responses(n), n * response_len);
}

/* EPOLLIN: reads until drained; -1 when the connection is gone. */
static int on_readable(int fd, uint32_t events) {
  conn *c = &conns[fd];
  for (;;) {
    if (c->done) return 0; /* http close: answered; the rest is ignored */
    if (c->out_len > MAX_QUEUED) {
      c->stalled = 1; /* resumed by flush(): no edge would come again */
      return 0;
    }
    ssize_t r = read(fd, rbuf, sizeof rbuf);
    if (r > 0) {
      if (on_data(fd, c, rbuf, (size_t)r) < 0) return -1;
      /* A short read emptied the socket; only the FIN, once reported,
       * is worth one more read (it returns 0). */
      if ((size_t)r < sizeof rbuf && !(events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))) return 0;
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    /* EOF (the JS servers end their side too), ECONNRESET or another error. */
    close_conn(fd);
    return -1;
  }
}

static void on_conn_event(int fd, uint32_t events) {
  conn *c = &conns[fd];
  if (!c->open) return;
  if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && c->out_len) {
    if (flush(fd) < 0) return;
    if (c->stalled && c->out_len <= MAX_QUEUED) {
      c->stalled = 0;
      events |= EPOLLIN; /* read what was left waiting */
    }
  }
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) on_readable(fd, events);
}

/* EMFILE/ENFILE: frees the spare descriptor, accepts the peer at the head
 * of the queue and closes it, so the listener does not spin on it. 0 when
 * there was no spare to give up. */
static int drop_one_peer(void) {
  if (spare_fd < 0) {
    spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    return 0;
  }
  close(spare_fd);
  int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
  if (fd >= 0) close(fd);
  spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  return 1;
}

static void on_listener(void) {
  for (;;) {
    struct sockaddr_in sa;
    socklen_t salen = sizeof sa;
    int fd = accept4(lfd, (struct sockaddr *)&sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE) {
        if (drop_one_peer()) continue;
        return;
      }
      if (errno == ENOBUFS || errno == ENOMEM) return; /* the next wakeup retries */
      die("accept4");
    }
    st_accepted++;
    /* What a connection logger reads: the peer's address, as text. */
    char addr[INET_ADDRSTRLEN];
    if (sa.sin_family == AF_INET && inet_ntop(AF_INET, &sa.sin_addr, addr, sizeof addr))
      st_address_chars += strlen(addr);
    conn *c = conn_of(fd);
    c->out_len = 0;
    c->matched = 0;
    c->done = 0;
    c->stalled = 0;
    c->open = 1;
    st_open++;
    struct epoll_event ev = {0};
    ev.events = EPOLLIN | EPOLLRDHUP | EPOLLOUT | EPOLLET;
    ev.data.fd = fd;
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
      close_conn(fd);
    else if (defer_accept)
      on_readable(fd, EPOLLIN); /* TCP_DEFER_ACCEPT: the request is here */
  }
}

/* Returns 1 when the server is to exit. */
static int on_signals(void) {
  int quit = 0;
  for (;;) {
    struct signalfd_siginfo si;
    ssize_t r = read(sfd, &si, sizeof si);
    if (r < 0 && errno == EINTR) continue;
    if (r != (ssize_t)sizeof si) break;
    print_stats();
    if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) quit = 1;
  }
  return quit;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: c_epoll http PORT keepalive|close | tcp PORT echo|sink\n");
    return 2;
  }
  if (!strcmp(argv[1], "http") && !strcmp(argv[3], "keepalive")) mode = MODE_HTTP;
  else if (!strcmp(argv[1], "http") && !strcmp(argv[3], "close")) mode = MODE_HTTP_CLOSE;
  else if (!strcmp(argv[1], "tcp") && !strcmp(argv[3], "echo")) mode = MODE_ECHO;
  else if (!strcmp(argv[1], "tcp") && !strcmp(argv[3], "sink")) mode = MODE_SINK;
  else fail("usage: c_epoll http PORT keepalive|close | tcp PORT echo|sink");
  char *end;
  long port = strtol(argv[2], &end, 10);
  if (*end || port < 0 || port > 65535) fail("PORT must be 0..65535");
  response = mode == MODE_HTTP_CLOSE ? RESPONSE_CLOSE : RESPONSE_KEEPALIVE;
  response_len = strlen(response);
  responses(64);

  /* Stats and exit requests arrive through a signalfd. */
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGUSR2);
  sigaddset(&mask, SIGWINCH);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0) die("sigprocmask");
  signal(SIGPIPE, SIG_IGN);
  sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd < 0) die("signalfd");

  lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (lfd < 0) die("socket");
  int one = 1;
  if (setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) die("SO_REUSEADDR");
  if (setsockopt(lfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) die("TCP_NODELAY");
  const char *defer_env = getenv("IOMUX_BENCH_DEFER_ACCEPT");
  defer_accept = (mode == MODE_HTTP || mode == MODE_HTTP_CLOSE) &&
                 !(defer_env && !strcmp(defer_env, "0"));
  if (defer_accept &&
      setsockopt(lfd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &one, sizeof one) < 0)
    die("TCP_DEFER_ACCEPT");
  struct sockaddr_in sa = {0};
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
  if (listen(lfd, 511) < 0) die("listen");
  socklen_t salen = sizeof sa;
  if (getsockname(lfd, (struct sockaddr *)&sa, &salen) < 0) die("getsockname");
  spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) die("epoll_create1");
  struct epoll_event ev = {0};
  ev.events = EPOLLIN;
  ev.data.fd = lfd;
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev) < 0) die("epoll_ctl ADD listener");
  ev.data.fd = sfd;
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, sfd, &ev) < 0) die("epoll_ctl ADD signalfd");

  printf("listening %u epoll\n", (unsigned)ntohs(sa.sin_port));
  fflush(stdout);

  static struct epoll_event evs[MAX_EVENTS];
  for (;;) {
    int n = epoll_wait(epfd, evs, MAX_EVENTS, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int k = 0; k < n; k++) {
      int fd = evs[k].data.fd;
      if (fd == lfd) on_listener();
      else if (fd == sfd) {
        if (on_signals()) return 0;
      } else on_conn_event(fd, evs[k].events);
    }
  }
}
