/*
 * test_kqueue_emu.c -- the kqueue emulation (kqueue_emu.c) against the kqueue
 * semantics the backend relies on, and two properties of the kqueue backend
 * that only the emulation can observe (what is registered for an fd number).
 * TAP output; the exit status is non-zero when a test failed.
 */
#define _GNU_SOURCE
#include "kqueue_emu.h"
#include "iomux.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int g_tests, g_failed, t_failed;

static void diag(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("# ", stdout);
  vprintf(fmt, ap);
  fputc('\n', stdout);
  va_end(ap);
}

#define CHECK(c)                                                              \
  do {                                                                        \
    if (!(c)) {                                                               \
      diag("%s:%d: check failed: %s", __FILE__, __LINE__, #c);                \
      t_failed = 1;                                                           \
      goto done;                                                              \
    }                                                                         \
  } while (0)
#define CHECK_EQ(a, b)                                                        \
  do {                                                                        \
    long long a_ = (long long)(a), b_ = (long long)(b);                       \
    if (a_ != b_) {                                                           \
      diag("%s:%d: check failed: %s == %s (%lld vs %lld)", __FILE__,          \
           __LINE__, #a, #b, a_, b_);                                         \
      t_failed = 1;                                                           \
      goto done;                                                              \
    }                                                                         \
  } while (0)

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- helpers ----------------------------------------------------------------- */

#define UD(x) ((void *)(uintptr_t)(x))

static int wait_ms(int kq, struct kevent *ev, int n, int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  return kevent(kq, NULL, 0, ev, n, &ts);
}

/* One change, applied with no eventlist: -1 and errno when it fails. */
static int change(int kq, int fd, int16_t filter, uint16_t flags, void *ud) {
  struct kevent ch;
  EV_SET(&ch, fd, filter, flags, 0, 0, ud);
  struct timespec zero = {0, 0};
  return kevent(kq, &ch, 1, NULL, 0, &zero);
}

static int pair(int sv[2]) {
  return socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv);
}

/* A connected TCP pair over loopback. */
static int tcp_pair(int sv[2]) {
  int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int rc = -1;
  sv[0] = sv[1] = -1;
  if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 1) < 0 ||
      getsockname(l, (struct sockaddr *)&a, &len) < 0)
    goto out;
  sv[1] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (sv[1] < 0 || connect(sv[1], (struct sockaddr *)&a, sizeof a) < 0) goto out;
  sv[0] = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (sv[0] < 0) goto out;
  rc = 0;
out:
  if (l >= 0) close(l);
  return rc;
}

static void close_pair(int sv[2]) {
  for (int i = 0; i < 2; i++)
    if (sv[i] >= 0) close(sv[i]);
  sv[0] = sv[1] = -1;
}

/* ---- the tests ---------------------------------------------------------------- */

/* EV_CLEAR: one event per change of state, even with the bytes unread. */
static void test_clear_edges(void) {
  int sv[2] = {-1, -1}, kq = kqueue();
  struct kevent ev[4];
  CHECK(kq >= 0);
  CHECK_EQ(pair(sv), 0);
  CHECK_EQ(change(kq, sv[0], EVFILT_READ, EV_ADD | EV_CLEAR, UD(0x1234)), 0);
  CHECK_EQ(kqueue_emu_filters(kq, sv[0]), 1);
  CHECK_EQ(wait_ms(kq, ev, 4, 0), 0);
  CHECK_EQ(write(sv[1], "hello", 5), 5);
  CHECK_EQ(wait_ms(kq, ev, 4, 1000), 1);
  CHECK_EQ(ev[0].ident, sv[0]);
  CHECK_EQ(ev[0].filter, EVFILT_READ);
  CHECK_EQ(ev[0].data, 5);
  CHECK(ev[0].udata == UD(0x1234));
  CHECK(ev[0].flags & EV_CLEAR);
  CHECK(!(ev[0].flags & (EV_EOF | EV_ERROR)));
  CHECK_EQ(wait_ms(kq, ev, 4, 20), 0); /* nothing new: no event */
  CHECK_EQ(write(sv[1], "!!", 2), 2);
  CHECK_EQ(wait_ms(kq, ev, 4, 1000), 1);
  CHECK_EQ(ev[0].data, 7);
  /* Re-adding modifies (the udata here), it never duplicates. */
  CHECK_EQ(change(kq, sv[0], EVFILT_READ, EV_ADD | EV_CLEAR, UD(0x99)), 0);
  CHECK_EQ(write(sv[1], "?", 1), 1);
  int n = wait_ms(kq, ev, 4, 1000);
  CHECK_EQ(n, 1);
  CHECK(ev[0].udata == UD(0x99));
done:
  close_pair(sv);
  if (kq >= 0) close(kq);
}

/* Without EV_CLEAR: reported as long as it holds. */
static void test_level(void) {
  int sv[2] = {-1, -1}, kq = kqueue();
  struct kevent ev[4];
  char buf[8];
  CHECK(kq >= 0);
  CHECK_EQ(pair(sv), 0);
  CHECK_EQ(change(kq, sv[0], EVFILT_READ, EV_ADD, UD(1)), 0);
  CHECK_EQ(write(sv[1], "x", 1), 1);
  CHECK_EQ(wait_ms(kq, ev, 4, 1000), 1);
  CHECK(!(ev[0].flags & EV_CLEAR));
  CHECK_EQ(wait_ms(kq, ev, 4, 0), 1);
  CHECK_EQ(read(sv[0], buf, sizeof buf), 1);
  CHECK_EQ(wait_ms(kq, ev, 4, 0), 0);
  /* One fd cannot mix level and edge filters here (not emulated). */
  CHECK_EQ(change(kq, sv[0], EVFILT_WRITE, EV_ADD | EV_CLEAR, UD(1)), -1);
  CHECK_EQ(errno, EINVAL);
done:
  close_pair(sv);
  if (kq >= 0) close(kq);
}

/* The changelist is applied before the wait: one call registers and
 * reports; a full eventlist keeps the rest for the next call. */
static void test_changes_then_wait(void) {
  int sv[3][2] = {{-1, -1}, {-1, -1}, {-1, -1}}, kq = kqueue();
  struct kevent ch[6], ev[8];
  CHECK(kq >= 0);
  for (int i = 0; i < 3; i++) {
    CHECK_EQ(pair(sv[i]), 0);
    CHECK_EQ(write(sv[i][1], "abc", 3), 3);
    EV_SET(&ch[2 * i], sv[i][0], EVFILT_READ, EV_ADD | EV_CLEAR, 0, 0, UD(i));
    EV_SET(&ch[2 * i + 1], sv[i][0], EVFILT_WRITE, EV_ADD | EV_CLEAR, 0, 0, UD(i));
  }
  struct timespec ts = {1, 0};
  /* Six filters ready, room for four: the rest come next, none lost (one
   * may come twice: see kqueue_emu.h), and while some are left the kqueue
   * fd polls readable (for an outer loop). */
  int n = kevent(kq, ch, 6, ev, 4, &ts);
  CHECK(n >= 1 && n <= 4);
  int seen[3][2] = {{0}}, total = 0;
  struct pollfd p = {.fd = kq, .events = POLLIN};
  for (int call = 0; call < 6; call++) {
    for (int i = 0; i < n; i++)
      seen[(uintptr_t)ev[i].udata][ev[i].filter == EVFILT_WRITE]++;
    total += n;
    int all = 1;
    for (int i = 0; i < 3; i++) all &= seen[i][0] && seen[i][1];
    if (all) break;
    CHECK_EQ(poll(&p, 1, 0), 1);
    n = wait_ms(kq, ev, 4, 0);
    CHECK(n >= 1 && n <= 4);
  }
  CHECK(total >= 6 && total <= 9);
  while (wait_ms(kq, ev, 8, 0) > 0 && total++ < 12) {} /* stray repeats */
  CHECK_EQ(wait_ms(kq, ev, 8, 0), 0);
  CHECK_EQ(poll(&p, 1, 0), 0);
  for (int i = 0; i < 3; i++) {
    CHECK(seen[i][0] >= 1 && seen[i][0] <= 2);
    CHECK(seen[i][1] >= 1 && seen[i][1] <= 2);
  }
  for (int i = 0; i < 3; i++) CHECK_EQ(kqueue_emu_filters(kq, sv[i][0]), 3);
  /* A filter deleted while active is not reported any more. */
  CHECK_EQ(write(sv[0][1], "d", 1), 1);
  CHECK_EQ(wait_ms(kq, ev, 1, 1000), 1); /* READ; WRITE stays active */
  CHECK_EQ(ev[0].filter, EVFILT_READ);
  CHECK_EQ(change(kq, sv[0][0], EVFILT_WRITE, EV_DELETE, NULL), 0);
  n = wait_ms(kq, ev, 8, 0); /* at most READ again (the re-arm) */
  for (int i = 0; i < n; i++) CHECK_EQ(ev[i].filter, EVFILT_READ);
  CHECK_EQ(kqueue_emu_filters(kq, sv[0][0]), 1);
done:
  for (int i = 0; i < 3; i++) close_pair(sv[i]);
  if (kq >= 0) close(kq);
}

/* EV_EOF on the read filter with bytes still pending, and on the write
 * filter once the connection is down. */
static void test_eof(void) {
  int sv[2] = {-1, -1}, kq = kqueue();
  struct kevent ev[4];
  char buf[8];
  CHECK(kq >= 0);
  CHECK_EQ(pair(sv), 0);
  CHECK_EQ(change(kq, sv[0], EVFILT_READ, EV_ADD | EV_CLEAR, UD(1)), 0);
  CHECK_EQ(write(sv[1], "abc", 3), 3);
  CHECK_EQ(shutdown(sv[1], SHUT_WR), 0);
  CHECK_EQ(wait_ms(kq, ev, 4, 1000), 1);
  CHECK(ev[0].flags & EV_EOF);
  CHECK_EQ(ev[0].data, 3); /* EOF, and still three bytes to read */
  CHECK_EQ(ev[0].fflags, 0);
  CHECK_EQ(read(sv[0], buf, sizeof buf), 3);
  CHECK_EQ(read(sv[0], buf, sizeof buf), 0);

  /* The write filter: writable at once (free space in data), EV_EOF when the
   * peer is gone; EV_CLEAR, so once, not at every call. */
  CHECK_EQ(change(kq, sv[0], EVFILT_READ, EV_DELETE, NULL), 0);
  CHECK_EQ(change(kq, sv[0], EVFILT_WRITE, EV_ADD | EV_CLEAR, UD(2)), 0);
  CHECK_EQ(wait_ms(kq, ev, 4, 1000), 1);
  CHECK_EQ(ev[0].filter, EVFILT_WRITE);
  CHECK(ev[0].data > 0);
  CHECK(!(ev[0].flags & EV_EOF));
  close(sv[1]);
  sv[1] = -1;
  CHECK_EQ(wait_ms(kq, ev, 4, 1000), 1);
  CHECK_EQ(ev[0].filter, EVFILT_WRITE);
  CHECK(ev[0].flags & EV_EOF);
  CHECK_EQ(wait_ms(kq, ev, 4, 20), 0);
done:
  close_pair(sv);
  if (kq >= 0) close(kq);
}

/* A reset: EV_EOF with fflags on both filters, and the error itself left
 * for the socket call that follows. */
static void test_reset(void) {
  int sv[2] = {-1, -1}, kq = kqueue();
  struct kevent ch[2], ev[4];
  char buf[8];
  CHECK(kq >= 0);
  CHECK_EQ(tcp_pair(sv), 0);
  EV_SET(&ch[0], sv[0], EVFILT_READ, EV_ADD | EV_CLEAR, 0, 0, UD(1));
  EV_SET(&ch[1], sv[0], EVFILT_WRITE, EV_ADD | EV_CLEAR, 0, 0, UD(1));
  CHECK_EQ(kevent(kq, ch, 2, ev, 4, NULL), 1); /* writable */
  CHECK_EQ(ev[0].filter, EVFILT_WRITE);
  struct linger lg = {1, 0};
  CHECK_EQ(setsockopt(sv[1], SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  close(sv[1]);
  sv[1] = -1;
  int n = 0, eof = 0, err = 0;
  int64_t end = now_ms() + 1000;
  while (n < 2 && now_ms() < end) {
    int m = wait_ms(kq, ev + n, 4 - n, 100);
    CHECK(m >= 0);
    n += m;
  }
  CHECK_EQ(n, 2);
  for (int i = 0; i < n; i++) {
    eof += !!(ev[i].flags & EV_EOF);
    err += ev[i].fflags != 0;
  }
  CHECK_EQ(eof, 2);
  CHECK_EQ(err, 2);
  CHECK_EQ(read(sv[0], buf, sizeof buf), -1);
  CHECK_EQ(errno, ECONNRESET);
done:
  close_pair(sv);
  if (kq >= 0) close(kq);
}

/* A change that fails: an EV_ERROR entry that keeps ident, filter and udata;
 * the call returns the errors alone, without readiness and without waiting. */
static void test_change_errors(void) {
  int sv[2] = {-1, -1}, dead[2] = {-1, -1}, kq = kqueue();
  struct kevent ch[4], ev[4];
  CHECK(kq >= 0);
  CHECK_EQ(pair(sv), 0);
  CHECK_EQ(pair(dead), 0);
  int closed = dead[0];
  close_pair(dead);
  CHECK_EQ(write(sv[1], "x", 1), 1);
  EV_SET(&ch[0], sv[0], EVFILT_READ, EV_ADD | EV_CLEAR, 0, 0, UD(7));
  EV_SET(&ch[1], closed, EVFILT_READ, EV_ADD | EV_CLEAR, 0, 0, UD(8));
  EV_SET(&ch[2], sv[1], EVFILT_READ, EV_DELETE, 0, 0, UD(9));
  EV_SET(&ch[3], sv[1], 42, EV_ADD, 0, 0, UD(10));
  int64_t t0 = now_ms();
  int n = kevent(kq, ch, 4, ev, 4, NULL); /* NULL: would wait forever */
  CHECK(now_ms() - t0 < 500);
  CHECK_EQ(n, 3);
  CHECK(ev[0].flags & EV_ERROR);
  CHECK_EQ(ev[0].ident, closed);
  CHECK_EQ(ev[0].filter, EVFILT_READ);
  CHECK_EQ(ev[0].data, EBADF);
  CHECK(ev[0].udata == UD(8));
  CHECK_EQ(ev[1].data, ENOENT); /* delete of a filter never added */
  CHECK(ev[1].udata == UD(9));
  CHECK_EQ(ev[2].data, EINVAL); /* no such filter */
  /* The good change was applied all the same: its readiness comes next. */
  CHECK_EQ(kqueue_emu_filters(kq, sv[0]), 1);
  CHECK_EQ(wait_ms(kq, ev, 4, 1000), 1);
  CHECK(ev[0].udata == UD(7));
  CHECK(!(ev[0].flags & EV_ERROR));

  /* No room for an error: the call fails with it, and the changes after it
   * are not applied. */
  EV_SET(&ch[0], closed, EVFILT_READ, EV_ADD, 0, 0, NULL);
  EV_SET(&ch[1], sv[1], EVFILT_READ, EV_ADD, 0, 0, NULL);
  errno = 0;
  CHECK_EQ(kevent(kq, ch, 2, NULL, 0, NULL), -1);
  CHECK_EQ(errno, EBADF);
  CHECK_EQ(kqueue_emu_filters(kq, sv[1]), 0);
  errno = 0;
  CHECK_EQ(kevent(closed, NULL, 0, ev, 4, NULL), -1); /* not a kqueue */
  CHECK_EQ(errno, EBADF);
done:
  close_pair(sv);
  if (kq >= 0) close(kq);
}

/* EV_RECEIPT: an entry for every change (data 0 when it worked), and again
 * no readiness in that call. */
static void test_receipt(void) {
  int sv[2] = {-1, -1}, kq = kqueue();
  struct kevent ch[2], ev[4];
  CHECK(kq >= 0);
  CHECK_EQ(pair(sv), 0);
  CHECK_EQ(write(sv[1], "x", 1), 1);
  EV_SET(&ch[0], sv[0], EVFILT_READ, EV_ADD | EV_CLEAR | EV_RECEIPT, 0, 0, UD(1));
  EV_SET(&ch[1], sv[0], EVFILT_WRITE, EV_ADD | EV_CLEAR | EV_RECEIPT, 0, 0, UD(2));
  CHECK_EQ(kevent(kq, ch, 2, ev, 4, NULL), 2);
  CHECK((ev[0].flags & EV_ERROR) && ev[0].data == 0 && ev[0].udata == UD(1));
  CHECK((ev[1].flags & EV_ERROR) && ev[1].data == 0 && ev[1].udata == UD(2));
  CHECK_EQ(wait_ms(kq, ev, 4, 1000), 2); /* now the readiness */
done:
  close_pair(sv);
  if (kq >= 0) close(kq);
}

/* The timeout: {0, 0} polls, a positive one is never cut short, NULL waits
 * for the first event. And the kqueue fd polls readable with events pending
 * (what an outer loop watching it needs). */
static void test_timeout_and_fd(void) {
  int sv[2] = {-1, -1}, kq = kqueue();
  struct kevent ev[4];
  CHECK(kq >= 0);
  CHECK_EQ(pair(sv), 0);
  CHECK_EQ(change(kq, sv[0], EVFILT_READ, EV_ADD | EV_CLEAR, NULL), 0);
  int64_t t0 = now_ms();
  CHECK_EQ(wait_ms(kq, ev, 4, 0), 0);
  CHECK(now_ms() - t0 < 20);
  struct timespec ts = {0, 30 * 1000000L};
  struct timespec t1, t2;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  CHECK_EQ(kevent(kq, NULL, 0, ev, 4, &ts), 0);
  clock_gettime(CLOCK_MONOTONIC, &t2);
  int64_t el = (t2.tv_sec - t1.tv_sec) * 1000000000LL + (t2.tv_nsec - t1.tv_nsec);
  CHECK(el >= 30 * 1000000LL);
  struct pollfd p = {.fd = kq, .events = POLLIN};
  CHECK_EQ(poll(&p, 1, 0), 0);
  CHECK_EQ(write(sv[1], "x", 1), 1);
  CHECK_EQ(poll(&p, 1, 1000), 1);
  CHECK_EQ(kevent(kq, NULL, 0, ev, 4, NULL), 1);
  ts.tv_nsec = 1000000000L;
  errno = 0;
  CHECK_EQ(kevent(kq, NULL, 0, ev, 4, &ts), -1);
  CHECK_EQ(errno, EINVAL);
done:
  close_pair(sv);
  if (kq >= 0) close(kq);
}

/* close() drops the fd's registrations: the number, reused by another
 * socket, has none, and deleting there finds nothing. */
static void test_close_forgets(void) {
  int sv[2] = {-1, -1}, nv[2] = {-1, -1}, kq = kqueue();
  struct kevent ev[4];
  CHECK(kq >= 0);
  CHECK_EQ(pair(sv), 0);
  int num = sv[0];
  CHECK_EQ(change(kq, num, EVFILT_READ, EV_ADD | EV_CLEAR, UD(1)), 0);
  CHECK_EQ(change(kq, num, EVFILT_WRITE, EV_ADD | EV_CLEAR, UD(1)), 0);
  CHECK_EQ(wait_ms(kq, ev, 4, 1000), 1); /* writable */
  CHECK_EQ(write(sv[1], "x", 1), 1);     /* and now readable, not yet seen */
  close(sv[0]);
  sv[0] = -1;
  CHECK_EQ(pair(nv), 0);
  if (nv[0] != num) CHECK_EQ(dup2(nv[0], num), num);
  CHECK_EQ(kqueue_emu_filters(kq, num), 0);
  CHECK_EQ(wait_ms(kq, ev, 4, 20), 0);
  CHECK_EQ(change(kq, num, EVFILT_READ, EV_DELETE, NULL), -1);
  CHECK_EQ(errno, ENOENT);
  if (nv[0] != num) close(num);
done:
  close_pair(sv);
  close_pair(nv);
  if (kq >= 0) close(kq);
}

/* ---- the backend, through the core ------------------------------------------------ */

static size_t ignore_flush(void *data, const int32_t *records, size_t count) {
  (void)data;
  (void)records;
  (void)count;
  return 0;
}

/* A socket closed before its registration reached the kernel: the queued
 * changes are purged, so the fd number, reused at once, gets nothing. */
static void test_backend_purges(void) {
  static int32_t rec[64 * IOMUX_RECORD_WORDS];
  static uint8_t slab[64 * 1024];
  iomux_config cfg = {.backend = "kqueue"};
  int err = 0, other = -1;
  iomux_loop *loop = iomux_loop_new(&cfg, &err);
  CHECK(loop != NULL);
  iomux_loop_set_records(loop, rec, sizeof rec / sizeof *rec);
  iomux_loop_set_slab(loop, slab, sizeof slab, 0);
  iomux_loop_set_flush(loop, ignore_flush, NULL);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int l = iomux_listen(loop, (struct sockaddr *)&a, sizeof a, 8, 0);
  CHECK(l >= 0);
  /* Queued, not submitted: the embedder is told to iterate at once. */
  CHECK_EQ(iomux_loop_next_timeout(loop), 0);
  CHECK(iomux_loop_run_once(loop, 0) >= 0);
  CHECK_EQ(iomux_loop_next_timeout(loop), -1);
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  CHECK_EQ(iomux_local_address(loop, l, &ss, &len), 0);
  int kq = iomux_loop_fd(loop);

  /* The connect's socket() takes the lowest free fd number: this one. */
  int num = dup(kq);
  CHECK(num >= 0);
  close(num);
  int c = iomux_connect(loop, (struct sockaddr *)&ss, len);
  CHECK(c >= 0);
  CHECK(fcntl(num, F_GETFD) >= 0);
  CHECK_EQ(iomux_loop_next_timeout(loop), 0);
  CHECK_EQ(iomux_close(loop, c), 0);
  CHECK(fcntl(num, F_GETFD) < 0); /* it was that one */
  CHECK_EQ(iomux_loop_next_timeout(loop), -1); /* purged: nothing queued */
  other = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  CHECK(other >= 0);
  if (other != num) CHECK_EQ(dup2(other, num), num);
  CHECK(iomux_loop_run_once(loop, 0) >= 0);
  CHECK_EQ(kqueue_emu_filters(kq, num), 0);
  CHECK_EQ(kqueue_emu_filters(kq, -1), 0);
  const iomux_stats *st = iomux_loop_stats(loop);
  CHECK_EQ(st->ctl, 0);
  CHECK_EQ(st->wait, st->iterations);
  if (other != num) close(num);
done:
  if (other >= 0) close(other);
  iomux_loop_free(loop);
}

/* With fewer eventlist entries than queued changes (max_events 1), the
 * excess is submitted first (EV_RECEIPT, counted in submit), and the rest
 * rides with the wait: all of it within one iteration. */
static void test_backend_small_eventlist(void) {
  static int32_t rec[64 * IOMUX_RECORD_WORDS];
  static uint8_t slab[64 * 1024];
  iomux_config cfg = {.backend = "kqueue", .max_events = 1};
  int err = 0;
  iomux_loop *loop = iomux_loop_new(&cfg, &err);
  CHECK(loop != NULL);
  iomux_loop_set_records(loop, rec, sizeof rec / sizeof *rec);
  iomux_loop_set_slab(loop, slab, sizeof slab, 0);
  iomux_loop_set_flush(loop, ignore_flush, NULL);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int l = iomux_listen(loop, (struct sockaddr *)&a, sizeof a, 8, 0);
  CHECK(l >= 0);
  int kq = iomux_loop_fd(loop);
  CHECK(iomux_loop_run_once(loop, 0) >= 0);
  CHECK_EQ(iomux_loop_next_timeout(loop), -1);
  int lfd = -1;
  for (int fd = 3; fd < 1024 && lfd < 0; fd++)
    if (fd != kq && kqueue_emu_filters(kq, fd) > 0) lfd = fd;
  CHECK(lfd >= 0);
  CHECK_EQ(kqueue_emu_filters(kq, lfd), 3);
  const iomux_stats *st = iomux_loop_stats(loop);
  CHECK_EQ(st->submit, 1);
  CHECK_EQ(st->wait, 1);
  CHECK_EQ(st->ctl, 0);
  CHECK_EQ(st->changes, 1);
  /* A connection to it: the accepted socket's registration too. */
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  CHECK_EQ(iomux_local_address(loop, l, &ss, &len), 0);
  int c = iomux_connect(loop, (struct sockaddr *)&ss, len);
  CHECK(c >= 0);
  for (int i = 0; i < 20 && iomux_loop_stats(loop)->accept == 0; i++)
    CHECK(iomux_loop_run_once(loop, 50) >= 0);
  CHECK(st->accept > 0);
  CHECK(iomux_loop_run_once(loop, 0) >= 0);
  CHECK_EQ(iomux_loop_next_timeout(loop), -1);
  CHECK_EQ(st->changes, 3);
  CHECK_EQ(st->wait, st->iterations);
  CHECK_EQ(st->ctl, 0);
done:
  iomux_loop_free(loop);
}

/* ---------------------------------------------------------------------------- */

static void run(const char *name, void (*fn)(void)) {
  t_failed = 0;
  fn();
  g_tests++;
  if (t_failed) g_failed++;
  printf("%s %d - %s\n", t_failed ? "not ok" : "ok", g_tests, name);
  fflush(stdout);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  alarm(60);
  run("EV_CLEAR: one event per change, data = bytes readable", test_clear_edges);
  run("level-triggered: reported while it holds", test_level);
  run("changelist applied before the wait; a full eventlist carries over",
      test_changes_then_wait);
  run("EV_EOF on read with bytes pending; EV_EOF on write, once", test_eof);
  run("reset: EV_EOF with fflags on both filters, error left for read()",
      test_reset);
  run("failed changes: EV_ERROR entries alone, no wait; no room: -1",
      test_change_errors);
  run("EV_RECEIPT", test_receipt);
  run("timeouts; the kqueue fd polls readable", test_timeout_and_fd);
  run("close drops registrations; a reused number has none",
      test_close_forgets);
  run("backend: a closed socket's queued changes are purged",
      test_backend_purges);
  run("backend: more changes than the eventlist holds, in one iteration",
      test_backend_small_eventlist);
  printf("1..%d\n", g_tests);
  if (g_failed) printf("# %d of %d tests failed\n", g_failed, g_tests);
  return g_failed ? 1 : 0;
}
