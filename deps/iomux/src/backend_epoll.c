/*
 * backend_epoll.c -- Linux epoll.
 *
 * Every fd is added once with EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET and never
 * modified: readiness is an edge, the socket layer reads and writes until the
 * kernel says EAGAIN, and request/response traffic costs no epoll_ctl after the
 * accept. close() removes the fd from the set (we never dup socket fds, so the
 * close drops the last reference), so removal costs nothing either.
 *
 * The one exception is a unix stream socket's EPOLLOUT, which the socket
 * layer drops while it has nothing queued and asks for again when the kernel
 * refuses a write (want_write, one EPOLL_CTL_MOD each way): see
 * iomux__want_write in sock.c for the kernel behaviour that makes it pay.
 */
#include "internal.h"

#ifdef __linux__

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

typedef struct epoll_state {
  int epfd;
  struct epoll_event *events;
} epoll_state;

static int epoll_init(iomux_loop *loop) {
  epoll_state *st = calloc(1, sizeof *st);
  if (!st) return -ENOMEM;
  st->events = calloc(loop->cfg.max_events, sizeof *st->events);
  if (!st->events) {
    free(st);
    return -ENOMEM;
  }
  st->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (st->epfd < 0) {
    int err = -errno;
    free(st->events);
    free(st);
    return err;
  }
  loop->backend = st;
  return 0;
}

static void epoll_free(iomux_loop *loop) {
  epoll_state *st = loop->backend;
  if (!st) return;
  close(st->epfd);
  free(st->events);
  free(st);
  loop->backend = NULL;
}

static int epoll_fd(const iomux_loop *loop) {
  return ((const epoll_state *)loop->backend)->epfd;
}

static int epoll_add(iomux_loop *loop, int fd, uint64_t token) {
  epoll_state *st = loop->backend;
  struct epoll_event ev = {0};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.u64 = token;
  loop->stats.ctl++;
  return epoll_ctl(st->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

/* EPOLL_CTL_MOD polls the file again with the new mask and queues the fd if
 * it is ready now (ep_modify), so a socket that turned writable between the
 * refused write and this call is still reported. */
static int epoll_want_write(iomux_loop *loop, int fd, uint64_t token, bool on) {
  epoll_state *st = loop->backend;
  struct epoll_event ev = {0};
  ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET | (on ? EPOLLOUT : 0);
  ev.data.u64 = token;
  loop->stats.ctl++;
  return epoll_ctl(st->epfd, EPOLL_CTL_MOD, fd, &ev) < 0 ? -errno : 0;
}

/* A listener needs read readiness only. EPOLLEXCLUSIVE: a connection wakes
 * one of the epoll sets that wait on this socket, not all of them (see
 * iomux_listen); it goes with EPOLLIN and EPOLLET, not with EPOLLRDHUP. */
static int epoll_add_listener(iomux_loop *loop, int fd, uint64_t token) {
  epoll_state *st = loop->backend;
  struct epoll_event ev = {0};
#ifdef EPOLLEXCLUSIVE
  ev.events = EPOLLIN | EPOLLET | EPOLLEXCLUSIVE;
#else
  ev.events = EPOLLIN | EPOLLET;
#endif
  ev.data.u64 = token;
  loop->stats.ctl++;
  if (epoll_ctl(st->epfd, EPOLL_CTL_ADD, fd, &ev) == 0) return 0;
  if (errno != EINVAL) return -errno;
  /* Before Linux 4.5 the flag is refused. */
  ev.events = EPOLLIN | EPOLLET;
  loop->stats.ctl++;
  return epoll_ctl(st->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

static void epoll_del(iomux_loop *loop, int fd, uint64_t token) {
  (void)loop;
  (void)fd;
  (void)token; /* close() does it */
}

static int epoll_watch_foreign(iomux_loop *loop, int fd, int old_fd) {
  epoll_state *st = loop->backend;
  if (old_fd >= 0) {
    loop->stats.ctl++;
    if (epoll_ctl(st->epfd, EPOLL_CTL_DEL, old_fd, NULL) < 0 &&
        errno != ENOENT && errno != EBADF)
      return -errno;
  }
  if (fd < 0) return 0;
  struct epoll_event ev = {0};
  ev.events = EPOLLIN; /* level-triggered: the outer loop drains it itself */
  ev.data.u64 = TOKEN_FOREIGN;
  loop->stats.ctl++;
  return epoll_ctl(st->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

static int epoll_poll(iomux_loop *loop, int timeout_ms) {
  epoll_state *st = loop->backend;
  loop->stats.wait++;
  int n = epoll_wait(st->epfd, st->events, (int)loop->cfg.max_events,
                     timeout_ms);
  if (n < 0) return errno == EINTR ? 0 : -errno;
  for (int i = 0; i < n; i++) {
    uint32_t e = st->events[i].events, mask = 0;
    if (e & EPOLLIN) mask |= RD_READ;
    if (e & EPOLLOUT) mask |= RD_WRITE;
    if (e & (EPOLLRDHUP | EPOLLHUP)) mask |= RD_HUP;
    if (e & EPOLLERR) mask |= RD_ERROR;
    loop->fired[i].token = st->events[i].data.u64;
    loop->fired[i].mask = mask;
  }
  return n;
}

const backend_ops iomux__backend_epoll = {
    .name = "epoll",
    .init = epoll_init,
    .free = epoll_free,
    .fd = epoll_fd,
    .add = epoll_add,
    .add_listener = epoll_add_listener,
    .want_write = epoll_want_write,
    .del = epoll_del,
    .watch_foreign = epoll_watch_foreign,
    .poll = epoll_poll,
};

#endif /* __linux__ */
