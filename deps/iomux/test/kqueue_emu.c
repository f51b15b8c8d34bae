/*
 * kqueue_emu.c -- kqueue(2) and kevent(2) over epoll, for tests on Linux.
 * What is emulated, and how it differs from a real kqueue: kqueue_emu.h.
 *
 * How it works
 *   A kqueue is an epoll fd plus a table, by fd number, of what is registered
 *   for that fd: the filters, their flags and udata words, and the identity
 *   (st_dev, st_ino) of the file they were registered on. One epoll entry per
 *   fd carries the union of its filters (EPOLLET when they are EV_CLEAR); its
 *   data word holds the fd and a generation, so that events of a registration
 *   that was dropped are recognised.
 *
 *   kevent() applies the changelist first, then scans. Epoll events activate
 *   filters, and an fd with active filters joins a FIFO (kqueue's "active
 *   queue"); the scan turns active filters into kevents until the eventlist is
 *   full. What does not fit stays active for the next call, so no edge is ever
 *   lost (with EV_CLEAR epoll will not report it again).
 *
 *   close(2) cannot be seen from here. A real kqueue drops a closed fd's
 *   knotes; the emulation notices a closed fd by its identity instead: a
 *   registration whose file is not the one now behind the fd number is
 *   forgotten when that number is next used in a change, and activations
 *   carried over from an earlier call are checked before they are delivered.
 *   (Epoll itself drops an fd when its file is closed.) The same goes for the
 *   kqueues themselves: the state of a closed kqueue is freed by a later
 *   kqueue() call (or stays reachable until exit).
 */
#define _GNU_SOURCE
#include "kqueue_emu.h"

#include <errno.h>
#include <limits.h>
#include <linux/sockios.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

enum { F_READ = 1, F_WRITE = 2 };

/* An edge-triggered entry's events, whatever its filters (see ep_update). */
#define EDGE_EVENTS (EPOLLIN | EPOLLRDHUP | EPOLLOUT | EPOLLET)

/* What is registered for one fd number. */
typedef struct kfd {
  uint32_t gen;      /* in the epoll data word; bumped when forgotten */
  uint8_t filters;   /* F_READ | F_WRITE registered */
  uint8_t clear;     /* those of them with EV_CLEAR */
  uint8_t active;    /* activated, not yet delivered */
  bool listed;       /* in the active FIFO */
  bool in_epoll;
  uint32_t seen;     /* epoll bits seen since the last full delivery */
  uint64_t seq;      /* the kevent() call that listed it */
  dev_t dev;         /* the file the filters were registered on */
  ino_t ino;
  uint16_t flags[2]; /* per filter: the flags events return (EV_CLEAR...) */
  void *udata[2];
} kfd;

typedef struct kq {
  int epfd;
  dev_t dev;
  ino_t ino;
  kfd *fds;          /* by fd number */
  uint32_t nfds;
  uint32_t *fifo;    /* fds with active filters, oldest first; room for nfds */
  uint32_t nfifo;
  struct epoll_event *ev;
  int nev;
  uint64_t seq;      /* kevent() calls so far */
} kq;

/* ---- the kqueues, by fd number --------------------------------------------- */

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static kq **reg;
static size_t reg_len;

static void kq_destroy(kq *k) {
  /* Its epoll fd was closed by its owner (or now belongs to someone else). */
  free(k->fds);
  free(k->fifo);
  free(k->ev);
  free(k);
}

static bool same_file(int fd, dev_t dev, ino_t ino) {
  struct stat st;
  return fstat(fd, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

static kq *kq_lookup(int fd) {
  pthread_mutex_lock(&reg_lock);
  kq *k = fd >= 0 && (size_t)fd < reg_len ? reg[fd] : NULL;
  pthread_mutex_unlock(&reg_lock);
  return k;
}

int kqueue(void) {
  /* Not close-on-exec, as kqueue(2): the caller sets FD_CLOEXEC itself. */
  int fd = epoll_create1(0);
  if (fd < 0) return -1;
  kq *k = calloc(1, sizeof *k);
  struct stat st;
  if (!k || fstat(fd, &st) < 0) {
    int err = k ? errno : ENOMEM;
    free(k);
    close(fd);
    errno = err;
    return -1;
  }
  k->epfd = fd;
  k->dev = st.st_dev;
  k->ino = st.st_ino;

  pthread_mutex_lock(&reg_lock);
  /* Forget kqueues that were closed: the one whose number the kernel just
   * handed out again for certain, and any whose fd is now another file. (All
   * epoll fds share one anonymous inode, so a closed kqueue's number reused
   * by another epoll fd is only noticed once a kqueue() gets it.) */
  for (size_t i = 0; i < reg_len; i++) {
    if (reg[i] && ((int)i == fd || !same_file((int)i, reg[i]->dev, reg[i]->ino))) {
      kq_destroy(reg[i]);
      reg[i] = NULL;
    }
  }
  if ((size_t)fd >= reg_len) {
    size_t n = reg_len ? reg_len : 16;
    while (n <= (size_t)fd) n *= 2;
    kq **p = realloc(reg, n * sizeof *p);
    if (!p) {
      pthread_mutex_unlock(&reg_lock);
      kq_destroy(k);
      close(fd);
      errno = ENOMEM;
      return -1;
    }
    memset(p + reg_len, 0, (n - reg_len) * sizeof *p);
    reg = p;
    reg_len = n;
  }
  reg[fd] = k;
  pthread_mutex_unlock(&reg_lock);
  return fd;
}

/* ---- registrations ---------------------------------------------------------- */

static int grow(kq *k, int fd) {
  if ((uint32_t)fd < k->nfds) return 0;
  uint32_t n = k->nfds ? k->nfds : 64;
  while (n <= (uint32_t)fd) n *= 2;
  kfd *p = realloc(k->fds, n * sizeof *p);
  if (!p) return ENOMEM;
  memset(p + k->nfds, 0, (n - k->nfds) * sizeof *p);
  k->fds = p;
  uint32_t *q = realloc(k->fifo, n * sizeof *q);
  if (!q) return ENOMEM; /* nfds unchanged: the larger fds array is harmless */
  k->fifo = q;
  k->nfds = n;
  return 0;
}

/* The file behind the fd number is gone: so are its filters, as close(2)
 * removes knotes. Epoll dropped it already; events still queued under the
 * old generation are ignored. */
static void forget(kfd *f) {
  f->gen++;
  f->filters = f->clear = f->active = 0;
  f->in_epoll = false;
  f->seen = 0;
}

static void list_active(kq *k, kfd *f, int fd, uint8_t bits, uint32_t e) {
  f->seen |= e;
  f->active |= bits;
  if (!f->listed) {
    /* Each fd is listed at most once, and the FIFO has room for all. */
    f->listed = true;
    f->seq = k->seq;
    k->fifo[k->nfifo++] = (uint32_t)fd;
  }
}

/* Makes the epoll entry of fd serve these filters. A level-triggered entry
 * carries exactly their events. An edge-triggered one always carries both
 * directions, and the filters only decide what is reported: EPOLL_CTL_MOD
 * would re-arm the whole fd and report its other filter again, which a
 * kqueue does not do when one knote is added or deleted. A filter added to
 * such an entry is checked now instead, as kqueue checks a new knote. */
static int ep_update(kq *k, int fd, kfd *f, uint8_t filters, uint8_t clear,
                     uint8_t added) {
  if (!filters) {
    if (f->in_epoll && epoll_ctl(k->epfd, EPOLL_CTL_DEL, fd, NULL) < 0)
      return errno;
    f->in_epoll = false;
    f->filters = f->clear = 0;
    return 0;
  }
  struct epoll_event ev = {0};
  if (clear) {
    ev.events = EDGE_EVENTS;
  } else {
    if (filters & F_READ) ev.events |= EPOLLIN | EPOLLRDHUP;
    if (filters & F_WRITE) ev.events |= EPOLLOUT;
  }
  ev.data.u64 = (uint64_t)f->gen << 32 | (uint32_t)fd;
  bool was_edge = f->in_epoll && f->clear && f->clear == f->filters;
  if (f->in_epoll && clear && was_edge) {
    struct pollfd p = {.fd = fd};
    if (added & F_READ) p.events |= POLLIN | POLLRDHUP;
    if (added & F_WRITE) p.events |= POLLOUT;
    if (poll(&p, 1, 0) < 0) return errno;
    uint8_t bits = 0;
    if ((added & F_READ) && (p.revents & (POLLIN | POLLRDHUP | POLLHUP | POLLERR)))
      bits |= F_READ;
    if ((added & F_WRITE) && (p.revents & (POLLOUT | POLLHUP | POLLERR)))
      bits |= F_WRITE;
    f->filters = filters;
    f->clear = clear;
    /* poll() and epoll share the event bits' values on Linux. */
    if (bits) list_active(k, f, fd, bits, (uint32_t)p.revents);
    return 0;
  }
  int rc = -1;
  if (f->in_epoll) rc = epoll_ctl(k->epfd, EPOLL_CTL_MOD, fd, &ev);
  /* Not in the set (any more: an anonymous-inode fd can be closed and
   * reopened unnoticed): add it. Adding reports present readiness. */
  if (rc < 0 && (!f->in_epoll || errno == ENOENT))
    rc = epoll_ctl(k->epfd, EPOLL_CTL_ADD, fd, &ev);
  if (rc < 0) return errno;
  f->in_epoll = true;
  f->filters = filters;
  f->clear = clear;
  return 0;
}

/* One change; 0 or the errno a real kqueue would report for it. */
static int apply(kq *k, const struct kevent *ch) {
  int idx;
  if (ch->filter == EVFILT_READ)
    idx = 0;
  else if (ch->filter == EVFILT_WRITE)
    idx = 1;
  else
    return EINVAL;
  uint16_t action = ch->flags & (EV_ADD | EV_DELETE);
  if ((action != EV_ADD && action != EV_DELETE) ||
      (ch->flags & (EV_ENABLE | EV_DISABLE | EV_ONESHOT | EV_DISPATCH)))
    return EINVAL; /* not emulated */
  if (ch->ident > INT_MAX) return EBADF;
  int fd = (int)ch->ident;
  struct stat st;
  if (fstat(fd, &st) < 0) return errno; /* EBADF: not open */
  int err = grow(k, fd);
  if (err) return err;
  kfd *f = &k->fds[fd];
  if (f->filters && (f->dev != st.st_dev || f->ino != st.st_ino))
    forget(f); /* registered on a file that has since been closed */
  uint8_t bit = (uint8_t)(1u << idx);

  if (action == EV_DELETE) {
    if (!(f->filters & bit)) return ENOENT;
    err = ep_update(k, fd, f, f->filters & ~bit, f->clear & ~bit, 0);
    if (err == ENOENT || err == EBADF) { /* closed and reopened unnoticed */
      forget(f);
      return ENOENT;
    }
    if (err) return err;
    f->active &= ~bit; /* a deleted knote leaves the active queue */
    return 0;
  }

  uint8_t filters = f->filters | bit;
  uint8_t clear = (ch->flags & EV_CLEAR) ? (f->clear | bit) : (f->clear & ~bit);
  if (clear && clear != filters) return EINVAL; /* mixed: not emulated */
  if (!f->filters) {
    f->dev = st.st_dev;
    f->ino = st.st_ino;
  }
  err = ep_update(k, fd, f, filters, clear, bit);
  if (err) return err;
  f->flags[idx] = ch->flags & (uint16_t)~(EV_ADD | EV_DELETE);
  f->udata[idx] = ch->udata;
  return 0;
}

/* ---- the scan --------------------------------------------------------------- */

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Milliseconds until deadline (ns), rounded up: never early. -1: no limit. */
static int ms_until(int64_t deadline) {
  if (deadline < 0) return -1;
  int64_t left = deadline - now_ns();
  if (left <= 0) return 0;
  int64_t ms = (left + 999999) / 1000000;
  return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* Epoll events become active filters. */
static void activate(kq *k, int n) {
  for (int i = 0; i < n; i++) {
    uint64_t d = k->ev[i].data.u64;
    uint32_t fd = (uint32_t)d, gen = (uint32_t)(d >> 32);
    if (fd >= k->nfds) continue;
    kfd *f = &k->fds[fd];
    if (f->gen != gen || !f->filters) continue; /* a dropped registration */
    uint32_t e = k->ev[i].events;
    uint8_t bits = 0;
    if ((f->filters & F_READ) && (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
      bits |= F_READ;
    if ((f->filters & F_WRITE) && (e & (EPOLLOUT | EPOLLHUP | EPOLLERR)))
      bits |= F_WRITE;
    if (bits) list_active(k, f, (int)fd, bits, e);
  }
}

static void fill(int fd, const kfd *f, int idx, struct kevent *kev) {
  kev->ident = (uintptr_t)fd;
  kev->filter = idx ? EVFILT_WRITE : EVFILT_READ;
  kev->flags = f->flags[idx];
  kev->fflags = 0;
  kev->data = 0;
  kev->udata = f->udata[idx];
  uint32_t e = f->seen;
  if (idx == 0) {
    int avail = 0;
    if (ioctl(fd, FIONREAD, &avail) == 0 && avail > 0) kev->data = avail;
    /* The peer's FIN (or the end of both directions): EOF, though bytes may
     * still wait to be read. */
    if (e & (EPOLLRDHUP | EPOLLHUP)) kev->flags |= EV_EOF;
  } else {
    int sndbuf = 0, queued = 0;
    socklen_t len = sizeof sndbuf;
    if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) == 0 &&
        ioctl(fd, SIOCOUTQ, &queued) == 0 && sndbuf > queued)
      kev->data = sndbuf - queued;
    /* Nothing can be sent any more: the connection is down. */
    if (e & EPOLLHUP) kev->flags |= EV_EOF;
  }
  if ((kev->flags & EV_EOF) && (e & EPOLLERR)) kev->fflags = KQEMU_PENDING_ERROR;
}

/* Active filters into the eventlist, oldest first. */
static int deliver(kq *k, struct kevent *out, int room) {
  int n = 0;
  uint32_t i = 0;
  while (i < k->nfifo && n < room) {
    int fd = (int)k->fifo[i];
    kfd *f = &k->fds[fd];
    /* Listed in an earlier call: the fd may have been closed since. */
    if (f->active && f->seq != k->seq && !same_file(fd, f->dev, f->ino))
      forget(f);
    for (int idx = 0; idx < 2 && n < room; idx++) {
      uint8_t bit = (uint8_t)(1u << idx);
      if (!(f->active & bit)) continue;
      fill(fd, f, idx, &out[n++]);
      f->active &= ~bit;
    }
    if (f->active) break; /* no room for its other filter: first next time */
    f->listed = false;
    f->seen = 0;
    i++;
  }
  if (i) { /* (fifo is NULL until the first registration) */
    k->nfifo -= i;
    memmove(k->fifo, k->fifo + i, k->nfifo * sizeof *k->fifo);
  }
  return n;
}

static int scan(kq *k, struct kevent *out, int nevents,
                const struct timespec *ts) {
  int64_t deadline = -1;
  if (ts) deadline = now_ns() + (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
  if (k->nev < nevents) {
    struct epoll_event *p = realloc(k->ev, (size_t)nevents * sizeof *p);
    if (!p) {
      errno = ENOMEM;
      return -1;
    }
    k->ev = p;
    k->nev = nevents;
  }
  for (;;) {
    /* Harvest first, deliver second: a filter activated by a change and by
     * an epoll edge in the same call is one event, as one active knote. But
     * harvest no more than is likely to fit (an epoll event can make two
     * kevents; each listed fd may need two entries): what does not fit
     * waits, and only epoll's own ready list keeps the kqueue fd readable. */
    int want = (nevents - 2 * (int)k->nfifo) / 2;
    if (want < 1) want = k->nfifo ? 0 : 1;
    int m = 0;
    if (want > 0)
      m = epoll_wait(k->epfd, k->ev, want, k->nfifo ? 0 : ms_until(deadline));
    if (m < 0 && errno != EINTR) return -1;
    if (m > 0) activate(k, m);
    int n = deliver(k, out, nevents);
    if (n > 0) return n;
    if (m < 0) { /* EINTR, as kevent(2) */
      errno = EINTR;
      return -1;
    }
    /* Nothing, or only events of dropped registrations: wait on. */
    if (ms_until(deadline) == 0) return 0;
  }
}

/* Filters left active for the next call must keep the kqueue fd readable,
 * as a real kqueue's is while it has active knotes: an outer loop (libuv)
 * polls that fd and would otherwise never come back for them. EPOLL_CTL_MOD
 * re-arms an edge-triggered entry, queueing it again if it is ready (a
 * level-triggered one stays queued while ready anyway). If it is not ready
 * any more, a real kqueue would drop the activation at its next scan; here it
 * waits for the next call. */
static void rearm_leftovers(kq *k) {
  for (uint32_t i = 0; i < k->nfifo; i++) {
    int fd = (int)k->fifo[i];
    kfd *f = &k->fds[fd];
    if (!f->active || !f->in_epoll || !f->clear) continue;
    struct epoll_event ev = {.events = EDGE_EVENTS};
    ev.data.u64 = (uint64_t)f->gen << 32 | (uint32_t)fd;
    /* Failure: the fd was closed; delivery drops its activation. */
    (void)epoll_ctl(k->epfd, EPOLL_CTL_MOD, fd, &ev);
  }
}

static int kq_call(kq *k, const struct kevent *changelist, int nchanges,
                         struct kevent *eventlist, int nevents,
                         const struct timespec *timeout);

int kevent(int kqfd, const struct kevent *changelist, int nchanges,
           struct kevent *eventlist, int nevents,
           const struct timespec *timeout) {
  kq *k = kq_lookup(kqfd);
  if (!k) {
    errno = EBADF;
    return -1;
  }
  if (nchanges < 0 || nevents < 0 || (nchanges && !changelist) ||
      (nevents && !eventlist) ||
      (timeout && (timeout->tv_sec < 0 || timeout->tv_nsec < 0 ||
                   timeout->tv_nsec >= 1000000000))) {
    errno = EINVAL;
    return -1;
  }
  int n = kq_call(k, changelist, nchanges, eventlist, nevents, timeout);
  if (k->nfifo) {
    int err = errno;
    rearm_leftovers(k);
    errno = err;
  }
  return n;
}

static int kq_call(kq *k, const struct kevent *changelist, int nchanges,
                         struct kevent *eventlist, int nevents,
                         const struct timespec *timeout) {
  k->seq++;
  /* The changes, in order. eventlist may be changelist itself: an error
   * entry is only ever written over a change already applied. */
  int nout = 0;
  for (int i = 0; i < nchanges; i++) {
    struct kevent ch = changelist[i];
    int err = apply(k, &ch);
    if (!err && !(ch.flags & EV_RECEIPT)) continue;
    if (nout == nevents) {
      if (!err) continue; /* a receipt with no room: dropped (as macOS) */
      errno = err;        /* the rest is not applied (as the BSDs) */
      return -1;
    }
    ch.flags = EV_ERROR;
    ch.data = err;
    eventlist[nout++] = ch;
  }
  if (nout) return nout; /* errors and receipts come back alone */
  if (nevents == 0) return 0;
  return scan(k, eventlist, nevents, timeout);
}

int kqueue_emu_filters(int kqfd, int fd) {
  kq *k = kq_lookup(kqfd);
  if (!k) {
    errno = EBADF;
    return -1;
  }
  if (fd < 0 || (uint32_t)fd >= k->nfds) return 0;
  const kfd *f = &k->fds[fd];
  if (!f->filters || !same_file(fd, f->dev, f->ino)) return 0;
  return f->filters;
}
