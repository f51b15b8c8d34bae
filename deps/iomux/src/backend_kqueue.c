/*
 * backend_kqueue.c -- kqueue: macOS and the BSDs. On Linux it is built only
 * against test/kqueue_emu.c (IOMUX_KQUEUE_EMULATION), for the test suites.
 *
 * Registration. Each fd gets EVFILT_READ and EVFILT_WRITE, EV_ADD|EV_CLEAR,
 * once, and they are never modified: as with edge-triggered epoll, the socket
 * layer reads and writes until EAGAIN and readiness is only a hint. add()
 * makes no syscall: it queues the two changes, and they go to the kernel as
 * the changelist of the same kevent() call that waits (with the nearest timer
 * deadline as its timeout). An iteration is then exactly one kevent(), and
 * request/response traffic, accepts included, costs no call of its own for
 * registration: loop.stats shows wait == iterations and ctl == 0, and counts
 * each registration that rode with a wait in changes.
 *
 * Closing. close() removes an fd's knotes in the kernel, so del() makes no
 * call either; but changes still queued for the fd must never be submitted
 * after the close, because the fd number may by then name another file (a
 * socket accepted in the same iteration, or one the embedder opened). del()
 * purges them.
 *
 * Errors of changes. A change that fails comes back as an EV_ERROR entry in
 * the eventlist, and a kernel that has produced one returns without waiting
 * and without readiness events (FreeBSD, macOS and OpenBSD all do). Worse, a
 * BSD kernel with no room left in the eventlist for an error stops applying
 * the changelist and fails the call. So the wait carries at most as many
 * changes as its eventlist has entries; in a burst with more, the excess is
 * submitted first, in EV_RECEIPT calls that cannot consume readiness
 * (counted in stats.submit). An EV_ERROR entry never passes for readiness: it
 * is reported on its socket as RD_ERROR (the socket layer's next read or
 * write reports what is wrong with the socket), and the socket layer drops
 * it when the token is stale. A change is never lost: after a failed call the
 * queue is kept, as submitting an EV_ADD twice is harmless.
 *
 * EOF. EVFILT_READ with EV_EOF: the peer sent FIN, yet bytes may still be
 * pending (data counts them), so it is RD_READ|RD_HUP and the socket layer
 * reads on until read() returns 0. EVFILT_WRITE with EV_EOF means only that
 * nothing more can be sent: the kernel sets it after our own
 * shutdown(SHUT_WR) as well as after a reset, so it is RD_WRITE (a queued
 * write then fails with EPIPE, a pending connect completes) and not RD_HUP,
 * which tells the socket layer the peer's FIN was seen; a reset shows on the
 * read filter too. EV_CLEAR makes it one event per state change, not a
 * level that would spin. fflags with EV_EOF is the socket's error: RD_ERROR.
 *
 * Tokens. The udata word carries the socket's token (slot and generation),
 * never a pointer, cast through uintptr_t: 64-bit platforms only.
 */
#include "internal.h"

#ifdef IOMUX_HAVE_KQUEUE

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#ifdef IOMUX_KQUEUE_EMULATION
#include "../test/kqueue_emu.h"
#else
#include <sys/types.h>
#include <sys/event.h>
#include <sys/time.h>
#endif

_Static_assert(sizeof(((struct kevent *)0)->udata) >= sizeof(uint64_t),
               "a token (64 bits) must fit in udata: 64-bit platforms only");

typedef struct kq_state {
  int kq;
  struct kevent *changes; /* queued for the next wait */
  int nchanges, cap;
  struct kevent *events;  /* the eventlist: nevents entries */
  int nevents;
} kq_state;

static void *udata_of(uint64_t token) { return (void *)(uintptr_t)token; }

static int kq_init(iomux_loop *loop) {
  kq_state *st = calloc(1, sizeof *st);
  if (!st) return -ENOMEM;
  st->kq = -1;
  /* loop->fired has max_events entries: never harvest more than that. */
  st->nevents = loop->cfg.max_events > INT_MAX ? INT_MAX
                                               : (int)loop->cfg.max_events;
  assert(st->nevents > 0);
  st->events = calloc((size_t)st->nevents, sizeof *st->events);
  int err = -ENOMEM;
  if (!st->events) goto fail;
  st->kq = kqueue();
  if (st->kq < 0) {
    err = -errno;
    goto fail;
  }
  /* kqueue() takes no close-on-exec flag (FreeBSD 14's kqueuex() does, but
   * not the others). A kqueue is not inherited across fork() anyway; this
   * keeps its fd out of exec'd programs. */
  if (fcntl(st->kq, F_SETFD, FD_CLOEXEC) < 0) {
    err = -errno;
    goto fail;
  }
  loop->backend = st;
  return 0;
fail:
  if (st->kq >= 0) close(st->kq);
  free(st->events);
  free(st);
  return err;
}

static void kq_free(iomux_loop *loop) {
  kq_state *st = loop->backend;
  if (!st) return;
  close(st->kq);
  free(st->changes);
  free(st->events);
  free(st);
  loop->backend = NULL;
}

static int kq_fd(const iomux_loop *loop) {
  return ((const kq_state *)loop->backend)->kq;
}

/* Queues both filters, or nothing (-ENOMEM): no syscall. */
static int kq_add(iomux_loop *loop, int fd, uint64_t token) {
  kq_state *st = loop->backend;
  assert(fd >= 0 && token != TOKEN_FOREIGN);
  if (st->nchanges + 2 > st->cap) {
    if (st->cap > INT_MAX / 2) return -ENOMEM;
    int cap = st->cap ? st->cap * 2 : 64;
    struct kevent *p = realloc(st->changes, (size_t)cap * sizeof *p);
    if (!p) return -ENOMEM;
    st->changes = p;
    st->cap = cap;
  }
  EV_SET(&st->changes[st->nchanges++], fd, EVFILT_READ, EV_ADD | EV_CLEAR, 0,
         0, udata_of(token));
  EV_SET(&st->changes[st->nchanges++], fd, EVFILT_WRITE, EV_ADD | EV_CLEAR, 0,
         0, udata_of(token));
  loop->stats.changes++; /* one registration, its two filters together */
  return 0;
}

/* fd is about to be closed: its queued changes must not outlive it. */
static void kq_del(iomux_loop *loop, int fd, uint64_t token) {
  kq_state *st = loop->backend;
  int kept = 0;
  for (int i = 0; i < st->nchanges; i++) {
    if (st->changes[i].ident == (uintptr_t)fd) {
      assert((uint64_t)(uintptr_t)st->changes[i].udata == token);
      continue;
    }
    st->changes[kept++] = st->changes[i];
  }
  (void)token;
  /* Both filters purged: the registration never happened. (One alone: the
   * eventlist's limit split it, and the other went to the kernel.) */
  assert(st->nchanges - kept <= 2);
  if (st->nchanges - kept == 2) loop->stats.changes--;
  st->nchanges = kept;
}

/* Applies one change now (the outer loop's fd is watched rarely, and its
 * caller wants to know at once whether that worked). With no eventlist the
 * call cannot wait, and a failing change fails the call with its errno. */
static int apply_now(kq_state *st, int fd, int16_t filter, uint16_t flags,
                     uint64_t token) {
  struct kevent ch;
  struct timespec zero = {0, 0};
  EV_SET(&ch, fd, filter, flags, 0, 0, udata_of(token));
  return kevent(st->kq, &ch, 1, NULL, 0, &zero) < 0 ? -errno : 0;
}

static int kq_watch_foreign(iomux_loop *loop, int fd, int old_fd) {
  kq_state *st = loop->backend;
  if (old_fd >= 0) {
    loop->stats.ctl++;
    int rc = apply_now(st, old_fd, EVFILT_READ, EV_DELETE, TOKEN_FOREIGN);
    if (rc < 0 && rc != -ENOENT && rc != -EBADF) return rc;
  }
  if (fd < 0) return 0;
  /* Level-triggered (no EV_CLEAR): the outer loop drains it itself. */
  loop->stats.ctl++;
  return apply_now(st, fd, EVFILT_READ, EV_ADD, TOKEN_FOREIGN);
}

/* A failed change: the socket's registration is missing a filter. */
static void change_failed(iomux_loop *loop, const struct kevent *ev, int *out) {
  loop->fired[*out].token = (uint64_t)(uintptr_t)ev->udata;
  loop->fired[*out].mask = RD_ERROR;
  (*out)++;
}

/* Submits the n oldest queued changes without waiting, reporting failures
 * into loop->fired from *out on (room for n is there). EV_RECEIPT makes the
 * kernel answer every change with an EV_ERROR entry (data 0 for success), and
 * a call that produced such entries returns them without scanning: no
 * readiness is consumed here. */
static int submit_early(iomux_loop *loop, int n, int *out) {
  kq_state *st = loop->backend;
  struct timespec zero = {0, 0};
  assert(n > 0 && n <= st->nchanges && n <= st->nevents);
#ifdef EV_RECEIPT
  for (int i = 0; i < n; i++) st->changes[i].flags |= EV_RECEIPT;
  loop->stats.submit++;
  int got = kevent(st->kq, st->changes, n, st->events, n, &zero);
  if (got < 0) {
    int err = errno;
    for (int i = 0; i < n; i++) st->changes[i].flags &= ~EV_RECEIPT;
    return -err; /* kept: see kq_poll */
  }
  assert(got == n);
  for (int i = 0; i < got; i++)
    if ((st->events[i].flags & EV_ERROR) && st->events[i].data != 0)
      change_failed(loop, &st->events[i], out);
#else
  /* No EV_RECEIPT (NetBSD before 10): one change per call, and with no
   * eventlist a failing change fails the call. */
  for (int i = 0; i < n; i++) {
    loop->stats.submit++;
    if (kevent(st->kq, &st->changes[i], 1, NULL, 0, &zero) < 0) {
      if (errno == EINTR) return 0;
      change_failed(loop, &st->changes[i], out);
    }
  }
#endif
  st->nchanges -= n;
  for (int i = 0; i < st->nchanges; i++) st->changes[i] = st->changes[n + i];
  return 0;
}

static int kq_poll(iomux_loop *loop, int timeout_ms) {
  kq_state *st = loop->backend;
  int out = 0; /* loop->fired entries filled */
  /* The wait carries no more changes than its eventlist has room for errors
   * (see the top of the file). More than that only in a burst (more than
   * max_events / 2 new sockets in one iteration): the excess goes first. */
  while (st->nchanges > st->nevents - out) {
    int room = st->nevents - out;
    if (room == 0) return out; /* failures filled loop->fired: wait later */
    int n = st->nchanges - room < room ? st->nchanges - room : room;
    int rc = submit_early(loop, n, &out);
    if (rc < 0) return out ? out : rc;
  }
  int nch = st->nchanges;
  struct timespec ts, *tsp = NULL;
  if (timeout_ms >= 0 || out) {
    if (out) timeout_ms = 0; /* failures to report already */
    ts.tv_sec = timeout_ms / 1000;
    ts.tv_nsec = (long)(timeout_ms % 1000) * 1000000;
    tsp = &ts;
  }
  loop->stats.wait++;
  int n = kevent(st->kq, st->changes, nch, st->events, st->nevents - out, tsp);
  if (n < 0) {
    /* The changes stay queued: EV_ADD of a filter that is already there only
     * modifies it, so submitting them again is harmless whether or not this
     * call applied them (after EINTR it did). */
    if (errno == EINTR || out) return out;
    return -errno;
  }
  assert(n <= st->nevents - out);
  st->nchanges = 0;

  for (int i = 0; i < n; i++) {
    const struct kevent *ev = &st->events[i];
    uint32_t mask;
    if (ev->flags & EV_ERROR) {
      if (ev->data != 0) change_failed(loop, ev, &out);
      continue; /* data 0: a receipt, which we ask for only above */
    } else if (ev->filter == EVFILT_READ) {
      mask = RD_READ;
      if (ev->flags & EV_EOF) mask |= RD_HUP | (ev->fflags ? RD_ERROR : 0);
    } else if (ev->filter == EVFILT_WRITE) {
      mask = RD_WRITE;
      if ((ev->flags & EV_EOF) && ev->fflags) mask |= RD_ERROR;
    } else {
      assert(!"an event of a filter never registered");
      continue;
    }
    loop->fired[out].token = (uint64_t)(uintptr_t)ev->udata;
    loop->fired[out].mask = mask;
    out++;
  }
  return out;
}

static bool kq_pending(const iomux_loop *loop) {
  return ((const kq_state *)loop->backend)->nchanges > 0;
}

const backend_ops iomux__backend_kqueue = {
    .name = "kqueue",
    .init = kq_init,
    .free = kq_free,
    .fd = kq_fd,
    .add = kq_add,
    .del = kq_del,
    .watch_foreign = kq_watch_foreign,
    .poll = kq_poll,
    .pending = kq_pending,
};

#endif /* IOMUX_HAVE_KQUEUE */
