/*
 * sock.c -- sockets: listeners that accept until EAGAIN, streams that read
 * into the loop's slab and write straight to the kernel, queueing only what
 * the kernel refuses.
 *
 * A socket is a slot in loop->socks. Its record stays allocated for the life
 * of the loop and is reused; the generation count in it changes at every
 * close, so a token or (id, gen) pair never names a later socket.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

/* Inside a delivery, writes are queued and flushed together when it ends;
 * a write this large goes out at once instead of being copied. */
#define BIG_WRITE (64 * 1024)
/* Buffers per sendmsg(); iomux_writev() takes any number, in windows. */
#define MAX_IOV 256

static bool would_block(int err) { return err == EAGAIN || err == EWOULDBLOCK; }

/* ---- slots ---------------------------------------------------------------- */

sock *iomux__sock(iomux_loop *loop, int id, int kind) {
  if (id < 0 || (uint32_t)id >= loop->nsocks) return NULL;
  sock *s = loop->socks[id];
  if (!s || (s->flags & SF_CLOSED)) return NULL;
  return kind == 0 || s->kind == kind ? s : NULL;
}

static sock *sock_by_token(iomux_loop *loop, uint64_t token) {
  uint32_t slot = TOKEN_SLOT(token);
  if (slot >= loop->nsocks) return NULL;
  sock *s = loop->socks[slot];
  if (!s || s->gen != TOKEN_GEN(token) || (s->flags & SF_CLOSED)) return NULL;
  return s;
}

static int grow_slots(iomux_loop *loop) {
  if (loop->nsocks >= (uint32_t)INT32_MAX / 2) return -ENOMEM;
  uint32_t n = loop->nsocks ? loop->nsocks * 2 : 64;
  sock **p = realloc(loop->socks, n * sizeof *p);
  if (!p) return -ENOMEM;
  loop->socks = p;
  /* Room to recycle every slot, so that closing never allocates. */
  int32_t *f = realloc(loop->free_socks.v, n * sizeof *f);
  if (!f) return -ENOMEM;
  loop->free_socks.v = f;
  loop->free_socks.cap = n;
  for (uint32_t i = loop->nsocks; i < n; i++) p[i] = NULL;
  for (uint32_t i = n; i-- > loop->nsocks;)
    loop->free_socks.v[loop->free_socks.len++] = (int32_t)i;
  loop->nsocks = n;
  return 0;
}

static int32_t sock_new(iomux_loop *loop, uint8_t kind, int fd) {
  if (loop->free_socks.len == 0) {
    int rc = grow_slots(loop);
    if (rc < 0) return rc;
  }
  int32_t slot = loop->free_socks.v[loop->free_socks.len - 1];
  sock *s = loop->socks[slot];
  if (!s) {
    s = calloc(1, sizeof *s);
    if (!s) return -ENOMEM;
    loop->socks[slot] = s;
  }
  loop->free_socks.len--;
  uint32_t gen = s->gen;
  memset(s, 0, sizeof *s);
  s->gen = gen;
  s->fd = fd;
  s->kind = kind;
  s->timer = -1;
  return slot;
}

/* A new socket: a slot, and its one registration with the backend. On
 * failure nothing is left behind but the fd, which the caller closes. */
static int32_t sock_register(iomux_loop *loop, uint8_t kind, int fd) {
  int32_t slot = sock_new(loop, kind, fd);
  if (slot < 0) return slot;
  sock *s = loop->socks[slot];
  int rc = kind == SK_LISTENER && loop->ops->add_listener
               ? loop->ops->add_listener(loop, fd, TOKEN(slot, s->gen))
               : loop->ops->add(loop, fd, TOKEN(slot, s->gen));
  if (rc < 0) {
    s->flags = SF_CLOSED;
    s->gen++;
    loop->free_socks.v[loop->free_socks.len++] = slot;
    return rc;
  }
  return slot;
}

static void ready_push(iomux_loop *loop, sock *s, int32_t slot) {
  if (s->flags & SF_READY_LISTED) return;
  if (vec64_push(&loop->ready, TOKEN(slot, s->gen)) == 0)
    s->flags |= SF_READY_LISTED;
}

void iomux__ready_push(iomux_loop *loop, sock *s, int32_t slot) {
  ready_push(loop, s, slot);
}

static void flush_push(iomux_loop *loop, sock *s, int32_t slot) {
  if (s->flags & SF_FLUSH_LISTED) return;
  if (vec64_push(&loop->flush, TOKEN(slot, s->gen)) == 0)
    s->flags |= SF_FLUSH_LISTED;
}

/* ---- addresses ------------------------------------------------------------ */

static void peer_from(sock *s, const struct sockaddr *sa) {
  memset(s->peer_addr, 0, sizeof s->peer_addr);
  s->peer_port = 0;
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    s->peer_family = IOMUX_AF_INET;
    s->peer_port = ntohs(in->sin_port);
    memcpy(s->peer_addr, &in->sin_addr, 4);
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    s->peer_family = IOMUX_AF_INET6;
    s->peer_port = ntohs(in6->sin6_port);
    memcpy(s->peer_addr, &in6->sin6_addr, 16);
  } else {
    s->peer_family = IOMUX_AF_UNIX;
  }
}

int iomux_peer_address(iomux_loop *loop, int id, struct sockaddr_storage *ss,
                       socklen_t *len) {
  sock *s = iomux__sock(loop, id, SK_STREAM);
  if (!s) return -EBADF;
  memset(ss, 0, sizeof *ss);
  if (s->peer_family == IOMUX_AF_INET) {
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    in->sin_family = AF_INET;
    in->sin_port = htons(s->peer_port);
    memcpy(&in->sin_addr, s->peer_addr, 4);
    *len = sizeof *in;
  } else if (s->peer_family == IOMUX_AF_INET6) {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(s->peer_port);
    memcpy(&in6->sin6_addr, s->peer_addr, 16);
    *len = sizeof *in6;
  } else {
    ss->ss_family = AF_UNIX;
    *len = (socklen_t)offsetof(struct sockaddr_un, sun_path);
  }
  return 0;
}

int iomux_peer_cred(iomux_loop *loop, int id, uid_t *uid, gid_t *gid,
                    pid_t *pid) {
  sock *s = iomux__sock(loop, id, SK_STREAM);
  if (!s) return -EBADF;
#if defined(SO_PEERCRED) && defined(__linux__)
  struct ucred uc;
  socklen_t len = sizeof uc;
  loop->stats.getsockopt++;
  if (getsockopt(s->fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0) return -errno;
  *uid = uc.uid;
  *gid = uc.gid;
  *pid = uc.pid;
  return 0;
#elif defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) || \
    defined(__NetBSD__) || defined(__DragonFly__)
  loop->stats.getsockopt++;
  if (getpeereid(s->fd, uid, gid) < 0) return -errno;
  *pid = -1;
  return 0;
#else
  (void)uid;
  (void)gid;
  (void)pid;
  return -ENOTSUP;
#endif
}

int iomux_socketpair(iomux_loop *loop, int fds[2]) {
  loop->stats.socket++;
#ifdef SOCK_NONBLOCK
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0)
    return -errno;
  return 0;
#else
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) < 0) return -errno;
  for (int i = 0; i < 2; i++) {
    int rc = sys_adopt_flags(loop, fds[i]);
    if (rc < 0) {
      sys_close(loop, fds[0]);
      sys_close(loop, fds[1]);
      return rc;
    }
  }
  return 0;
#endif
}

int iomux_fd_local_address(iomux_loop *loop, int fd, struct sockaddr_storage *ss,
                           socklen_t *len) {
  if (fd < 0) return -EBADF;
  memset(ss, 0, sizeof *ss);
  *len = sizeof *ss;
  return sys_getsockname(loop, fd, ss, len);
}

int iomux_local_address(iomux_loop *loop, int id, struct sockaddr_storage *ss,
                        socklen_t *len) {
  sock *s = iomux__sock(loop, id, 0);
  if (!s) return -EBADF;
  memset(ss, 0, sizeof *ss);
  *len = sizeof *ss;
  return sys_getsockname(loop, s->fd, ss, len);
}

/* ---- the write queue ------------------------------------------------------ */

/* A queue holds a buffer only while bytes wait in it: the first comes from
 * the loop's pool (IOMUX_OUTQ_BUF bytes, enough for most responses), larger
 * ones from malloc, and an emptied queue gives its buffer back at once. An
 * idle connection then holds no buffer, whatever it carried, and a
 * request-response exchange costs a pool pop and push, no malloc. */
static void outq_release(iomux_loop *loop, outq *q) {
  iomux__pool_put(&loop->outq_pool, q->buf, q->cap);
  q->buf = NULL;
  q->head = q->cap = 0;
}

static int outq_append(iomux_loop *loop, outq *q, const uint8_t *data,
                       size_t len) {
  if (len == 0) return 0;
  if ((size_t)q->len + len > UINT32_MAX / 2) return -ENOBUFS;
  if (!q->buf && len <= IOMUX_OUTQ_BUF) {
    q->buf = iomux__pool_get(&loop->outq_pool);
    if (!q->buf) return -ENOMEM;
    q->cap = IOMUX_OUTQ_BUF;
    q->head = 0;
  }
  if ((size_t)q->head + q->len + len > q->cap) {
    if (q->head) {
      memmove(q->buf, q->buf + q->head, q->len);
      q->head = 0;
    }
    if ((size_t)q->len + len > q->cap) {
      size_t cap = q->cap ? q->cap : IOMUX_OUTQ_BUF;
      while (cap < (size_t)q->len + len) cap *= 2;
      uint8_t *b = realloc(q->buf, cap);
      if (!b) return -ENOMEM;
      q->buf = b;
      q->cap = (uint32_t)cap;
    }
  }
  memcpy(q->buf + q->head + q->len, data, len);
  q->len += (uint32_t)len;
  return 0;
}

static void outq_consume(iomux_loop *loop, outq *q, size_t n) {
  assert(n <= q->len);
  q->head += (uint32_t)n;
  q->len -= (uint32_t)n;
  if (q->len == 0 && q->buf) outq_release(loop, q);
}

void iomux__outq_consume(iomux_loop *loop, outq *q, size_t n) {
  outq_consume(loop, q, n);
}

static void outq_free(iomux_loop *loop, outq *q) {
  outq_release(loop, q);
  q->len = 0;
}

/* ---- timeouts ------------------------------------------------------------- */

/* Activity moves the idle deadline with two stores and no syscall; the heap
 * entry is checked lazily when it comes due (iomux__idle_expired). Only a
 * socket whose timeout already fired is put back in the heap. */
static void touch(iomux_loop *loop, sock *s) {
  if (!s->idle_ms) return;
  s->last_active = iomux__now();
  if (loop->tnodes[s->timer].heap < 0)
    iomux__timer_arm(loop, s->timer,
                     s->last_active + (int64_t)s->idle_ms * 1000000);
}

void iomux__touch(iomux_loop *loop, sock *s) { touch(loop, s); }

void iomux__idle_expired(iomux_loop *loop, int32_t slot, int64_t now) {
  sock *s = iomux__sock(loop, slot, SK_STREAM);
  if (!s || !s->idle_ms) return;
  if (s->fwd) {
    iomux__fwd_idle(loop, s, now);
    return;
  }
  int64_t deadline = s->last_active + (int64_t)s->idle_ms * 1000000;
  if (deadline > now)
    iomux__timer_arm(loop, s->timer, deadline);
  else
    iomux__emit(loop, IOMUX_EV_TIMEOUT, slot, 0, 0);
}

int iomux_set_timeout(iomux_loop *loop, int id, uint32_t ms) {
  sock *s = iomux__sock(loop, id, SK_STREAM);
  if (!s) return -EBADF;
  if (s->fwd) return -EBUSY; /* the forwarding's idle_ms owns the timer */
  if (ms == 0) {
    if (s->timer >= 0) iomux__tnode_free(loop, s->timer);
    s->timer = -1;
    s->idle_ms = 0;
    return 0;
  }
  if (s->timer < 0) {
    int32_t t = iomux__tnode_alloc(loop, TK_IDLE, id);
    if (t < 0) return t;
    s->timer = t;
  }
  s->idle_ms = ms;
  s->last_active = iomux__now();
  iomux__timer_arm(loop, s->timer, s->last_active + (int64_t)ms * 1000000);
  return 0;
}

/* ---- errors --------------------------------------------------------------- */

static void report_error(iomux_loop *loop, sock *s, int32_t slot, int err,
                         int op) {
  if (s->flags & SF_ERROR) return;
  s->flags |= SF_ERROR;
  s->flags &= ~SF_READABLE;
  iomux__emit(loop, IOMUX_EV_ERROR, slot, err, op);
}

/* ---- writing -------------------------------------------------------------- */

static void after_flush(iomux_loop *loop, sock *s, int32_t slot) {
  if (s->flags & SF_NOTIFY_DRAIN) {
    s->flags &= ~SF_NOTIFY_DRAIN;
    iomux__emit(loop, IOMUX_EV_DRAIN, slot, 0, 0);
  }
  if (s->flags & SF_SHUT_PENDING) {
    s->flags = (s->flags & ~SF_SHUT_PENDING) | SF_SHUT_DONE;
    int rc = sys_shutdown_wr(loop, s->fd);
    if (rc < 0 && rc != -ENOTCONN)
      report_error(loop, s, slot, -rc, IOMUX_OP_SHUTDOWN);
  }
}

/* A unix stream socket's writer is woken at every read of its peer: the
 * reader's recvmsg frees the skbs the writer queued, whose destructor
 * (sock_wfree) calls unix_write_space (net/unix/af_unix.c), and that wakes
 * every EPOLLOUT waiter whenever the socket is writable, whether or not a
 * write was ever refused. (TCP wakes a writer only after it ran out of room,
 * SOCK_NOSPACE, in tcp_check_space.) Registered once for IN|OUT, a process
 * that writes small messages to a unix socket is thus woken again, for
 * nothing, each time the peer reads them. So where the backend can change an
 * fd's interest (want_write), a unix stream stops watching write readiness
 * at the first writable event that finds nothing queued, and watches it
 * again when the kernel refuses a write (unwritable); the writable edge
 * that flushes the queue and fires 'drain' then still comes. A socket being
 * forwarded watches it throughout (iomux_forward). TCP keeps register-once. */
int iomux__want_write(iomux_loop *loop, sock *s, int32_t slot, bool on) {
  if (s->peer_family != IOMUX_AF_UNIX || s->kind != SK_STREAM ||
      !loop->ops->want_write)
    return 0;
  if (on != !!(s->flags & SF_OUT_OFF)) return 0; /* as asked already */
  int rc = loop->ops->want_write(loop, s->fd, TOKEN(slot, s->gen), on);
  if (rc < 0) return rc;
  s->flags ^= SF_OUT_OFF;
  return 0;
}

/* The kernel refused bytes: the queue waits for the writable edge. Without
 * the edge it would wait for ever, so failing to ask for it is an error. */
static void unwritable(iomux_loop *loop, sock *s, int32_t slot) {
  s->flags &= ~SF_WRITABLE;
  int rc = iomux__want_write(loop, s, slot, true);
  if (rc < 0) {
    outq_free(loop, &s->out);
    report_error(loop, s, slot, -rc, IOMUX_OP_WRITE);
  }
}

/* What one write of the whole queue came back with. Emits at most two
 * records (callers make room). */
static void sent(iomux_loop *loop, sock *s, int32_t slot, ssize_t n) {
  if (n < 0) {
    if (would_block((int)-n)) {
      unwritable(loop, s, slot);
      return;
    }
    outq_free(loop, &s->out);
    report_error(loop, s, slot, (int)-n, IOMUX_OP_WRITE);
    return;
  }
  outq_consume(loop, &s->out, (size_t)n);
  if (s->out.len) { /* a short write: the send buffer is full */
    unwritable(loop, s, slot);
    return;
  }
  after_flush(loop, s, slot);
}

/* Writes the queue until it is empty or the kernel refuses. Emits at most
 * two records (callers make room). */
static void flush_out(iomux_loop *loop, sock *s, int32_t slot) {
  if (!s->out.len) {
    after_flush(loop, s, slot);
    return;
  }
  sent(loop, s, slot, sys_write(loop, s->fd, s->out.buf + s->out.head, s->out.len));
}

/* The end of a delivery: the queues of every socket written to in it go out
 * together, one write each, in one kernel call where the loop can batch
 * (batch.c); forwarders flush their own. n is at most IOMUX_FLUSH_CHUNK,
 * with room for two records per socket. */
void iomux__flush_listed(iomux_loop *loop, const uint64_t *tokens, uint32_t n) {
  assert(n <= IOMUX_FLUSH_CHUNK);
  io_op ops[IOMUX_FLUSH_CHUNK];
  int32_t slots[IOMUX_FLUSH_CHUNK];
  uint32_t m = 0;
  for (uint32_t i = 0; i < n; i++) {
    sock *s = sock_by_token(loop, tokens[i]);
    if (!s) continue;
    s->flags &= ~SF_FLUSH_LISTED;
    if (s->fwd || (s->flags & (SF_CORKED | SF_CONNECTING | SF_ERROR)) ||
        !(s->flags & SF_WRITABLE))
      continue;
    int32_t slot = (int32_t)TOKEN_SLOT(tokens[i]);
    if (!s->out.len) {
      after_flush(loop, s, slot);
      continue;
    }
    ops[m] = (io_op){.fd = s->fd, .send = true,
                     .buf = s->out.buf + s->out.head, .len = s->out.len};
    slots[m++] = slot;
  }
  sys_io_batch(loop, ops, m);
  for (uint32_t j = 0; j < m; j++)
    sent(loop, loop->socks[slots[j]], slots[j], ops[j].res);
  /* Written to before their forwarder started: it flushes them, after the
   * batch, since it may end a forwarding and close sockets. */
  for (uint32_t i = 0; i < n; i++) {
    sock *s = sock_by_token(loop, tokens[i]);
    if (s && s->fwd) iomux__fwd_service(loop, s);
  }
}

ssize_t iomux_writev(iomux_loop *loop, int id, const struct iovec *iov,
                     int iovcnt, int notify) {
  sock *s = iomux__sock(loop, id, SK_STREAM);
  if (!s) return -EBADF;
  if (s->flags & (SF_SHUT_PENDING | SF_SHUT_DONE | SF_ERROR)) return -EPIPE;
  if (s->fwd && !iomux__fwd_accepts_writes(s)) return -EBUSY;
  if (iovcnt < 0) return -EINVAL;
  size_t total = 0;
  for (int i = 0; i < iovcnt; i++) total += iov[i].iov_len;
  touch(loop, s);

  bool can_send = s->out.len == 0 || loop->delivering;
  can_send = can_send && (s->flags & SF_WRITABLE) &&
             !(s->flags & (SF_CORKED | SF_CONNECTING));
  /* During a delivery small writes wait to be coalesced; large ones (with
   * whatever was queued before them) go out now rather than be copied. */
  if (loop->delivering && s->out.len + total < BIG_WRITE) can_send = false;

  size_t skip = 0; /* bytes of iov already written */
  if (can_send && total > 0) {
    /* Up to MAX_IOV buffers per sendmsg(), the queue's bytes first; the
     * next window goes only when the kernel took all of this one. So a
     * writer may hand over many pieces by reference (frames and their
     * headers) and only what the kernel refuses is copied. */
    struct iovec v[MAX_IOV + 1];
    size_t queued = s->out.len;
    int next = 0; /* the first iov not yet in a window */
    for (;;) {
      int cnt = 0;
      size_t want = 0;
      if (queued) {
        v[cnt].iov_base = s->out.buf + s->out.head;
        v[cnt++].iov_len = queued;
        want = queued;
      }
      while (next < iovcnt && cnt < MAX_IOV) {
        want += iov[next].iov_len;
        v[cnt++] = iov[next++];
      }
      assert(cnt > 0);
      ssize_t n = sys_writev(loop, s->fd, v, cnt);
      /* An error after earlier windows went out: the connection is broken
       * either way, and the caller drops it. */
      if (n < 0 && !would_block((int)-n)) return n;
      if (n < 0) n = 0;
      size_t from_queue = (size_t)n < queued ? (size_t)n : queued;
      outq_consume(loop, &s->out, from_queue);
      skip += (size_t)n - from_queue;
      queued = 0;
      if ((size_t)n < want || next == iovcnt) break;
    }
    if (skip < total) {
      /* The rest waits for the writable edge: without it, for ever. */
      int rc = iomux__want_write(loop, s, id, true);
      if (rc < 0) return rc;
      s->flags &= ~SF_WRITABLE;
    }
  }
  for (int i = 0; i < iovcnt; i++) {
    size_t len = iov[i].iov_len;
    if (skip >= len) {
      skip -= len;
      continue;
    }
    int rc = outq_append(loop, &s->out, (const uint8_t *)iov[i].iov_base + skip,
                         len - skip);
    if (rc < 0) return rc;
    skip = 0;
  }
  if (s->out.len) {
    if (notify) s->flags |= SF_NOTIFY_DRAIN;
    /* A socket the kernel has not refused gets no writable edge to flush
     * on: list it. Inside a delivery the queue goes out when the callback
     * returns; outside one (too many buffers for one sendmsg) at the start
     * of the next iteration. Corked queues wait for the uncork. */
    if ((s->flags & SF_WRITABLE) && !(s->flags & SF_CORKED))
      flush_push(loop, s, id);
  }
  return (ssize_t)s->out.len;
}

ssize_t iomux_write(iomux_loop *loop, int id, const void *buf, size_t len,
                    int notify) {
  struct iovec v = {(void *)buf, len};
  return iomux_writev(loop, id, &v, 1, notify);
}

ssize_t iomux_queued(iomux_loop *loop, int id) {
  sock *s = iomux__sock(loop, id, SK_STREAM);
  return s ? (ssize_t)s->out.len : -EBADF;
}

int iomux_shutdown(iomux_loop *loop, int id) {
  sock *s = iomux__sock(loop, id, SK_STREAM);
  if (!s) return -EBADF;
  if (s->fwd) return -EBUSY; /* the forwarder relays the peer's FIN */
  if (s->flags & (SF_SHUT_PENDING | SF_SHUT_DONE)) return 0;
  if (s->out.len || (s->flags & SF_CONNECTING)) {
    s->flags |= SF_SHUT_PENDING;
    return 0;
  }
  s->flags |= SF_SHUT_DONE;
  int rc = sys_shutdown_wr(loop, s->fd);
  return rc == -ENOTCONN ? 0 : rc;
}

int iomux_cork(iomux_loop *loop, int id, int on) {
  sock *s = iomux__sock(loop, id, SK_STREAM);
  if (!s) return -EBADF;
  if (s->fwd) return -EBUSY;
  if (on) {
    s->flags |= SF_CORKED;
  } else if (s->flags & SF_CORKED) {
    s->flags &= ~SF_CORKED;
    /* Flushed at the start of the next iteration, which comes at once. */
    if (s->out.len) flush_push(loop, s, id);
  }
  return 0;
}

/* ---- reading -------------------------------------------------------------- */

/* Whether s may be read now; a socket that may not but should be later goes
 * on the ready list. */
static bool may_read(iomux_loop *loop, sock *s, int32_t slot) {
  if ((s->flags & (SF_READABLE | SF_PAUSED | SF_EOF | SF_ERROR |
                   SF_CONNECTING)) != SF_READABLE)
    return false; /* a connecting socket reads once its CONNECT is reported */
  if (loop->slab_size - loop->slab_pos < 1024 || !loop->slab) {
    ready_push(loop, s, slot); /* the embedder kept the slab: later */
    return false;
  }
  /* One share per iteration: a socket that filled its cap when its event was
   * handled is on the ready list, which is serviced later in the same
   * iteration; reading it again there would double the cap. */
  if (s->served == loop->stats.iterations) {
    ready_push(loop, s, slot);
    return false;
  }
  s->served = loop->stats.iterations;
  return true;
}

/* What read number `reads` (0 or 1) of this iteration came back with: n
 * bytes of the `asked` it asked for, which were read into the slab at
 * loop->slab_pos, with *total read before it and cap the most this
 * iteration may take. Returns whether to read again. A read that reaches the
 * cap leaves the socket on the ready list, so one flooding peer gets one
 * cap's worth per iteration; a short read means the receive queue is empty,
 * and any later byte raises a new edge. Two reads at most per iteration: the
 * second reaches the EOF once the peer's FIN was seen, or takes the rest of
 * what a batched first read had too little room for. */
static bool read_done(iomux_loop *loop, sock *s, int32_t slot, ssize_t n,
                      size_t asked, size_t *total, size_t cap, int reads) {
  if (n > 0) {
    iomux__emit(loop, IOMUX_EV_DATA, slot, (int32_t)loop->slab_pos, (int32_t)n);
    loop->slab_pos += (size_t)n;
    *total += (size_t)n;
    if (*total == cap) {
      ready_push(loop, s, slot);
      return false;
    }
    if ((size_t)n < asked && !(s->flags & SF_RDHUP)) {
      s->flags &= ~SF_READABLE;
      return false;
    }
    if (reads == 1) {
      ready_push(loop, s, slot);
      return false;
    }
    return true;
  }
  if (n == 0) {
    s->flags = (s->flags | SF_EOF) & ~SF_READABLE;
    iomux__emit(loop, IOMUX_EV_EOF, slot, 0, 0);
  } else if (would_block((int)-n)) {
    s->flags &= ~SF_READABLE;
  } else {
    report_error(loop, s, slot, (int)-n, IOMUX_OP_READ);
  }
  return false;
}

/* Reads on, from read number `reads` with `total` bytes read so far. */
static void read_on(iomux_loop *loop, sock *s, int32_t slot, size_t total,
                    int reads) {
  size_t room = loop->slab_size - loop->slab_pos;
  size_t cap = loop->cfg.read_cap < total + room ? loop->cfg.read_cap
                                                   : total + room;
  while (reads < 2) {
    if (total == cap) { /* no room left here: the rest next time */
      ready_push(loop, s, slot);
      break;
    }
    size_t asked = cap - total;
    ssize_t n = sys_read(loop, s->fd, loop->slab + loop->slab_pos, asked);
    if (!read_done(loop, s, slot, n, asked, &total, cap, reads++)) break;
  }
  if (total) touch(loop, s);
}

static void read_some(iomux_loop *loop, sock *s, int32_t slot) {
  if (may_read(loop, s, slot)) read_on(loop, s, slot, 0, 0);
}

/* The first read of up to IOMUX_READ_CHUNK readable sockets, in one kernel
 * call where the loop can batch: each reads into a region of its own
 * past loop->slab_pos, and what came is then moved down to lie end to end
 * (requests are mostly far smaller than a region). A socket that filled its
 * region reads on alone, into the room left after everyone's bytes. */
static void read_batch(iomux_loop *loop, const uint64_t *tokens, uint32_t n) {
  io_op ops[IOMUX_READ_CHUNK];
  int32_t slots[IOMUX_READ_CHUNK];
  assert(n <= IOMUX_READ_CHUNK);
  while (n > 0) {
    /* Two records per socket at most, and a region's room: making them may
     * run the embedder. */
    iomux__ensure_room(loop, 2 * (size_t)(n < IOMUX_READ_CHUNK ? n : IOMUX_READ_CHUNK),
                       IOMUX_READ_REGION_MIN);
    size_t room = loop->slab_size - loop->slab_pos;
    uint32_t k = n;
    if (loop->slab && room / IOMUX_READ_REGION_MIN < k)
      k = (uint32_t)(room / IOMUX_READ_REGION_MIN);
    uint32_t per_round = iomux__sockets_per_round(loop, IOMUX_READ_CHUNK);
    if (k > per_round) k = per_round;
    if (k == 0) k = 1; /* may_read() puts it on the ready list */
    size_t region = room / k;
    if (region > loop->cfg.read_cap) region = loop->cfg.read_cap;
    uint32_t m = 0;
    for (uint32_t i = 0; i < k; i++) {
      sock *s = sock_by_token(loop, tokens[i]);
      int32_t slot = (int32_t)TOKEN_SLOT(tokens[i]);
      if (!s || !may_read(loop, s, slot)) continue;
      ops[m] = (io_op){.fd = s->fd, .buf = loop->slab + loop->slab_pos + m * region,
                       .len = region};
      slots[m++] = slot;
    }
    sys_io_batch(loop, ops, m);
    uint32_t more = 0; /* sockets that read on: slots[0..more) */
    size_t more_total[IOMUX_READ_CHUNK];
    for (uint32_t j = 0; j < m; j++) {
      sock *s = loop->socks[slots[j]];
      ssize_t got = ops[j].res;
      if (got > 0 && ops[j].buf != loop->slab + loop->slab_pos)
        memmove(loop->slab + loop->slab_pos, ops[j].buf, (size_t)got);
      size_t total = 0;
      if (read_done(loop, s, slots[j], got, region, &total,
                    loop->cfg.read_cap, 0)) {
        more_total[more] = total;
        slots[more++] = slots[j];
      } else if (total) {
        touch(loop, s);
      }
    }
    for (uint32_t j = 0; j < more; j++)
      read_on(loop, loop->socks[slots[j]], slots[j], more_total[j], 1);
    tokens += k;
    n -= k;
  }
}

void iomux__read_pending(iomux_loop *loop) {
  uint64_t tokens[IOMUX_READ_CHUNK];
  uint32_t n = loop->nreads;
  memcpy(tokens, loop->reads, n * sizeof *tokens);
  loop->nreads = 0;
  if (n) read_batch(loop, tokens, n);
}

/* Lists s for a read with the others of this harvest (iomux__read_pending),
 * which go to the kernel together. */
static void read_later(iomux_loop *loop, sock *s, int32_t slot) {
  loop->reads[loop->nreads++] = TOKEN(slot, s->gen);
  if (loop->nreads == IOMUX_READ_CHUNK) iomux__read_pending(loop);
}

int iomux_set_reading(iomux_loop *loop, int id, int on) {
  sock *s = iomux__sock(loop, id, SK_STREAM);
  if (!s) return -EBADF;
  if (s->fwd) return -EBUSY; /* the forwarder decides when to read */
  if (!on) {
    s->flags |= SF_PAUSED;
  } else if (s->flags & SF_PAUSED) {
    s->flags &= ~SF_PAUSED;
    if (s->flags & SF_READABLE) ready_push(loop, s, id);
  }
  return 0;
}

/* ---- listening and accepting --------------------------------------------- */

/* A bound, listening, non-blocking socket; *defer says whether
 * TCP_DEFER_ACCEPT took. On failure nothing is left behind. */
static int make_listener(iomux_loop *loop, const struct sockaddr *addr,
                         socklen_t len, int backlog, unsigned flags,
                         bool *defer) {
  int family = addr->sa_family;
  if (family != AF_INET && family != AF_INET6 && family != AF_UNIX)
    return -EAFNOSUPPORT;
  *defer = false;
  int fd = sys_socket(loop, family);
  if (fd < 0) return fd;
  int rc = 0;
  if (family != AF_UNIX) {
    rc = sys_setsockopt_int(loop, fd, SOL_SOCKET, SO_REUSEADDR, 1);
    if (!rc && (flags & IOMUX_LISTEN_REUSEPORT)) {
#ifdef SO_REUSEPORT
      rc = sys_setsockopt_int(loop, fd, SOL_SOCKET, SO_REUSEPORT, 1);
#else
      rc = -ENOTSUP;
#endif
    }
    if (!rc && family == AF_INET6)
      rc = sys_setsockopt_int(loop, fd, IPPROTO_IPV6, IPV6_V6ONLY,
                              (flags & IOMUX_LISTEN_V6ONLY) ? 1 : 0);
    /* Accepted sockets inherit TCP_NODELAY from the listener (Linux copies
     * it with the socket in sk_clone_lock(), FreeBSD's syncache copies
     * TF_NODELAY), which saves a setsockopt() per connection. */
    if (!rc) rc = sys_setsockopt_int(loop, fd, IPPROTO_TCP, TCP_NODELAY, 1);
#ifdef TCP_DEFER_ACCEPT
    /* The value is the seconds a silent client waits before it is accepted
     * all the same (Linux turns it into SYN-ACK retransmissions). */
    if (!rc && (flags & IOMUX_LISTEN_DEFER_ACCEPT)) {
      rc = sys_setsockopt_int(loop, fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, 1);
      *defer = rc == 0;
    }
#endif
  }
  bool bound = false;
  if (!rc) {
    rc = sys_bind(loop, fd, addr, len);
    bound = rc == 0;
  }
  if (!rc) rc = sys_listen(loop, fd, backlog > 0 ? backlog : 511);
  if (rc) {
    const struct sockaddr_un *un = (const struct sockaddr_un *)addr;
    if (bound && family == AF_UNIX &&
        len > offsetof(struct sockaddr_un, sun_path) && un->sun_path[0])
      sys_unlink(loop, un->sun_path);
    sys_close(loop, fd);
    return rc;
  }
  return fd;
}

int iomux_listen_socket(iomux_loop *loop, const struct sockaddr *addr,
                        socklen_t len, int backlog, unsigned flags) {
  bool defer;
  return make_listener(loop, addr, len, backlog, flags, &defer);
}

int iomux_listen(iomux_loop *loop, const struct sockaddr *addr,
                 socklen_t len, int backlog, unsigned flags) {
  bool defer = false;
  int fd = make_listener(loop, addr, len, backlog, flags, &defer);
  if (fd < 0) return fd;
  const struct sockaddr_un *un = (const struct sockaddr_un *)addr;
  bool named_unix = addr->sa_family == AF_UNIX &&
                    len > offsetof(struct sockaddr_un, sun_path) &&
                    un->sun_path[0] != '\0';
  char *path = NULL;
  int32_t slot = 0;
  if (named_unix) {
    path = strndup(un->sun_path, sizeof un->sun_path);
    if (!path) slot = -ENOMEM;
  }
  if (slot == 0) slot = sock_register(loop, SK_LISTENER, fd);
  if (slot < 0) {
    free(path);
    if (named_unix) sys_unlink(loop, un->sun_path);
    sys_close(loop, fd);
    return slot;
  }
  loop->socks[slot]->path = path;
  if (defer) loop->socks[slot]->flags |= SF_DEFER_ACCEPT;
  return slot;
}

/* Whether fd is a stream socket, and whether it listens: 0 or -errno. */
static int stream_socket(iomux_loop *loop, int fd, int *listening) {
  if (fd < 0) return -EBADF;
  int type = 0;
  int rc = sys_getsockopt_int(loop, fd, SOL_SOCKET, SO_TYPE, &type);
  if (rc < 0) return rc; /* -EBADF, -ENOTSOCK */
  if (type != SOCK_STREAM) return -EINVAL;
  int acc = 0;
  rc = sys_getsockopt_int(loop, fd, SOL_SOCKET, SO_ACCEPTCONN, &acc);
  if (rc < 0) return rc;
  *listening = acc != 0;
  return 0;
}

int iomux_listen_fd(iomux_loop *loop, int fd, unsigned flags) {
  if (flags != 0) return -EINVAL;
  int listening = 0;
  int rc = stream_socket(loop, fd, &listening);
  if (rc < 0) return rc;
  if (!listening) return -EINVAL;
  rc = sys_adopt_flags(loop, fd);
  if (rc < 0) return rc;
  return sock_register(loop, SK_LISTENER, fd);
}

int iomux_adopt(iomux_loop *loop, int fd) {
  int listening = 0;
  int rc = stream_socket(loop, fd, &listening);
  if (rc < 0) return rc;
  if (listening) return -EINVAL;
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  memset(&ss, 0, sizeof ss);
  rc = sys_getpeername(loop, fd, &ss, &len);
  if (rc < 0) return rc; /* -ENOTCONN */
  rc = sys_adopt_flags(loop, fd);
  if (rc < 0) return rc;
  int32_t slot = sock_register(loop, SK_STREAM, fd);
  if (slot < 0) return slot;
  sock *s = loop->socks[slot];
  s->flags = SF_WRITABLE;
  peer_from(s, (const struct sockaddr *)&ss);
  return slot;
}

static void pause_accepting(iomux_loop *loop, sock *l, int32_t slot, int err) {
  /* Reported once per episode, not at every retry. */
  if (!(l->flags & SF_ACCEPT_REPORTED))
    iomux__emit(loop, IOMUX_EV_ACCEPT_ERROR, slot, err, 0);
  l->flags |= SF_ACCEPT_REPORTED;
  if (l->flags & SF_ACCEPT_PAUSED) return;
  if (l->timer < 0) l->timer = iomux__tnode_alloc(loop, TK_ACCEPT_RETRY, slot);
  if (l->timer < 0) return; /* no memory for the timer: retry on the next edge */
  l->flags |= SF_ACCEPT_PAUSED;
  loop->paused_listeners++;
  iomux__timer_arm(loop, l->timer,
                   iomux__now() + (int64_t)loop->cfg.accept_retry_ms * 1000000);
}

static void resume_accepting(iomux_loop *loop, sock *l, int32_t slot) {
  if (!(l->flags & SF_ACCEPT_PAUSED)) return;
  l->flags = (l->flags & ~SF_ACCEPT_PAUSED) | SF_READABLE;
  loop->paused_listeners--;
  iomux__timer_disarm(loop, l->timer);
  ready_push(loop, l, slot);
}

void iomux__accept_retry(iomux_loop *loop, int32_t slot) {
  sock *l = iomux__sock(loop, slot, SK_LISTENER);
  if (l) resume_accepting(loop, l, slot);
}

/* An fd was released: listeners that ran out of fds may accept again. */
static void wake_paused_listeners(iomux_loop *loop) {
  for (uint32_t i = 0; loop->paused_listeners && i < loop->nsocks; i++) {
    sock *l = iomux__sock(loop, (int)i, SK_LISTENER);
    if (l) resume_accepting(loop, l, (int32_t)i);
  }
}

/* Accepts until EAGAIN or the per-iteration cap. Running out of fds
 * (EMFILE, ENFILE) or memory pauses this listener instead of spinning on an
 * edge we cannot consume; it resumes when one of our sockets closes or after
 * accept_retry_ms, whichever comes first. The pending connections wait in the
 * kernel's backlog meanwhile. */
static void accept_some(iomux_loop *loop, sock *l, int32_t lslot) {
  /* One accept_cap per iteration, as for reads (see read_some). */
  if (l->served == loop->stats.iterations) {
    ready_push(loop, l, lslot);
    return;
  }
  l->served = loop->stats.iterations;
  bool read_now = l->flags & SF_DEFER_ACCEPT;
  for (uint32_t i = 0; i < loop->cfg.accept_cap; i++) {
    /* The ACCEPT and its address record, and with TCP_DEFER_ACCEPT the
     * first DATA too. */
    iomux__ensure_room(loop, 3, 0);
    if (l->flags & (SF_CLOSED | SF_ACCEPT_PAUSED)) return;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int fd = sys_accept(loop, l->fd, &ss, &len);
    if (fd < 0) {
      if (would_block(-fd)) {
        l->flags &= ~SF_READABLE;
        if (loop->ops->listener_drained)
          loop->ops->listener_drained(loop, l->fd, TOKEN(lslot, l->gen));
        return;
      }
      if (fd == -ECONNABORTED || fd == -EPROTO) continue; /* peer gave up */
      pause_accepting(loop, l, lslot, -fd);
      return;
    }
    int32_t c = sock_register(loop, SK_STREAM, fd);
    if (c < 0) {
      sys_close(loop, fd);
      pause_accepting(loop, l, lslot, -c);
      return;
    }
    sock *s = loop->socks[c];
    s->flags = SF_WRITABLE;
    peer_from(s, (const struct sockaddr *)&ss);
#ifndef __linux__
    (void)sys_setsockopt_int(loop, fd, IPPROTO_TCP, TCP_NODELAY, 1);
#endif
    iomux__emit(loop, IOMUX_EV_ACCEPT, c, lslot,
                (int32_t)((uint32_t)s->peer_family << 16 | s->peer_port));
    int32_t w[IOMUX_RECORD_WORDS];
    memcpy(w, s->peer_addr, sizeof w);
    iomux__emit_words(loop, w); /* the address fills a whole record */
    l->flags &= ~SF_ACCEPT_REPORTED;
    /* The kernel queued this connection once bytes came: read them now
     * instead of waiting for the registration's first event. On epoll that
     * event still comes (the bytes were there at EPOLL_CTL_ADD) and its read
     * finds EAGAIN: one read per connection, against one wakeup saved. */
    if (read_now) {
      s->flags |= SF_READABLE;
      read_later(loop, s, c);
    }
  }
  ready_push(loop, l, lslot); /* the cap was reached: more may wait */
}

/* ---- connecting ----------------------------------------------------------- */

int iomux_connect(iomux_loop *loop, const struct sockaddr *addr,
                  socklen_t len) {
  return iomux_connect_from(loop, addr, len, NULL, 0);
}

int iomux_connect_from(iomux_loop *loop, const struct sockaddr *addr,
                       socklen_t len, const struct sockaddr *local,
                       socklen_t local_len) {
  int family = addr->sa_family;
  if (family != AF_INET && family != AF_INET6 && family != AF_UNIX)
    return -EAFNOSUPPORT;
  if (local && (family == AF_UNIX || local->sa_family != family))
    return -EAFNOSUPPORT;
  int fd = sys_socket(loop, family);
  if (fd < 0) return fd;
  int rc = 0;
  if (family != AF_UNIX)
    rc = sys_setsockopt_int(loop, fd, IPPROTO_TCP, TCP_NODELAY, 1);
  if (!rc && local) rc = sys_bind(loop, fd, local, local_len);
  if (!rc) {
    rc = sys_connect(loop, fd, addr, len);
    if (rc == -EINPROGRESS) rc = 0;
  }
  int32_t slot = rc ? rc : sock_register(loop, SK_STREAM, fd);
  if (slot < 0) {
    sys_close(loop, fd);
    return slot;
  }
  sock *s = loop->socks[slot];
  s->flags = SF_CONNECTING;
  peer_from(s, addr);
  return slot;
}

static void finish_connect(iomux_loop *loop, sock *s, int32_t slot) {
  int err = sys_socket_error(loop, s->fd);
  s->flags &= ~SF_CONNECTING;
  iomux__emit(loop, IOMUX_EV_CONNECT, slot, err, 0);
  if (err) {
    s->flags |= SF_ERROR;
    return;
  }
  s->flags |= SF_WRITABLE;
  if (s->out.len && !(s->flags & SF_CORKED))
    flush_out(loop, s, slot);
  else if (!s->out.len)
    after_flush(loop, s, slot);
}

/* ---- events ----------------------------------------------------------------- */

void iomux__handle_event(iomux_loop *loop, uint64_t token, uint32_t mask) {
  sock *s = sock_by_token(loop, token);
  if (!s) return; /* closed earlier in this batch, or long ago */
  /* Reads make their own room (iomux__read_pending), accepts too. */
  iomux__ensure_room(loop, 4, 0);
  if (s->flags & SF_CLOSED) return; /* closed by the delivery just made */
  int32_t slot = (int32_t)TOKEN_SLOT(token);

  if (s->fwd) {
    iomux__fwd_event(loop, s, mask);
    return;
  }
  if (s->kind == SK_LISTENER) {
    loop->stats.accept_wakeups++;
    s->flags |= SF_READABLE;
    if (!(s->flags & SF_ACCEPT_PAUSED)) accept_some(loop, s, slot);
    return;
  }
  if (s->flags & SF_CONNECTING) {
    if (!(mask & (RD_WRITE | RD_ERROR | RD_HUP))) {
      /* kqueue reports the read filter apart from the write filter, and the
       * peer's first bytes may come ahead of the connect's completion in the
       * same harvest: the edge is kept for when the connect completes. */
      if (mask & RD_READ) s->flags |= SF_READABLE;
      return;
    }
    finish_connect(loop, s, slot);
    if (s->flags & SF_ERROR) return;
    if (s->flags & SF_READABLE) mask |= RD_READ;
  }
  if (mask & (RD_READ | RD_HUP | RD_ERROR)) {
    s->flags |= SF_READABLE;
    /* A hang-up or an error is read at once, so that what ended the
     * stream is reported by the read that finds it, ahead of any write. */
    if (mask & (RD_HUP | RD_ERROR)) {
      if (mask & RD_HUP) s->flags |= SF_RDHUP;
      read_some(loop, s, slot);
    } else {
      read_later(loop, s, slot);
    }
  }
  if (mask & (RD_WRITE | RD_ERROR | RD_HUP)) {
    s->flags |= SF_WRITABLE;
    if (s->out.len && !(s->flags & (SF_ERROR | SF_CORKED)))
      flush_out(loop, s, slot);
    else if (!s->out.len && (mask & RD_WRITE))
      (void)iomux__want_write(loop, s, slot, false); /* woken for nothing */
  }
}

void iomux__service_ready(iomux_loop *loop, uint64_t token) {
  sock *s = sock_by_token(loop, token);
  if (!s) return;
  s->flags &= ~SF_READY_LISTED;
  iomux__ensure_room(loop, 4, iomux__read_room(loop));
  if (s->flags & SF_CLOSED) return;
  int32_t slot = (int32_t)TOKEN_SLOT(token);
  if (s->fwd) {
    iomux__fwd_service(loop, s);
  } else if (s->kind == SK_LISTENER) {
    if (!(s->flags & SF_ACCEPT_PAUSED)) accept_some(loop, s, slot);
  } else {
    read_some(loop, s, slot);
  }
}

/* ---- options ---------------------------------------------------------------- */

int iomux_set_nodelay(iomux_loop *loop, int id, int on) {
  sock *s = iomux__sock(loop, id, SK_STREAM);
  if (!s) return -EBADF;
  if (s->peer_family == IOMUX_AF_UNIX) return 0;
  return sys_setsockopt_int(loop, s->fd, IPPROTO_TCP, TCP_NODELAY, on ? 1 : 0);
}

int iomux_set_keepalive(iomux_loop *loop, int id, int on, unsigned delay_s) {
  sock *s = iomux__sock(loop, id, SK_STREAM);
  if (!s) return -EBADF;
  if (s->peer_family == IOMUX_AF_UNIX) return 0;
  int rc = sys_setsockopt_int(loop, s->fd, SOL_SOCKET, SO_KEEPALIVE, on ? 1 : 0);
  if (rc || !on || !delay_s) return rc;
#if defined(TCP_KEEPIDLE)
  return sys_setsockopt_int(loop, s->fd, IPPROTO_TCP, TCP_KEEPIDLE, (int)delay_s);
#elif defined(TCP_KEEPALIVE)
  return sys_setsockopt_int(loop, s->fd, IPPROTO_TCP, TCP_KEEPALIVE, (int)delay_s);
#else
  return 0;
#endif
}

int iomux_set_bufsize(iomux_loop *loop, int id, int send, int bytes) {
  sock *s = iomux__sock(loop, id, SK_STREAM);
  if (!s) return -EBADF;
  if (bytes <= 0) return -EINVAL;
  return sys_setsockopt_int(loop, s->fd, SOL_SOCKET, send ? SO_SNDBUF : SO_RCVBUF,
                            bytes);
}

int iomux_get_bufsize(iomux_loop *loop, int id, int send) {
  sock *s = iomux__sock(loop, id, SK_STREAM);
  if (!s) return -EBADF;
  int v = 0;
  int rc = sys_getsockopt_int(loop, s->fd, SOL_SOCKET, send ? SO_SNDBUF : SO_RCVBUF,
                              &v);
  return rc < 0 ? rc : v;
}

/* ---- closing ---------------------------------------------------------------- */

int iomux_close(iomux_loop *loop, int id) {
  sock *s = iomux__sock(loop, id, 0);
  if (!s) return -EBADF;
  if (s->fwd) {
    iomux__fwd_closed(loop, s, id);
    return 0;
  }
  return iomux__sock_close(loop, id, true, false);
}

int iomux_reset(iomux_loop *loop, int id) {
  sock *s = iomux__sock(loop, id, SK_STREAM);
  if (!s) return -EBADF;
  if (s->fwd) {
    iomux__fwd_closed(loop, s, id);
    return 0;
  }
  return iomux__sock_close(loop, id, true, true);
}

int iomux__sock_close(iomux_loop *loop, int32_t id, bool recycle, bool reset) {
  sock *s = loop->socks[id];
  assert(s && !(s->flags & SF_CLOSED));
  if (s->flags & SF_ACCEPT_PAUSED) loop->paused_listeners--;
  /* Bytes written during a delivery wait to be coalesced; a socket closed
   * in the same handler must still send them, as it would have had the
   * write gone straight to the kernel. One try, nothing kept: what the
   * kernel refuses is discarded, as close always discards a queue. */
  if (s->out.len && !reset && (s->flags & SF_WRITABLE) &&
      !(s->flags & (SF_ERROR | SF_CONNECTING | SF_CORKED | SF_SHUT_DONE)))
    (void)sys_write(loop, s->fd, s->out.buf + s->out.head, s->out.len);
  loop->ops->del(loop, s->fd, TOKEN(id, s->gen));
  if (s->path) {
    sys_unlink(loop, s->path);
    free(s->path);
    s->path = NULL;
  }
  int rc = reset ? sys_close_reset(loop, s->fd) : sys_close(loop, s->fd);
  outq_free(loop, &s->out);
  if (s->timer >= 0) iomux__tnode_free(loop, s->timer);
  s->timer = -1;
  s->fd = -1;
  s->flags = SF_CLOSED;
  s->fwd = NULL;
  s->gen++;
  if (recycle && vec32_push(&loop->closing, id) < 0) {
    /* Out of memory: the slot is lost, never reused unsafely. */
  }
  if (loop->paused_listeners) wake_paused_listeners(loop);
  return rc;
}

void iomux__close_all(iomux_loop *loop) {
  for (uint32_t i = 0; i < loop->nsocks; i++)
    if (iomux__sock(loop, (int)i, 0)) iomux_close(loop, (int)i);
}
