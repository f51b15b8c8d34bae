/*
 * forward.c -- forwarding: two sockets joined inside the core, a->b and
 * b->a, with no byte ever handed to the embedder.
 *
 * Each direction is a source socket, a destination socket and what sits
 * between them: on Linux a pipe, filled with splice(socket -> pipe) and
 * drained with splice(pipe -> socket), so the payload never enters user
 * memory; elsewhere, when asked (IOMUX_FORWARD_COPY), when no pipe can be had
 * (EMFILE) or when splice(2) refuses a socket (EINVAL), a buffer filled with
 * read() and drained with send(). Either way at most high_water bytes read
 * from the source wait for the destination: backpressure is not reading.
 *
 * Readiness is the sockets' own: the backends report a forwarding socket's
 * events as usual (edge-triggered, registered once) and the socket layer
 * hands them here instead of reading into the slab. SF_READABLE and
 * SF_WRITABLE remember an edge until the kernel says EAGAIN, so a source
 * left readable because the destination was full is read again when the
 * destination's writable edge comes, with no new event from the source.
 *
 * splice(2) into a pipe says EAGAIN both when the socket is empty and when
 * the pipe is full, and a pipe can be full with fewer bytes than its size
 * (one slot per socket buffer fragment, however small). So EAGAIN on an empty
 * pipe means the socket is empty; on a non-empty one it means "maybe full":
 * the source stays readable and is tried again once the pipe drained some.
 *
 * A forwarding that ends closes both sockets at once (their fds and pipes
 * are released then) but keeps their slots out of the free list until its
 * FORWARD_END record is emitted, so the record's ids name no later socket.
 * Records are only emitted from iomux__fwd_report(), one phase of the
 * iteration: an end can happen inside the embedder's callback (iomux_close),
 * where no record may be added to the batch being delivered.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__linux__)
#include <fcntl.h>
#include <pthread.h>
#define HAVE_SPLICE 1
#endif

#define DEFAULT_HIGH_WATER (64 * 1024)
#define MIN_HIGH_WATER 1024
#define MAX_HIGH_WATER (64u * 1024 * 1024)
/* The size a new pipe gets on Linux; larger high-water marks ask for more. */
#define DEFAULT_PIPE_SIZE (64 * 1024)
/* The buffer a direction copies through before it turns out to be bulk. */
#define COPY_BUFFER IOMUX_COPY_BUF
/* Bytes one direction may move per iteration, in read_caps up to
 * IOMUX_READ_ROOM each (1 MiB by default): splicing costs little per byte,
 * so the share is larger than a read's, but bounded, so a pair of fast peers
 * cannot hold the loop away from everyone else. */
#define BUDGET_READ_CAPS 16

enum { D_FLOWING = 0, D_SRC_EOF, D_DONE };

typedef struct fwd_dir {
  sock *src, *dst;     /* stable for the forwarding's life (never freed) */
  int32_t src_id;      /* for the ready list */
  int pipe_r, pipe_w;  /* -1 when copying through buf */
  uint8_t *buf;        /* copying: buf[head, head + inflight) is in flight */
  uint32_t head;
  uint32_t inflight;   /* taken from src, not yet accepted by dst */
  uint64_t bytes;      /* accepted by dst */
  uint64_t iter;       /* the iteration moved counts for */
  size_t moved;
  uint8_t state;       /* D_* */
  bool pipe_full;      /* splice in said EAGAIN with bytes in the pipe */
  bool may_splice;     /* copying for now; splicing once the flow is bulk */
  bool bulk;           /* a copy read filled the buffer: splice from now on */
  uint32_t cap;        /* bytes in flight at most: the high-water mark, or the
                          smaller copy buffer while small messages go by */
  bool started;        /* a read from src was tried: no more embedder writes */
} fwd_dir;

struct iomux_fwd {
  fwd_dir d[2];        /* a->b, b->a */
  int32_t a, b;
  uint32_t hwm;
  bool guard_sigpipe;  /* block SIGPIPE around splices (not ignored) */
  bool listed;         /* in loop->fwds, to be pumped with the others */
  bool ended;
  uint8_t reason;
  int err;
  iomux_fwd *next;     /* loop->fwd_ended */
};

static bool would_block(ssize_t n) { return n == -EAGAIN || n == -EWOULDBLOCK; }

/* ---- resources of a direction --------------------------------------------- */

/* The copy buffer goes back to the loop (its pool when it has the pool's
 * size) whenever nothing is in flight, unless it is a bulk copying
 * direction's high-water buffer, kept while the forwarding lasts: an idle
 * pair then holds no buffer, and the next small message takes one from the
 * pool with no malloc. */
static void dir_buf_put(iomux_loop *loop, fwd_dir *d) {
  iomux__pool_put(&loop->copy_pool, d->buf, d->cap);
  d->buf = NULL;
  d->head = 0;
}

static void dir_buf_idle(iomux_loop *loop, fwd_dir *d) {
  if (d->buf && d->inflight == 0 && d->cap <= COPY_BUFFER) dir_buf_put(loop, d);
}

static uint8_t *dir_buf_get(iomux_loop *loop, fwd_dir *d) {
  if (!d->buf) {
    d->buf = d->cap == IOMUX_COPY_BUF ? iomux__pool_get(&loop->copy_pool)
                                      : malloc(d->cap);
    d->head = 0;
  }
  return d->buf;
}

static void dir_release(iomux_loop *loop, fwd_dir *d) {
  if (d->pipe_r >= 0) sys_close(loop, d->pipe_r);
  if (d->pipe_w >= 0) sys_close(loop, d->pipe_w);
  d->pipe_r = d->pipe_w = -1;
  dir_buf_put(loop, d);
}

/* A pipe per direction on Linux; the buffer of the copying path is made on
 * first use. No pipe (out of fds): the direction copies instead, which costs
 * memory rather than fds. */
static int dir_open(iomux_loop *loop, fwd_dir *d, uint32_t hwm, bool copy) {
  d->pipe_r = d->pipe_w = -1;
  d->cap = hwm;
#ifdef HAVE_SPLICE
  if (copy) return 0;
  /* Small messages (requests and responses) cost fewer syscalls copied: a
   * short read says the socket is empty, where a splice into a pipe cannot
   * (see above), so it would take a third call, an EAGAIN, per message. The
   * direction copies through a small buffer until a read fills it, then
   * splices. */
  d->may_splice = true;
  if (hwm > COPY_BUFFER) d->cap = COPY_BUFFER;
  (void)loop;
  return 0;
#else
  (void)loop;
  (void)hwm;
  (void)copy;
#endif
  return 0;
}

/* A bulk direction with nothing in flight gets its pipe. */
static void dir_to_splice(iomux_loop *loop, fwd_dir *d, uint32_t hwm) {
  d->may_splice = false;
  d->bulk = false;
#ifdef HAVE_SPLICE
  assert(d->inflight == 0);
  int fds[2];
  /* No pipe to be had (EMFILE, ENFILE, ENOMEM): it keeps copying. */
  if (sys_pipe(loop, fds) < 0) return;
  d->pipe_r = fds[0];
  d->pipe_w = fds[1];
  /* A larger pipe lets one splice carry a whole high-water mark. Refused
   * (above pipe-max-size): the default pipe stays, and "maybe full" below
   * takes care of the difference. */
  if (hwm > DEFAULT_PIPE_SIZE)
    (void)sys_set_pipe_size(loop, d->pipe_w, (int)hwm);
  dir_buf_put(loop, d);
  d->cap = hwm;
#else
  (void)loop;
  (void)hwm;
#endif
}

/* splice(2) refused one of the sockets: move to the copying path, taking
 * along what is in the pipe. */
static int dir_to_copy(iomux_loop *loop, fwd_dir *d, uint32_t hwm) {
  uint8_t *buf = malloc(hwm);
  if (!buf) return -ENOMEM;
  uint32_t got = 0;
  while (got < d->inflight) {
    ssize_t n = sys_read(loop, d->pipe_r, buf + got, d->inflight - got);
    if (n <= 0) { /* a pipe holding inflight bytes cannot be empty */
      free(buf);
      return n < 0 ? (int)n : -EIO;
    }
    got += (uint32_t)n;
  }
  sys_close(loop, d->pipe_r);
  sys_close(loop, d->pipe_w);
  d->pipe_r = d->pipe_w = -1;
  d->may_splice = false;
  d->cap = hwm;
  d->buf = buf;
  d->head = 0;
  d->pipe_full = false;
  return 0;
}

/* ---- moving bytes ------------------------------------------------------------ */

/* Takes up to len bytes from the source: > 0, 0 at EOF, or -errno. */
static ssize_t take_in(iomux_loop *loop, fwd_dir *d, size_t len) {
#ifdef HAVE_SPLICE
  if (d->pipe_w >= 0) return sys_splice(loop, d->src->fd, d->pipe_w, len);
#endif
  if (!dir_buf_get(loop, d)) return -ENOMEM;
  /* The bytes in flight move to the front when the tail has no room. */
  if (d->head + d->inflight + len > d->cap) {
    memmove(d->buf, d->buf + d->head, d->inflight);
    d->head = 0;
  }
  return sys_read(loop, d->src->fd, d->buf + d->head + d->inflight, len);
}

/* Gives the destination what is in flight: > 0 bytes it took, or -errno. */
static ssize_t give_out(iomux_loop *loop, fwd_dir *d, bool *epipe) {
#ifdef HAVE_SPLICE
  if (d->pipe_r >= 0) {
    ssize_t n = sys_splice(loop, d->pipe_r, d->dst->fd, d->inflight);
    if (n == -EPIPE) *epipe = true; /* and a SIGPIPE, unless blocked */
    return n;
  }
#else
  (void)epipe;
#endif
  ssize_t n = sys_write(loop, d->dst->fd, d->buf + d->head, d->inflight);
  if (n > 0) {
    d->head += (uint32_t)n;
    if ((uint32_t)n == d->inflight) d->head = 0;
  }
  return n; /* the caller counts it, then gives an emptied buffer back */
}

/* ---- ending -------------------------------------------------------------------- */

/* Closes both sockets now (with a RST unless both FINs went through) and
 * lists the forwarding for its record. */
static void finish(iomux_loop *loop, iomux_fwd *f, int reason, int err) {
  if (f->ended) return;
  f->ended = true;
  f->reason = (uint8_t)reason;
  f->err = err;
  bool reset = reason != IOMUX_FWD_DONE;
  iomux__sock_close(loop, f->a, false, reset);
  iomux__sock_close(loop, f->b, false, reset);
  dir_release(loop, &f->d[0]);
  dir_release(loop, &f->d[1]);
  f->next = loop->fwd_ended;
  loop->fwd_ended = f;
}

/* The socket s failed with err: its side is the one reset. */
static void fail(iomux_loop *loop, iomux_fwd *f, const sock *s, int err) {
  bool is_a = s == loop->socks[f->a];
  finish(loop, f, is_a ? IOMUX_FWD_RESET_A : IOMUX_FWD_RESET_B, err);
}

/* A local failure (memory) or a peer's, told apart by the errno. */
static void fail_io(iomux_loop *loop, iomux_fwd *f, const sock *s, int err) {
  if (err == ENOMEM || err == ENOBUFS)
    finish(loop, f, IOMUX_FWD_ERROR, err);
  else
    fail(loop, f, s, err);
}

void iomux__fwd_report(iomux_loop *loop) {
  while (loop->fwd_ended) {
    /* Unlinked first: making room may deliver, and the embedder may end
     * more forwardings meanwhile; they join the list and are reported here
     * too. */
    iomux_fwd *f = loop->fwd_ended;
    loop->fwd_ended = f->next;
    iomux__ensure_room(loop, 2, 0);
    iomux__emit(loop, IOMUX_EV_FORWARD_END, f->a, f->b,
                (int32_t)((uint32_t)f->reason | (uint32_t)f->err << 8));
    int32_t w[IOMUX_RECORD_WORDS] = {
        (int32_t)(uint32_t)f->d[0].bytes, (int32_t)(uint32_t)(f->d[0].bytes >> 32),
        (int32_t)(uint32_t)f->d[1].bytes, (int32_t)(uint32_t)(f->d[1].bytes >> 32)};
    iomux__emit_words(loop, w);
    /* Now the ids may be reused, after this iteration, like any close. */
    if (vec32_push(&loop->closing, f->a) < 0 ||
        vec32_push(&loop->closing, f->b) < 0) {
      /* Out of memory: a slot is lost, never reused unsafely. */
    }
    free(f);
  }
}

void iomux__fwd_free_ended(iomux_loop *loop) {
  while (loop->fwd_ended) {
    iomux_fwd *f = loop->fwd_ended;
    loop->fwd_ended = f->next;
    free(f);
  }
}

/* ---- the pump ------------------------------------------------------------------ */

/* Bytes a direction may still move this iteration start from its budget. */
static size_t dir_budget(iomux_loop *loop, const iomux_fwd *f, fwd_dir *d) {
  if (d->iter != loop->stats.iterations) {
    d->iter = loop->stats.iterations;
    d->moved = 0;
  }
  size_t budget = iomux__read_room(loop) * BUDGET_READ_CAPS;
  return budget < f->hwm ? f->hwm : budget;
}

/* Moves one direction until the kernel refuses, the budget is spent or the
 * forwarding ends. Out before in: the destination's own queue (bytes the
 * embedder wrote) first, then what is in flight, so what was read earlier
 * always leaves first. */
static void pump_dir(iomux_loop *loop, iomux_fwd *f, fwd_dir *d, bool *epipe,
                     bool *moved_any) {
  sock *src = d->src, *dst = d->dst;
  if (d->state == D_DONE) return;
  size_t budget = dir_budget(loop, f, d);
  ssize_t n = 0; /* what failed, for the exits at the end */
  int rc = 0;

  for (;;) {
    bool progress = false;
    /* 1. Out. */
    if ((dst->flags & SF_WRITABLE) && dst->out.len) {
      n = sys_write(loop, dst->fd, dst->out.buf + dst->out.head, dst->out.len);
      if (n < 0 && !would_block(n)) goto dst_failed;
      if (n > 0) {
        iomux__outq_consume(loop, &dst->out, (size_t)n);
        progress = true;
      }
      if (dst->out.len) dst->flags &= ~SF_WRITABLE; /* refused, or short */
    } else if ((dst->flags & SF_WRITABLE) && d->inflight) {
      n = give_out(loop, d, epipe);
      if (n > 0) {
        assert((size_t)n <= d->inflight);
        d->inflight -= (uint32_t)n;
        d->bytes += (uint64_t)n;
        d->moved += (size_t)n;
        d->pipe_full = false;
        *moved_any = progress = true;
        dir_buf_idle(loop, d);
      } else if (would_block(n)) {
        dst->flags &= ~SF_WRITABLE;
      } else if (n == -EINVAL && d->pipe_r >= 0) {
        if ((rc = dir_to_copy(loop, d, f->hwm)) < 0) goto local_failure;
        progress = true;
      } else {
        goto dst_failed;
      }
    }
    /* 2. The source's FIN, once everything before it was delivered. */
    if (d->state == D_SRC_EOF && d->inflight == 0 && dst->out.len == 0) {
      if (!(dst->flags & SF_SHUT_DONE)) {
        dst->flags |= SF_SHUT_DONE;
        rc = sys_shutdown_wr(loop, dst->fd);
        if (rc < 0 && rc != -ENOTCONN) {
          n = rc;
          goto dst_failed;
        }
      }
      d->state = D_DONE;
      return;
    }
    /* 3. In, while the destination keeps up (backpressure). */
    if (d->bulk && d->inflight == 0) dir_to_splice(loop, d, f->hwm);
    if (d->state == D_FLOWING && (src->flags & SF_READABLE) && !d->pipe_full &&
        d->inflight < d->cap) {
      if (d->moved >= budget) { /* the rest next iteration */
        iomux__ready_push(loop, src, d->src_id);
        return;
      }
      d->started = true;
      size_t want = d->cap - d->inflight;
      n = take_in(loop, d, want);
      if (n > 0) {
        assert(d->inflight + (size_t)n <= d->cap);
        d->inflight += (uint32_t)n;
        *moved_any = progress = true;
        if (d->pipe_r < 0) {
          /* A short read emptied the socket: the next byte is an edge --
           * unless the FIN was seen, which raises none of its own: read
           * on to the EOF. */
          if ((size_t)n < want && !(src->flags & SF_RDHUP)) src->flags &= ~SF_READABLE;
          else if (d->may_splice) d->bulk = true;
        }
      } else if (n == 0) {
        d->state = D_SRC_EOF;
        src->flags = (src->flags | SF_EOF) & ~SF_READABLE;
        dir_buf_idle(loop, d);
        progress = true;
      } else if (would_block(n)) {
        if (d->inflight == 0) {
          src->flags &= ~SF_READABLE; /* empty: the next byte is an edge */
          dir_buf_idle(loop, d);
        } else {
          d->pipe_full = true; /* or empty: retried once the pipe drains */
        }
      } else if (n == -EINVAL && d->pipe_w >= 0) {
        if ((rc = dir_to_copy(loop, d, f->hwm)) < 0) goto local_failure;
        progress = true;
      } else {
        fail_io(loop, f, src, (int)-n);
        return;
      }
    }
    if (!progress) return;
  }

dst_failed:
  fail_io(loop, f, dst, (int)-n);
  return;
local_failure:
  finish(loop, f, IOMUX_FWD_ERROR, -rc);
}

#ifdef HAVE_SPLICE
/* splice(2) has no MSG_NOSIGNAL: a splice to a socket whose peer is gone
 * raises SIGPIPE in the calling thread. When the process does not ignore
 * it, it is blocked around the pump and the one an EPIPE raised is taken
 * back before the mask is restored. */
typedef struct sig_guard {
  bool on;
  sigset_t old;
} sig_guard;

static void guard_begin(iomux_loop *loop, iomux_fwd *f, sig_guard *g) {
  g->on = false;
  if (!f->guard_sigpipe) return;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  loop->stats.sigmask++;
  g->on = pthread_sigmask(SIG_BLOCK, &set, &g->old) == 0;
}

static void guard_end(iomux_loop *loop, sig_guard *g, bool epipe) {
  if (!g->on) return;
  /* Blocked already by the embedder: whatever is pending is its own. */
  bool ours = !sigismember(&g->old, SIGPIPE);
  if (epipe && ours) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    struct timespec zero = {0, 0};
    loop->stats.sigmask++;
    while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR) {
    }
  }
  loop->stats.sigmask++;
  pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

static bool sigpipe_ignored(iomux_loop *loop) {
  struct sigaction sa;
  loop->stats.sigmask++;
  return sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN;
}
#endif

static void pump(iomux_loop *loop, iomux_fwd *f) {
  if (f->ended) return;
  bool epipe = false, moved = false;
#ifdef HAVE_SPLICE
  sig_guard g;
  guard_begin(loop, f, &g);
#endif
  pump_dir(loop, f, &f->d[0], &epipe, &moved);
  if (!f->ended) pump_dir(loop, f, &f->d[1], &epipe, &moved);
  if (!f->ended && f->d[0].state == D_DONE && f->d[1].state == D_DONE)
    finish(loop, f, IOMUX_FWD_DONE, 0);
  /* One clock read per pump, for the idle deadline (kept on a's timer). */
  if (moved && !f->ended) iomux__touch(loop, loop->socks[f->a]);
#ifdef HAVE_SPLICE
  guard_end(loop, &g, epipe);
#endif
}

/* ---- many forwardings at once --------------------------------------------------- */

/* The forwardings whose sockets had events in one harvest are pumped
 * together (iomux__fwd_pending): first the reads of every direction that
 * copies and has nothing in flight, in one kernel call where the loop
 * batches (batch.c); then the writes of what they read; then each pump goes
 * on alone for whatever is left (splices, FINs, a full buffer, the
 * embedder's queue), which for a small message is nothing: no call at all.
 * Small messages through many pairs then cost two calls per harvest instead
 * of two per message. The steps are the pump's own (pump_dir, steps 3 and
 * 1), in the same order for each direction. */

/* A direction whose next step is a plain read into its empty buffer. */
static bool may_batch_read(iomux_loop *loop, iomux_fwd *f, fwd_dir *d) {
  if (d->state != D_FLOWING || d->pipe_w >= 0 || d->bulk || d->pipe_full ||
      d->inflight || !(d->src->flags & SF_READABLE) || d->dst->out.len)
    return false;
  if (d->moved >= dir_budget(loop, f, d)) return false;
  if (!dir_buf_get(loop, d)) return false; /* the pump fails it */
  d->head = 0;
  return true;
}

/* The read's result, as pump_dir's step 3 takes it. */
static void batch_read_done(iomux_loop *loop, iomux_fwd *f, fwd_dir *d,
                            ssize_t n, size_t want, bool *moved) {
  sock *src = d->src;
  if (n > 0) {
    d->inflight = (uint32_t)n;
    *moved = true;
    if ((size_t)n < want && !(src->flags & SF_RDHUP)) src->flags &= ~SF_READABLE;
    else if (d->may_splice) d->bulk = true;
  } else if (n == 0) {
    d->state = D_SRC_EOF;
    src->flags = (src->flags | SF_EOF) & ~SF_READABLE;
    dir_buf_idle(loop, d);
  } else if (would_block(n)) {
    src->flags &= ~SF_READABLE; /* empty: the next byte is an edge */
    dir_buf_idle(loop, d);
  } else {
    fail_io(loop, f, src, (int)-n);
  }
}

/* The write's result, as pump_dir's step 1 takes it. */
static void batch_write_done(iomux_loop *loop, iomux_fwd *f, fwd_dir *d,
                             ssize_t n, bool *moved) {
  if (n > 0) {
    assert((size_t)n <= d->inflight);
    d->head += (uint32_t)n;
    d->inflight -= (uint32_t)n;
    if (d->inflight == 0) d->head = 0;
    d->bytes += (uint64_t)n;
    d->moved += (size_t)n;
    *moved = true;
    dir_buf_idle(loop, d);
  } else if (would_block(n)) {
    d->dst->flags &= ~SF_WRITABLE;
  } else {
    fail_io(loop, f, d->dst, (int)-n);
  }
}

static void pump_listed(iomux_loop *loop, iomux_fwd **fs, uint32_t n) {
  io_op ops[2 * IOMUX_READ_CHUNK];
  fwd_dir *dirs[2 * IOMUX_READ_CHUNK];
  uint32_t of[2 * IOMUX_READ_CHUNK]; /* the forwarding: fs[of[j]] */
  bool moved[IOMUX_READ_CHUNK] = {0};
  uint32_t m = 0;
  for (uint32_t i = 0; i < n; i++) {
    for (int k = 0; k < 2; k++) {
      fwd_dir *d = &fs[i]->d[k];
      if (fs[i]->ended || !may_batch_read(loop, fs[i], d)) continue;
      d->started = true;
      ops[m] = (io_op){.fd = d->src->fd, .buf = d->buf, .len = d->cap};
      dirs[m] = d;
      of[m++] = i;
    }
  }
  sys_io_batch(loop, ops, m);
  for (uint32_t j = 0; j < m; j++) {
    iomux_fwd *f = fs[of[j]];
    if (!f->ended) batch_read_done(loop, f, dirs[j], ops[j].res, ops[j].len, &moved[of[j]]);
  }
  /* The writes: what was just read (or was in flight already), unless the
   * embedder's own queue for that destination must go first. */
  m = 0;
  for (uint32_t i = 0; i < n; i++) {
    for (int k = 0; k < 2; k++) {
      fwd_dir *d = &fs[i]->d[k];
      if (fs[i]->ended || d->pipe_r >= 0 || !d->inflight ||
          !(d->dst->flags & SF_WRITABLE) || d->dst->out.len)
        continue;
      ops[m] = (io_op){.fd = d->dst->fd, .send = true, .buf = d->buf + d->head,
                       .len = d->inflight};
      dirs[m] = d;
      of[m++] = i;
    }
  }
  sys_io_batch(loop, ops, m);
  for (uint32_t j = 0; j < m; j++) {
    iomux_fwd *f = fs[of[j]];
    if (!f->ended) batch_write_done(loop, f, dirs[j], ops[j].res, &moved[of[j]]);
  }
  for (uint32_t i = 0; i < n; i++) {
    iomux_fwd *f = fs[i];
    if (f->ended) continue;
    if (moved[i]) iomux__touch(loop, loop->socks[f->a]);
    pump(loop, f);
  }
}

void iomux__fwd_pending(iomux_loop *loop) {
  iomux_fwd *fs[IOMUX_READ_CHUNK];
  uint32_t n = loop->nfwds;
  memcpy(fs, loop->fwds, n * sizeof *fs);
  loop->nfwds = 0;
  for (uint32_t i = 0; i < n; i++) fs[i]->listed = false;
  if (n) pump_listed(loop, fs, n);
}

/* ---- what the socket layer hands over ------------------------------------------ */

void iomux__fwd_event(iomux_loop *loop, sock *s, uint32_t mask) {
  iomux_fwd *f = s->fwd;
  assert(f && !f->ended);
  if (mask & RD_HUP) s->flags |= SF_RDHUP;
  if (mask & (RD_READ | RD_HUP | RD_ERROR)) s->flags |= SF_READABLE;
  if (mask & (RD_WRITE | RD_ERROR | RD_HUP)) s->flags |= SF_WRITABLE;
  if (mask & RD_ERROR) {
    /* A reset seen now, not at the next byte: a half-closed pair may have
     * nothing to read or write on this side for a long time. */
    int err = sys_socket_error(loop, s->fd);
    if (err) {
      fail(loop, f, s, err);
      return;
    }
  }
  /* Pumped with the others of this harvest (iomux__fwd_pending). */
  if (f->listed) return;
  f->listed = true;
  loop->fwds[loop->nfwds++] = f;
  if (loop->nfwds == IOMUX_READ_CHUNK) iomux__fwd_pending(loop);
}

void iomux__fwd_service(iomux_loop *loop, sock *s) {
  assert(s->fwd);
  pump(loop, s->fwd);
}

void iomux__fwd_idle(iomux_loop *loop, sock *s, int64_t now) {
  int64_t deadline = s->last_active + (int64_t)s->idle_ms * 1000000;
  if (deadline > now)
    iomux__timer_arm(loop, s->timer, deadline);
  else
    finish(loop, s->fwd, IOMUX_FWD_TIMEOUT, ETIMEDOUT);
}

void iomux__fwd_closed(iomux_loop *loop, sock *s, int32_t id) {
  (void)id;
  finish(loop, s->fwd, IOMUX_FWD_CLOSED, 0);
}

bool iomux__fwd_accepts_writes(const sock *s) {
  const iomux_fwd *f = s->fwd;
  const fwd_dir *d = f->d[0].dst == s ? &f->d[0] : &f->d[1];
  assert(d->dst == s);
  return !d->started;
}

/* ---- the API ------------------------------------------------------------------- */

size_t iomux__fwd_memory(const iomux_fwd *f, int32_t slot) {
  if (slot != f->a) return 0;
  size_t n = sizeof *f;
  for (int i = 0; i < 2; i++)
    if (f->d[i].buf) n += f->d[i].cap;
  return n;
}

int iomux_forward(iomux_loop *loop, int a, int b,
                  const iomux_forward_opts *opts) {
  sock *sa = iomux__sock(loop, a, SK_STREAM);
  sock *sb = iomux__sock(loop, b, SK_STREAM);
  if (!sa || !sb) return -EBADF;
  if (a == b) return -EINVAL;
  if (sa->fwd || sb->fwd) return -EBUSY;
  if ((sa->flags | sb->flags) & SF_CONNECTING) return -ENOTCONN;
  if ((sa->flags | sb->flags) & SF_ERROR) return -EPIPE;
  /* A write side already shut can take nothing more: only a source that
   * already reached its EOF may feed it. */
  if ((sb->flags & (SF_SHUT_PENDING | SF_SHUT_DONE)) && !(sa->flags & SF_EOF))
    return -EPIPE;
  if ((sa->flags & (SF_SHUT_PENDING | SF_SHUT_DONE)) && !(sb->flags & SF_EOF))
    return -EPIPE;

  iomux_forward_opts o = {0};
  if (opts) o = *opts;
  uint32_t hwm = o.high_water ? o.high_water : DEFAULT_HIGH_WATER;
  if (hwm < MIN_HIGH_WATER) hwm = MIN_HIGH_WATER;
  if (hwm > MAX_HIGH_WATER) hwm = MAX_HIGH_WATER;

  iomux_fwd *f = calloc(1, sizeof *f);
  if (!f) return -ENOMEM;
  f->a = a;
  f->b = b;
  f->hwm = hwm;
  f->d[0] = (fwd_dir){.src = sa, .dst = sb, .src_id = a,
                      .pipe_r = -1, .pipe_w = -1};
  f->d[1] = (fwd_dir){.src = sb, .dst = sa, .src_id = b,
                      .pipe_r = -1, .pipe_w = -1};
  bool copy = (o.flags & IOMUX_FORWARD_COPY) != 0;
  int rc = dir_open(loop, &f->d[0], hwm, copy);
  if (rc == 0) rc = dir_open(loop, &f->d[1], hwm, copy);
  /* The idle timeout lives on a's timer; b's goes. Done before the sockets
   * are marked, while iomux_set_timeout still accepts them. */
  if (rc == 0) rc = iomux_set_timeout(loop, a, o.idle_ms);
  if (rc == 0) rc = iomux_set_timeout(loop, b, 0);
  /* The pump waits for writable edges on its own terms: both sockets watch
   * write readiness while forwarded (see iomux__want_write). */
  if (rc == 0) rc = iomux__want_write(loop, sa, a, true);
  if (rc == 0) rc = iomux__want_write(loop, sb, b, true);
  if (rc < 0) {
    dir_release(loop, &f->d[0]);
    dir_release(loop, &f->d[1]);
    free(f);
    return rc;
  }
#ifdef HAVE_SPLICE
  f->guard_sigpipe = (f->d[0].pipe_r >= 0 || f->d[1].pipe_r >= 0) &&
                     !sigpipe_ignored(loop);
#endif

  for (int i = 0; i < 2; i++) {
    fwd_dir *d = &f->d[i];
    /* The embedder's pause, cork and drain requests end here: the
     * forwarder reads and flushes on its own terms. */
    d->src->flags &= ~(SF_PAUSED | SF_CORKED | SF_NOTIFY_DRAIN);
    if (d->src->flags & SF_EOF) d->state = D_SRC_EOF;
    /* A FIN the embedder asked for is sent by the pump, after the queue. */
    if (d->dst->flags & SF_SHUT_DONE) d->state = D_DONE;
    d->dst->flags &= ~SF_SHUT_PENDING;
  }
  sa->fwd = sb->fwd = f;
  /* The first pump: bytes may be waiting already (a paused socket, a queue).
   * It runs in the ready phase (at once: has_work), never while a batch is
   * being delivered: records of these sockets already in the batch reach the
   * embedder, which may still write their bytes on, before anything is read
   * here. */
  iomux__ready_push(loop, sa, a);
  return 0;
}

int iomux_forward_info_get(iomux_loop *loop, int id, iomux_forward_info *info) {
  sock *s = iomux__sock(loop, id, SK_STREAM);
  if (!s) return -EBADF;
  if (!s->fwd) return -ENOENT;
  const iomux_fwd *f = s->fwd;
  memset(info, 0, sizeof *info);
  for (int i = 0; i < 2; i++) {
    info->bytes[i] = f->d[i].bytes;
    info->inflight[i] = f->d[i].inflight;
    info->splicing[i] = f->d[i].pipe_r >= 0;
  }
  info->high_water = f->hwm;
  return 0;
}
