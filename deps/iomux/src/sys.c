/*
 * sys.c -- every socket syscall the core makes, in one place. Each wrapper
 * counts itself in the loop's stats, retries EINTR where retrying is right,
 * and returns -errno on failure.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#ifdef __linux__
#include <sys/syscall.h>
/* The hot calls go through syscall(2): glibc's read()/sendto() wrappers
 * are pthread cancellation points and bracket every call with
 * enable/disable_asynccancel, about 5% of the loop's user time in a
 * request/response profile. The core is never cancelled. */
#define RAW_READ(fd, buf, len) syscall(SYS_read, (fd), (buf), (len))
#define RAW_SEND(fd, buf, len, fl) syscall(SYS_sendto, (fd), (buf), (len), (fl), NULL, 0)
#define RAW_SENDMSG(fd, msg, fl) syscall(SYS_sendmsg, (fd), (msg), (fl))
#else
#define RAW_READ(fd, buf, len) read((fd), (buf), (len))
#define RAW_SEND(fd, buf, len, fl) send((fd), (buf), (len), (fl))
#define RAW_SENDMSG(fd, msg, fl) sendmsg((fd), (msg), (fl))
#endif

/* No SIGPIPE, ever: a write to a reset peer must come back as EPIPE. */
#ifdef MSG_NOSIGNAL
#define SEND_FLAGS MSG_NOSIGNAL
#else
#define SEND_FLAGS 0 /* macOS: SO_NOSIGPIPE is set on every socket instead */
#endif

#ifndef SOCK_NONBLOCK /* macOS: no accept4(), no SOCK_NONBLOCK */
static int set_nonblock_cloexec(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -errno;
  if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) return -errno;
  return 0;
}
#endif

static void no_sigpipe(int fd) {
#ifdef SO_NOSIGPIPE
  int one = 1;
  (void)setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#else
  (void)fd;
#endif
}

int sys_socket(iomux_loop *loop, int family) {
  loop->stats.socket++;
#ifdef SOCK_NONBLOCK
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
#else
  int fd = socket(family, SOCK_STREAM, 0);
  if (fd < 0) return -errno;
  int err = set_nonblock_cloexec(fd);
  if (err) {
    close(fd);
    return err;
  }
#endif
  no_sigpipe(fd);
  return fd;
}

int sys_setsockopt_int(iomux_loop *loop, int fd, int level, int name, int v) {
  loop->stats.setsockopt++;
  return setsockopt(fd, level, name, &v, sizeof v) < 0 ? -errno : 0;
}

int sys_bind(iomux_loop *loop, int fd, const struct sockaddr *a, socklen_t l) {
  loop->stats.bind++;
  return bind(fd, a, l) < 0 ? -errno : 0;
}

int sys_listen(iomux_loop *loop, int fd, int backlog) {
  loop->stats.listen++;
  return listen(fd, backlog) < 0 ? -errno : 0;
}

/* EINTR from connect() means the attempt goes on asynchronously, as with
 * EINPROGRESS; calling connect() again would fail with EALREADY. */
int sys_connect(iomux_loop *loop, int fd, const struct sockaddr *a,
                socklen_t l) {
  loop->stats.connect++;
  if (connect(fd, a, l) == 0) return 0;
  return errno == EINTR ? -EINPROGRESS : -errno;
}

int sys_accept(iomux_loop *loop, int fd, struct sockaddr_storage *ss,
               socklen_t *len) {
  socklen_t cap = *len;
  for (;;) {
    loop->stats.accept++;
    *len = cap;
#ifdef SOCK_NONBLOCK
    int c = accept4(fd, (struct sockaddr *)ss, len,
                    SOCK_NONBLOCK | SOCK_CLOEXEC);
#else
    int c = accept(fd, (struct sockaddr *)ss, len);
#endif
    if (c >= 0) {
#ifndef SOCK_NONBLOCK
      int err = set_nonblock_cloexec(c);
      if (err) {
        close(c);
        return err;
      }
#endif
      no_sigpipe(c);
      return c;
    }
    if (errno != EINTR) return -errno;
  }
}

ssize_t sys_read(iomux_loop *loop, int fd, void *buf, size_t len) {
  for (;;) {
    loop->stats.read++;
    ssize_t n = RAW_READ(fd, buf, len);
    if (n >= 0) return n;
    if (errno != EINTR) return -errno;
  }
}

ssize_t sys_write(iomux_loop *loop, int fd, const void *buf, size_t len) {
  for (;;) {
    loop->stats.write++;
    ssize_t n = RAW_SEND(fd, buf, len, SEND_FLAGS);
    if (n >= 0) return n;
    if (errno != EINTR) return -errno;
  }
}

void sys_io_batch(iomux_loop *loop, io_op *ops, uint32_t n) {
  uint32_t made = 0;
  if (n >= 2) made = iomux__batch_run(loop, ops, n);
  assert(made <= n);
  for (uint32_t i = 0; i < n; i++) {
    /* What the batch left, and what a signal interrupted there (a send
     * that said EINTR would otherwise wait for a writable edge that may
     * never come): one syscall each, which retries EINTR itself. */
    if (i < made && ops[i].res != -EINTR) continue;
    ops[i].res = ops[i].send ? sys_write(loop, ops[i].fd, ops[i].buf, ops[i].len)
                             : sys_read(loop, ops[i].fd, ops[i].buf, ops[i].len);
  }
}

ssize_t sys_writev(iomux_loop *loop, int fd, const struct iovec *iov, int n) {
  if (n == 1) return sys_write(loop, fd, iov[0].iov_base, iov[0].iov_len);
  struct msghdr msg = {0};
  msg.msg_iov = (struct iovec *)iov;
  msg.msg_iovlen = (size_t)n;
  for (;;) {
    loop->stats.writev++;
    ssize_t w = RAW_SENDMSG(fd, &msg, SEND_FLAGS);
    if (w >= 0) return w;
    if (errno != EINTR) return -errno;
  }
}

int sys_shutdown_wr(iomux_loop *loop, int fd) {
  loop->stats.shutdown++;
  return shutdown(fd, SHUT_WR) < 0 ? -errno : 0;
}

/* Never retried: on Linux the fd is released even when close() reports
 * EINTR, and a retry could close an fd another thread just opened. */
int sys_close(iomux_loop *loop, int fd) {
  loop->stats.close++;
  return close(fd) < 0 && errno != EINTR ? -errno : 0;
}

/* The outcome of a non-blocking connect. */
int sys_socket_error(iomux_loop *loop, int fd) {
  int err = 0;
  socklen_t len = sizeof err;
  loop->stats.getsockopt++;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return errno;
  return err;
}

int sys_getsockopt_int(iomux_loop *loop, int fd, int level, int name, int *v) {
  socklen_t len = sizeof *v;
  loop->stats.getsockopt++;
  return getsockopt(fd, level, name, v, &len) < 0 ? -errno : 0;
}

int sys_adopt_flags(iomux_loop *loop, int fd) {
  loop->stats.fcntl++;
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return -errno;
  if (!(fl & O_NONBLOCK)) {
    loop->stats.fcntl++;
    if (fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -errno;
  }
  loop->stats.fcntl++;
  if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) return -errno;
  no_sigpipe(fd);
  return 0;
}

int sys_getpeername(iomux_loop *loop, int fd, struct sockaddr_storage *ss,
                    socklen_t *len) {
  loop->stats.getpeername++;
  return getpeername(fd, (struct sockaddr *)ss, len) < 0 ? -errno : 0;
}

int sys_getsockname(iomux_loop *loop, int fd, struct sockaddr_storage *ss,
                    socklen_t *len) {
  loop->stats.getsockname++;
  return getsockname(fd, (struct sockaddr *)ss, len) < 0 ? -errno : 0;
}

int sys_unlink(iomux_loop *loop, const char *path) {
  loop->stats.unlink++;
  return unlink(path) < 0 ? -errno : 0;
}

/* SO_LINGER {1, 0} makes close() abort the connection: the peer gets a RST,
 * and whatever is still in the send buffer is dropped. A failed setsockopt
 * (the socket already dead) still closes. */
int sys_close_reset(iomux_loop *loop, int fd) {
  struct linger lg = {1, 0};
  loop->stats.setsockopt++;
  (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  return sys_close(loop, fd);
}

#ifdef __linux__
/* Non-blocking at both ends: the forwarder never sleeps on its own pipe. */
int sys_pipe(iomux_loop *loop, int fds[2]) {
  loop->stats.pipe++;
  return pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0 ? -errno : 0;
}

/* The kernel rounds up to a power-of-two number of pages and refuses sizes
 * above /proc/sys/fs/pipe-max-size (EPERM) for unprivileged processes; the
 * caller keeps the default then. Returns the size granted. */
int sys_set_pipe_size(iomux_loop *loop, int fd, int size) {
  loop->stats.fcntl++;
  int rc = fcntl(fd, F_SETPIPE_SZ, size);
  return rc < 0 ? -errno : rc;
}

/* One end is a pipe, the other a socket. SPLICE_F_NONBLOCK makes the pipe
 * side non-blocking; the socket's own O_NONBLOCK covers the other. */
ssize_t sys_splice(iomux_loop *loop, int in, int out, size_t len) {
  for (;;) {
    loop->stats.splice++;
    ssize_t n = splice(in, NULL, out, NULL, len,
                       SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
    if (n >= 0) return n;
    if (errno != EINTR) return -errno;
  }
}
#endif
