/*
 * kqueue_emu.h -- a user-space kqueue for Linux, over epoll, so that the
 * core's kqueue backend (src/backend_kqueue.c) can be built and run by the
 * test suites on a machine that has no kqueue. It is a test tool: it is never
 * part of the package's normal build.
 *
 * It implements the subset of kqueue(2)/kevent(2) that the backend uses, with
 * the BSD semantics (FreeBSD's where the BSDs and macOS differ) and the BSD
 * values for the constants:
 *
 *   - filters EVFILT_READ and EVFILT_WRITE on sockets, pipes and epoll fds;
 *   - flags EV_ADD (re-adding modifies), EV_DELETE, EV_CLEAR (edge) or none
 *     (level), EV_RECEIPT; in results EV_EOF and EV_ERROR;
 *   - the changelist is applied, in order, before the wait. A change that
 *     fails (or carries EV_RECEIPT) yields an EV_ERROR entry in the eventlist
 *     (data = errno, 0 for a receipt; ident, filter and udata as given), and a
 *     call that produced any such entry returns them alone, without waiting
 *     and without reporting readiness. A failing change with no room left in
 *     the eventlist makes the call fail with that errno, and the changes after
 *     it are not applied;
 *   - EVFILT_READ: data = bytes readable (FIONREAD; 0 where the fd has no such
 *     count, e.g. a listening socket); EV_EOF once the peer shut its side,
 *     possibly with data still pending;
 *   - EVFILT_WRITE: data = free space in the send buffer (sockets; 0
 *     otherwise); EV_EOF once the connection is down in both directions;
 *   - with EV_EOF, fflags != 0 means a socket error is pending (see below);
 *   - a closed fd's registrations disappear, as close(2) removes knotes;
 *     EV_ADD or EV_DELETE on a closed fd fails with EBADF, EV_DELETE of a
 *     filter that is not registered with ENOENT;
 *   - the timeout: NULL waits without limit, {0, 0} polls; never early.
 *
 * Known differences from a real kqueue, all on the side of reporting too much:
 *   - epoll reports every ready direction at each edge of an fd, so a read
 *     edge on a writable socket also reports EVFILT_WRITE (a spurious event,
 *     which the backend's contract allows); it never drops an edge. Likewise,
 *     when the eventlist was too small, what is left re-arms its fd (so that
 *     the kqueue fd stays readable, as a real one does), which may report
 *     that fd's other filter once more;
 *   - Linux cannot read a socket's pending error without clearing it
 *     (SO_ERROR and a failing recv() both consume it), and the layer above
 *     must still see it, so fflags carries KQEMU_PENDING_ERROR rather than
 *     the error itself: the socket call that follows reports the real one;
 *   - one fd cannot mix a level-triggered and an EV_CLEAR filter (EINVAL);
 *     EV_ONESHOT, EV_DISPATCH, EV_ENABLE, EV_DISABLE and other filters are
 *     not emulated (EINVAL);
 *   - a kqueue is one thread's at a time (the core's loops are).
 *
 * The kqueue fd is an epoll fd: it polls readable when events are pending, so
 * an outer loop (libuv) can watch it exactly as it watches a real kqueue.
 */
#ifndef IOMUX_KQUEUE_EMU_H
#define IOMUX_KQUEUE_EMU_H

#include <stdint.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/* FreeBSD 12's layout without the ext[] words (macOS has no ext either). */
struct kevent {
  uintptr_t ident; /* the fd */
  int16_t filter;
  uint16_t flags;
  uint32_t fflags;
  int64_t data;
  void *udata;
};

#define EVFILT_READ (-1)
#define EVFILT_WRITE (-2)

/* Actions and flags, as in FreeBSD's and macOS's <sys/event.h>. */
#define EV_ADD 0x0001
#define EV_DELETE 0x0002
#define EV_ENABLE 0x0004  /* not emulated */
#define EV_DISABLE 0x0008 /* not emulated */
#define EV_ONESHOT 0x0010 /* not emulated */
#define EV_CLEAR 0x0020
#define EV_RECEIPT 0x0040
#define EV_DISPATCH 0x0080 /* not emulated */
/* Returned values. */
#define EV_ERROR 0x4000
#define EV_EOF 0x8000

/* The stand-in for a pending socket error in fflags (see above). */
#define KQEMU_PENDING_ERROR 5 /* EIO */

static inline void kqemu_ev_set(struct kevent *kev, uintptr_t ident,
                                int16_t filter, uint16_t flags,
                                uint32_t fflags, int64_t data, void *udata) {
  kev->ident = ident;
  kev->filter = filter;
  kev->flags = flags;
  kev->fflags = fflags;
  kev->data = data;
  kev->udata = udata;
}
#define EV_SET(kevp, a, b, c, d, e, f)                                       \
  kqemu_ev_set((kevp), (uintptr_t)(a), (int16_t)(b), (uint16_t)(c),          \
               (uint32_t)(d), (int64_t)(e), (void *)(f))

int kqueue(void);
int kevent(int kq, const struct kevent *changelist, int nchanges,
           struct kevent *eventlist, int nevents,
           const struct timespec *timeout);

/* Test introspection: which filters of fd are registered in kq, as a bit set
 * (1 = EVFILT_READ, 2 = EVFILT_WRITE); -1 with errno when kq is unknown.
 * Registrations of a file that has since been closed do not count. */
int kqueue_emu_filters(int kq, int fd);

#ifdef __cplusplus
}
#endif

#endif /* IOMUX_KQUEUE_EMU_H */
