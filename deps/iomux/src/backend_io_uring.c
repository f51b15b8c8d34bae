/*
 * backend_io_uring.c -- Linux io_uring, through the raw system calls (no
 * liburing). Needs Linux 5.13 (multishot poll) and checks at init.
 *
 * Each fd gets one multishot IORING_OP_POLL_ADD for POLLIN|POLLOUT|POLLRDHUP
 * whose user_data is the core's token. Such a poll posts a completion at
 * every wakeup of the socket's wait queue that matches those events (and one
 * when it is armed on a socket that is already ready), carrying the socket's
 * readiness at that moment. That is epoll's EPOLLET contract: readiness is a
 * hint, the socket layer reads and writes until EAGAIN, and any byte or ACK
 * arriving after a short read or a short write wakes the queue again.
 *
 * What this backend buys: registrations (POLL_ADD), removals (POLL_REMOVE) and
 * re-arms are only written into the shared submission ring. They reach the
 * kernel with the io_uring_enter() that waits, so one kernel call per
 * iteration covers every fd change, the wait and the nearest timer (the wait's
 * timeout). epoll needs one epoll_ctl per new fd on top of the wait.
 *
 * The states of a registration, by slot (TOKEN_SLOT of its token):
 *   POLL   a POLL_ADD is queued in the ring (at pos, while add_queued())
 *          or armed in the kernel;
 *   REARM  the kernel ended the poll and its re-arm is parked in `deferred`
 *          because the ring was full and could not be flushed;
 *   IDLE   the poll ended with an error: nothing is armed;
 *   DRAINING  a listener's one-shot poll completed: the socket layer
 *          accepts until EAGAIN, then asks for the next (listener_drained).
 * A close (del) turns a queued, unsubmitted POLL_ADD into a NOP: submitted
 * later, it would resolve the fd number at submission time, which by then may
 * name another socket. An armed poll gets a POLL_REMOVE: the poll holds a
 * reference to the file, so until it is removed close() does not close the
 * socket. A stream's removal rides with the next wait (its FIN leaves then);
 * a listener's is submitted at once, since its close must be visible at once
 * (new connections refused, the port free). Completions carrying a token the
 * table no longer holds (the removed poll's -ECANCELED, events that raced
 * with the close) are dropped here; the core would drop them too, by
 * generation.
 *
 * user_data words that are not tokens have bit 31 of the low half set, which
 * no slot reaches (the core keeps slots below 2^30, see grow_slots):
 *   bit 31 alone           POLL_REMOVE of the token in the other bits
 *   bits 31 and 30 + kind  NOP, the init probe, the foreign fd's poll and its
 *                          removal (the high half: the foreign generation)
 *
 * A unix stream socket's poll leaves POLLOUT out while the socket layer has
 * nothing queued (want_write; see iomux__want_write in sock.c for why): the
 * change is a POLL_REMOVE with IORING_POLL_UPDATE_EVENTS (5.13), which keeps
 * the multishot poll (same user_data) and arms it again with the new events,
 * reporting at once a socket that is ready then. A POLL_ADD still queued in
 * the ring is simply rewritten.
 *
 * Kernel versions: io_uring 5.1, IORING_FEAT_NODROP 5.5 (required: a dropped
 * completion could be the end of a multishot poll, and the socket would go
 * deaf), IORING_FEAT_EXT_ARG 5.11 (required: the wait's timeout rides in the
 * same call), multishot poll 5.13 (required, probed), IORING_SETUP_SUBMIT_ALL
 * 5.18 and IORING_SETUP_COOP_TASKRUN 5.19 (used when there).
 */
#define _GNU_SOURCE
#include "uring.h"

#ifdef IOMUX_HAVE_IO_URING

#include <errno.h>
#include <linux/io_uring.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* 4096 SQEs (256 KiB) take far more changes than an iteration makes (an
 * accept_cap of adds per listener and the closes of one batch); a larger
 * batch flushes early, counted in stats.submit. Multishot polls can post
 * several completions per fd between two harvests, so the completion ring is
 * four times larger; an overflow loses nothing (IORING_FEAT_NODROP) but ends
 * multishot polls, which are then re-armed. */
#define SQ_ENTRIES 4096u
#define CQ_ENTRIES (4 * SQ_ENTRIES)

#define POLL_EVENTS (POLLIN | POLLOUT | POLLRDHUP)
/* The kernel's EPOLLEXCLUSIVE, which IORING_OP_POLL_ADD takes too (not in
 * <poll.h>; <sys/epoll.h> has it, with names that clash with <poll.h>'s). */
#define POLL_EXCLUSIVE (1u << 28)

#define UD_OWN (UINT64_C(1) << 31)
#define UD_MISC (UINT64_C(1) << 30)
#define UD_KIND(ud) ((uint32_t)(ud) & 0xffu)
#define UD_HIGH(ud) ((uint32_t)((ud) >> 32))
#define UD_MAKE(kind, high) (((uint64_t)(high) << 32) | UD_OWN | UD_MISC | (kind))
enum { K_NOP = 1, K_PROBE, K_FOREIGN, K_FOREIGN_REMOVE, K_UPDATE };

enum { ST_FREE = 0, ST_POLL, ST_REARM, ST_IDLE, ST_DRAINING };

typedef struct uslot {
  uint64_t token;
  int32_t fd;
  uint8_t state;
  uint32_t pos;   /* ring position of its latest POLL_ADD */
  uint32_t seen;  /* the harvest that last reported it... */
  uint32_t fired; /* ...and its index in loop->fired there */
  /* A listener: a one-shot POLLIN poll, exclusive while `excl`, armed again
   * at each completion (see uring_add_listener). */
  uint8_t oneshot;
  uint8_t excl;
  uint8_t rearmed; /* its latest POLL_ADD is a re-arm (stats.rearm) */
  uint8_t no_out;  /* a stream polled without POLLOUT (want_write) */
} uslot;

static uint32_t stream_events(const uslot *s) {
  return s->no_out ? POLL_EVENTS & ~(uint32_t)POLLOUT : POLL_EVENTS;
}

typedef struct uring {
  uring_rings r;

  uint8_t skip_flag; /* IOSQE_CQE_SKIP_SUCCESS where the kernel has it */

  uslot *slots;
  uint32_t nslots;
  vec64 deferred;  /* user_data of changes the full ring could not take */
  uint32_t harvest;

  int foreign_fd;
  uint32_t foreign_gen;
  uint8_t foreign_state;
  uint32_t foreign_pos;
} uring;

/* ---- the rings -------------------------------------------------------------- */

static uint32_t sq_head(const uring *u) { return uring_sq_head(&u->r); }

static uint32_t sq_queued(const uring *u) { return uring_sq_queued(&u->r); }

static bool sq_unsubmitted(const uring *u, uint32_t pos) {
  uint32_t head = sq_head(u);
  return (uint32_t)(pos - head) < (uint32_t)(u->r.sq_tail - head);
}

/* Whether the POLL_ADD written at pos for ud still waits in the ring. The
 * user_data check makes an old position that the 32-bit ring counters have
 * since wrapped onto (after 2^32 SQEs) harmless. */
static bool add_queued(const uring *u, uint32_t pos, uint64_t ud) {
  const struct io_uring_sqe *e = &u->r.sqes[pos & u->r.sq_mask];
  return sq_unsubmitted(u, pos) && e->user_data == ud &&
         e->opcode == IORING_OP_POLL_ADD;
}

static void sq_publish(const uring *u) { uring_sq_publish(&u->r); }

/* Submits what is queued without waiting, outside the wait: only when the
 * ring is full in the middle of an iteration, or a listener closes. */
static int submit_now(iomux_loop *loop) {
  uring *u = loop->backend;
  sq_publish(u);
  loop->stats.submit++;
  int rc = uring_enter(&u->r, sq_queued(u), 0, 0, NULL, 0);
  return rc < 0 ? rc : 0;
}

/* The next free SQE, zeroed; flushes the ring when it is full. NULL (and
 * *err) when even that fails. */
static struct io_uring_sqe *sqe_get(iomux_loop *loop, int *err) {
  uring *u = loop->backend;
  if (sq_queued(u) == u->r.sq_entries) {
    int rc = submit_now(loop);
    if (sq_queued(u) == u->r.sq_entries) {
      *err = rc < 0 ? rc : -EBUSY;
      return NULL;
    }
  }
  struct io_uring_sqe *e = &u->r.sqes[u->r.sq_tail & u->r.sq_mask];
  memset(e, 0, sizeof *e);
  u->r.sq_tail++;
  loop->stats.changes++;
  return e;
}

static uint32_t sqe_events(uint32_t events) {
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  events = events << 16 | events >> 16; /* the kernel swaps the halves back */
#endif
  return events;
}

static void prep_poll(struct io_uring_sqe *e, int fd, uint32_t events,
                      bool multishot, uint64_t ud) {
  events = sqe_events(events);
  e->opcode = IORING_OP_POLL_ADD;
  e->fd = fd;
  e->poll32_events = events;
  e->len = multishot ? IORING_POLL_ADD_MULTI : 0;
  e->user_data = ud;
}

/* A removal whose completion only says "done" is not posted (5.17). */
static void prep_remove(const uring *u, struct io_uring_sqe *e,
                        uint64_t target, uint64_t ud) {
  e->opcode = IORING_OP_POLL_REMOVE;
  e->flags = u->skip_flag;
  e->fd = -1;
  e->addr = target;
  e->user_data = ud;
}

/* A queued POLL_ADD that must never reach the kernel. The last entry is
 * simply taken back; one in the middle becomes a NOP. */
static void sq_cancel(iomux_loop *loop, uint32_t pos, bool rearm) {
  uring *u = loop->backend;
  struct io_uring_sqe *e = &u->r.sqes[pos & u->r.sq_mask];
  memset(e, 0, sizeof *e);
  e->opcode = IORING_OP_NOP;
  e->flags = u->skip_flag;
  e->user_data = UD_MAKE(K_NOP, 0);
  if (rearm) /* it never happens */
    loop->stats.rearm--;
  else
    loop->stats.changes--;
  while (u->r.sq_tail != sq_head(u)) {
    e = &u->r.sqes[(u->r.sq_tail - 1) & u->r.sq_mask];
    if (e->opcode != IORING_OP_NOP) break;
    u->r.sq_tail--;
  }
}

/* A change the ring could not take waits in `deferred` for the next poll. If
 * even that allocation fails, the change is lost: a removal then leaves the
 * socket open until the loop is freed, a re-arm leaves it deaf. */
static void defer(uring *u, uint64_t ud) { (void)vec64_push(&u->deferred, ud); }

/* ---- registrations ----------------------------------------------------------- */

static int slots_reserve(uring *u, uint32_t slot) {
  if (slot < u->nslots) return 0;
  uint32_t n = u->nslots ? u->nslots : 64;
  while (n <= slot) n *= 2;
  uslot *p = realloc(u->slots, (size_t)n * sizeof *p);
  if (!p) return -ENOMEM;
  memset(p + u->nslots, 0, (size_t)(n - u->nslots) * sizeof *p);
  u->slots = p;
  u->nslots = n;
  return 0;
}

static void queue_remove(iomux_loop *loop, uint64_t ud) {
  uring *u = loop->backend;
  uint64_t target = (ud & UD_MISC) ? UD_MAKE(K_FOREIGN, UD_HIGH(ud))
                                   : ud & ~UD_OWN;
  int err;
  struct io_uring_sqe *e = sqe_get(loop, &err);
  if (e)
    prep_remove(u, e, target, ud);
  else
    defer(u, ud);
}

static void queue_rearm(iomux_loop *loop, uslot *s) {
  uring *u = loop->backend;
  int err;
  struct io_uring_sqe *e = sqe_get(loop, &err);
  if (!e) {
    s->state = ST_REARM;
    defer(u, s->token);
    return;
  }
  if (s->oneshot) {
    prep_poll(e, s->fd, POLLIN | (s->excl ? POLL_EXCLUSIVE : 0), false,
              s->token);
    loop->stats.changes--; /* counted apart, not a registration */
    loop->stats.rearm++;
    s->rearmed = 1;
  } else
    prep_poll(e, s->fd, stream_events(s), true, s->token);
  s->state = ST_POLL;
  s->pos = u->r.sq_tail - 1;
}

static int queue_foreign(iomux_loop *loop) {
  uring *u = loop->backend;
  int err;
  struct io_uring_sqe *e = sqe_get(loop, &err);
  if (!e) {
    u->foreign_state = ST_REARM;
    defer(u, UD_MAKE(K_FOREIGN, u->foreign_gen));
    return err;
  }
  /* One-shot, re-armed after each completion: a fresh poll reports an fd
   * that is still readable at once, which makes it level-triggered. (A
   * multishot poll only reports wakeups, which is edge-triggered.) */
  prep_poll(e, u->foreign_fd, POLLIN, false, UD_MAKE(K_FOREIGN, u->foreign_gen));
  u->foreign_state = ST_POLL;
  u->foreign_pos = u->r.sq_tail - 1;
  return 0;
}

/* Queues what the full ring refused earlier, before the next wait. */
static void drain_deferred(iomux_loop *loop) {
  uring *u = loop->backend;
  vec64 d = u->deferred;
  u->deferred = (vec64){0};
  for (uint32_t i = 0; i < d.len; i++) {
    uint64_t ud = d.v[i];
    if (!(ud & UD_OWN)) { /* a re-arm, unless the socket closed since */
      uint32_t slot = TOKEN_SLOT(ud);
      if (slot < u->nslots && u->slots[slot].token == ud &&
          u->slots[slot].state == ST_REARM)
        queue_rearm(loop, &u->slots[slot]);
    } else if (!(ud & UD_MISC) || UD_KIND(ud) == K_FOREIGN_REMOVE) {
      queue_remove(loop, ud);
    } else if (UD_KIND(ud) == K_FOREIGN && UD_HIGH(ud) == u->foreign_gen &&
               u->foreign_fd >= 0 && u->foreign_state == ST_REARM) {
      (void)queue_foreign(loop);
    }
  }
  if (u->deferred.cap == 0) { /* keep the array for reuse */
    d.len = 0;
    u->deferred = d;
  } else {
    free(d.v);
  }
}

static int uring_add(iomux_loop *loop, int fd, uint64_t token) {
  uring *u = loop->backend;
  assert(!(token & (UD_OWN | UD_MISC)) && "slots stay below 2^30");
  uint32_t slot = TOKEN_SLOT(token);
  int rc = slots_reserve(u, slot);
  if (rc < 0) return rc;
  assert(u->slots[slot].state == ST_FREE);
  struct io_uring_sqe *e = sqe_get(loop, &rc);
  if (!e) return rc;
  prep_poll(e, fd, POLL_EVENTS, true, token);
  u->slots[slot] = (uslot){
      .token = token, .fd = fd, .state = ST_POLL, .pos = u->r.sq_tail - 1};
  return 0;
}

/* A listener gets a one-shot exclusive poll: a connection wakes one of the
 * rings (or epoll sets) that wait on the socket, not all of them. The kernel
 * refuses EPOLLEXCLUSIVE on a multishot poll, so once the socket layer has
 * accepted until EAGAIN it asks for the next poll (listener_drained); that
 * rides with the next wait, and a poll armed on a socket that has
 * connections queued again completes at once: none is missed. While it is
 * not armed the other waiters take the connections, which is the point. A
 * listener that stopped accepting (out of fds) is not re-armed until it
 * accepts again, so it never spins. */
static int uring_add_listener(iomux_loop *loop, int fd, uint64_t token) {
  uring *u = loop->backend;
  int rc = uring_add(loop, fd, token);
  if (rc < 0) return rc;
  uslot *s = &u->slots[TOKEN_SLOT(token)];
  s->oneshot = 1;
  s->excl = 1;
  struct io_uring_sqe *e = &u->r.sqes[s->pos & u->r.sq_mask];
  prep_poll(e, fd, POLLIN | POLL_EXCLUSIVE, false, token);
  return 0;
}

static void uring_listener_drained(iomux_loop *loop, int fd, uint64_t token) {
  uring *u = loop->backend;
  uint32_t slot = TOKEN_SLOT(token);
  (void)fd;
  if (slot >= u->nslots || u->slots[slot].token != token) return;
  uslot *s = &u->slots[slot];
  if (s->oneshot && s->state == ST_DRAINING) queue_rearm(loop, s);
}

/* Changes the events of the stream's armed multishot poll in place. The
 * completion says only a failure (see update_done); without
 * IOSQE_CQE_SKIP_SUCCESS its success too. */
static int queue_update(iomux_loop *loop, uslot *s) {
  uring *u = loop->backend;
  int err;
  struct io_uring_sqe *e = sqe_get(loop, &err);
  if (!e) return err;
  e->opcode = IORING_OP_POLL_REMOVE;
  e->flags = u->skip_flag;
  e->fd = -1;
  e->addr = s->token;
  e->len = IORING_POLL_UPDATE_EVENTS | IORING_POLL_ADD_MULTI;
  e->poll32_events = sqe_events(stream_events(s));
  e->user_data = UD_MAKE(K_UPDATE, TOKEN_SLOT(s->token));
  return 0;
}

static int uring_want_write(iomux_loop *loop, int fd, uint64_t token, bool on) {
  uring *u = loop->backend;
  uint32_t slot = TOKEN_SLOT(token);
  (void)fd;
  if (slot >= u->nslots || u->slots[slot].token != token) return -EBADF;
  uslot *s = &u->slots[slot];
  assert(!s->oneshot);
  uint8_t was = s->no_out;
  s->no_out = !on;
  /* A re-arm parked in `deferred` takes the new events when it is queued;
   * an idle slot has no poll to change. */
  if (s->state != ST_POLL || was == s->no_out) return 0;
  if (add_queued(u, s->pos, token)) {
    u->r.sqes[s->pos & u->r.sq_mask].poll32_events =
        sqe_events(stream_events(s));
    return 0;
  }
  int rc = queue_update(loop, s);
  if (rc < 0) s->no_out = was;
  return rc;
}

/* An update's failure. -EALREADY: the poll was being run for a wakeup at
 * that moment: update it again. -ENOENT: it had ended; the completion that
 * ended it re-arms it with the slot's current events. */
static void update_done(iomux_loop *loop, uint64_t ud, int32_t res) {
  uring *u = loop->backend;
  uint32_t slot = UD_HIGH(ud);
  assert(res == 0 || res == -ENOENT || res == -EALREADY);
  if (res != -EALREADY || slot >= u->nslots) return;
  uslot *s = &u->slots[slot];
  if (s->state == ST_POLL && !s->oneshot) (void)queue_update(loop, s);
}

static void uring_del(iomux_loop *loop, int fd, uint64_t token) {
  uring *u = loop->backend;
  uint32_t slot = TOKEN_SLOT(token);
  assert(slot < u->nslots && u->slots[slot].token == token &&
         u->slots[slot].fd == fd && u->slots[slot].state != ST_FREE);
  if (slot >= u->nslots || u->slots[slot].token != token) return;
  (void)fd;
  uslot *s = &u->slots[slot];
  if (s->state == ST_POLL) {
    if (add_queued(u, s->pos, token)) {
      sq_cancel(loop, s->pos, s->rearmed);
    } else {
      queue_remove(loop, UD_OWN | token);
      /* Until the poll lets go of the file, a listener stays in LISTEN: new
       * connections would still land in its backlog and its port could not
       * be bound again, though the caller has closed it. Listeners close
       * rarely: their removal goes to the kernel now (the file is released
       * by the close() that follows). A stream's removal rides with the
       * next wait, which in the embedded mode comes in the same turn of the
       * outer loop (pending() says so); its FIN leaves then. */
      const sock *so = slot < loop->nsocks ? loop->socks[slot] : NULL;
      if (so && so->kind == SK_LISTENER) (void)submit_now(loop);
    }
  }
  /* ST_REARM: its deferred re-arm will find the slot free; ST_IDLE: nothing
   * is armed. */
  s->state = ST_FREE;
  s->fd = -1;
}

static int uring_watch_foreign(iomux_loop *loop, int fd, int old_fd) {
  uring *u = loop->backend;
  (void)old_fd;
  if (u->foreign_fd >= 0) {
    assert(old_fd == u->foreign_fd);
    if (u->foreign_state == ST_POLL) {
      if (add_queued(u, u->foreign_pos, UD_MAKE(K_FOREIGN, u->foreign_gen)))
        sq_cancel(loop, u->foreign_pos, false);
      else
        queue_remove(loop, UD_MAKE(K_FOREIGN_REMOVE, u->foreign_gen));
    }
    u->foreign_fd = -1;
    u->foreign_state = ST_FREE;
  }
  u->foreign_gen++; /* completions of the old poll are now stale */
  if (fd < 0) return 0;
  u->foreign_fd = fd;
  int rc = queue_foreign(loop);
  if (rc < 0) {
    u->foreign_fd = -1;
    u->foreign_state = ST_FREE;
  }
  return rc;
}

/* ---- harvesting --------------------------------------------------------------- */

static uint32_t mask_of(int32_t res) {
  uint32_t m = 0;
  if (res & POLLIN) m |= RD_READ;
  if (res & POLLOUT) m |= RD_WRITE;
  if (res & (POLLRDHUP | POLLHUP)) m |= RD_HUP;
  if (res & POLLERR) m |= RD_ERROR;
  return m;
}

/* Adds (or merges: several wakeups between two harvests post several
 * completions, and one record per fd spares the socket layer reads that
 * would only say EAGAIN) an event to loop->fired. */
static int fire(iomux_loop *loop, uslot *s, uint64_t token, uint32_t mask,
                int n) {
  uring *u = loop->backend;
  if (s && s->seen == u->harvest) {
    loop->fired[s->fired].mask |= mask;
    return n;
  }
  assert((uint32_t)n < loop->cfg.max_events);
  if (s) {
    s->seen = u->harvest;
    s->fired = (uint32_t)n;
  }
  loop->fired[n].token = token;
  loop->fired[n].mask = mask;
  return n + 1;
}

static int foreign_done(iomux_loop *loop, uint64_t ud, int32_t res, int n) {
  uring *u = loop->backend;
  if (UD_HIGH(ud) != u->foreign_gen || u->foreign_fd < 0) return n; /* old */
  assert(u->foreign_state == ST_POLL);
  if (res >= 0 || res == -ECANCELED) {
    /* ECANCELED without our removal: the kernel dropped the poll. */
    if (res > 0) n = fire(loop, NULL, TOKEN_FOREIGN, RD_READ, n);
    (void)queue_foreign(loop);
  } else {
    /* The outer loop's fd cannot be polled: say so once, and let it look. */
    u->foreign_state = ST_IDLE;
    n = fire(loop, NULL, TOKEN_FOREIGN, RD_READ | RD_ERROR, n);
  }
  return n;
}

static int completion(iomux_loop *loop, uint64_t ud, int32_t res,
                      uint32_t flags, int n) {
  uring *u = loop->backend;
  if (ud & UD_OWN) {
    if (!(ud & UD_MISC) || UD_KIND(ud) == K_FOREIGN_REMOVE) {
      /* A removal. -EALREADY: the poll was being run for a wakeup at that
       * moment (io_poll_disarm could not take ownership) and is still
       * armed: remove it again. -ENOENT: it had ended already. */
      if (res == -EALREADY) queue_remove(loop, ud);
      assert(res == 0 || res == -ENOENT || res == -EALREADY);
      return n;
    }
    if (UD_KIND(ud) == K_FOREIGN) return foreign_done(loop, ud, res, n);
    if (UD_KIND(ud) == K_UPDATE) {
      update_done(loop, ud, res);
      return n;
    }
    assert(UD_KIND(ud) == K_NOP || UD_KIND(ud) == K_PROBE);
    return n;
  }
  uint32_t slot = TOKEN_SLOT(ud);
  if (slot >= u->nslots) return n;
  uslot *s = &u->slots[slot];
  if (s->state == ST_FREE || s->token != ud) return n; /* removed, or stale */
  assert(s->state == ST_POLL && !add_queued(u, s->pos, ud));
  uint32_t mask = 0;
  if (res >= 0)
    mask = mask_of(res);
  else if (res != -ECANCELED)
    mask = RD_ERROR; /* the socket layer finds out what went wrong */
  if (s->oneshot) {
    /* A listener's poll ends at every completion: the next is armed once
     * its connections are accepted. A kernel that refuses EPOLLEXCLUSIVE
     * on a poll (-EINVAL) gets a plain one; -ECANCELED (the kernel dropped
     * it) is re-armed at once. */
    if (res == -EINVAL && s->excl) {
      s->excl = 0;
      queue_rearm(loop, s);
      return n;
    }
    if (res == -ECANCELED)
      queue_rearm(loop, s);
    else
      s->state = res >= 0 ? ST_DRAINING : ST_IDLE;
  } else if (!(flags & IORING_CQE_F_MORE)) {
    /* The kernel ended the poll without our asking: the completion ring was
     * full when it had an event to post (it posts that event with this
     * completion), or it cancelled it (-ECANCELED, e.g. a wait queue that
     * went away). The fd is still ours: arm it again. An error other than
     * -ECANCELED is not retried, or it could repeat at every iteration. */
    if (res >= 0 || res == -ECANCELED)
      queue_rearm(loop, s);
    else
      s->state = ST_IDLE;
  }
  return mask ? fire(loop, s, ud, mask, n) : n;
}

/* Moves completions into loop->fired after the n events there, up to
 * max_events events; the rest stay in the ring for the next poll. */
static int harvest(iomux_loop *loop, int n) {
  uring *u = loop->backend;
  uint32_t head = *u->r.cq_khead; /* only we write it */
  uint32_t tail = __atomic_load_n(u->r.cq_ktail, __ATOMIC_ACQUIRE);
  while (head != tail && (uint32_t)n < loop->cfg.max_events) {
    const struct io_uring_cqe *c = &u->r.cqes[head & u->r.cq_mask];
    uint64_t ud = c->user_data;
    int32_t res = c->res;
    uint32_t flags = c->flags;
    head++;
    n = completion(loop, ud, res, flags, n);
  }
  /* Release: our reads of the entries are done before the kernel may reuse
   * them. */
  __atomic_store_n(u->r.cq_khead, head, __ATOMIC_RELEASE);
  return n;
}

/* Completions the queued SQEs will post in the call that submits them, none
 * of them an event: each removal's (the removed poll's -ECANCELED, or the
 * removal's own error; its success is not posted), and a NOP's when the
 * kernel cannot skip it. (Without IOSQE_CQE_SKIP_SUCCESS a successful
 * removal posts two; one is counted, which errs on the safe side.) */
static uint32_t quiet_completions(const uring *u) {
  uint32_t n = 0;
  for (uint32_t pos = sq_head(u); pos != u->r.sq_tail; pos++) {
    const struct io_uring_sqe *e = &u->r.sqes[pos & u->r.sq_mask];
    /* An update (want_write) posts nothing when it succeeds, unless the
     * kernel cannot skip it; it cancels no poll. */
    bool update = e->opcode == IORING_OP_POLL_REMOVE &&
                  (e->len & IORING_POLL_UPDATE_EVENTS);
    if ((e->opcode == IORING_OP_POLL_REMOVE && (!update || !u->skip_flag)) ||
        (e->opcode == IORING_OP_NOP && !u->skip_flag))
      n++;
  }
  return n;
}

static int uring_poll(iomux_loop *loop, int timeout_ms) {
  uring *u = loop->backend;
  if (++u->harvest == 0) u->harvest = 1; /* 0 is "never" in uslot.seen */
  if (u->deferred.len) drain_deferred(loop);
  /* First what the ring holds already: completions are posted by task work
   * that runs at every return to user space, so events may be waiting, and
   * so may completions that are not events (a stale one for a socket closed
   * since, whose removal is still queued). Consuming those here keeps them
   * from ending the wait below at once with nothing to report. Re-arms this
   * queues go with the call below. */
  int n = harvest(loop, 0);
  uint32_t submit = sq_queued(u);
  /* An overflow backlog to fetch, or completions waiting as task work
   * (IORING_SETUP_TASKRUN_FLAG): both need a kernel entry. */
  bool behind = __atomic_load_n(u->r.sq_kflags, __ATOMIC_ACQUIRE) &
                (IORING_SQ_CQ_OVERFLOW | IORING_SQ_TASKRUN);
  bool wait = timeout_ms != 0 && n == 0;
  /* With nothing to submit, nothing to wait for and nothing behind, the
   * ring already held every completion there is: no system call at all
   * (the embedded mode's zero-timeout iterations). */
  if (submit || wait || behind) {
    struct __kernel_timespec ts = {0};
    struct io_uring_getevents_arg arg;
    memset(&arg, 0, sizeof arg);
    if (wait && timeout_ms > 0) {
      ts.tv_sec = timeout_ms / 1000;
      ts.tv_nsec = (long long)(timeout_ms % 1000) * 1000000;
      arg.ts = (uint64_t)(uintptr_t)&ts;
    }
    /* Wait for one completion beyond those the removals submitted here
     * post in this very call: else each close would end the wait at once
     * with nothing to report, and cost an iteration and a call. Never more
     * than that, or a lone event would not end the wait: every removal's
     * completion is posted within this call (up to 5.15 io_poll_remove
     * completes the removed poll inline; later kernels do it from task
     * work, which the wait runs before it sleeps). */
    uint32_t min = wait ? 1 + (submit ? quiet_completions(u) : 0) : 0;
    sq_publish(u);
    loop->stats.wait++;
    /* GETEVENTS also flushes an overflow backlog into the ring. */
    int rc = uring_enter(&u->r, submit, min,
                             IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG,
                             &arg, sizeof arg);
    /* ETIME: the timeout. EINTR: a signal. EBUSY (before 5.19, an overflow
     * backlog the full ring could not take) and EAGAIN (no memory for the
     * requests): harvest, and what was not submitted goes with the next
     * call. Anything else is a bug. */
    if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EBUSY &&
        rc != -EAGAIN)
      return rc;
  }
  return harvest(loop, n);
}

static bool uring_pending(const iomux_loop *loop) {
  const uring *u = loop->backend;
  return sq_queued(u) != 0 || u->deferred.len != 0;
}

/* ---- set-up and tear-down ------------------------------------------------------ */

static void uring_release(uring *u) {
  uring_close(&u->r); /* which cancels every poll and drops its file reference */
  free(u->slots);
  free(u->deferred.v);
  free(u);
}

/* Multishot poll (5.13) has no feature bit: arm one on an eventfd that is
 * not readable and remove it in the same call. A kernel that knows the flag
 * ends it with -ECANCELED; an older one refuses the SQE with -EINVAL. */
static int probe_multishot(uring *u) {
  int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) return -errno;
  uint64_t probe = UD_MAKE(K_PROBE, 0);
  struct io_uring_sqe *e = &u->r.sqes[u->r.sq_tail++ & u->r.sq_mask];
  memset(e, 0, sizeof *e);
  prep_poll(e, efd, POLLIN, true, probe);
  e = &u->r.sqes[u->r.sq_tail++ & u->r.sq_mask];
  memset(e, 0, sizeof *e);
  prep_remove(u, e, probe, UD_MAKE(K_NOP, 0));
  e->flags = 0; /* both completions are awaited below */
  sq_publish(u);
  struct __kernel_timespec ts = {.tv_sec = 1};
  struct io_uring_getevents_arg arg;
  memset(&arg, 0, sizeof arg);
  arg.ts = (uint64_t)(uintptr_t)&ts;
  int rc = uring_enter(&u->r, 2, 2,
                           IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, &arg,
                           sizeof arg);
  close(efd);
  if (rc < 0) return rc;
  int32_t res = 1; /* no completion for the poll: not a kernel we know */
  uint32_t head = *u->r.cq_khead;
  uint32_t tail = __atomic_load_n(u->r.cq_ktail, __ATOMIC_ACQUIRE);
  for (; head != tail; head++)
    if (u->r.cqes[head & u->r.cq_mask].user_data == probe)
      res = u->r.cqes[head & u->r.cq_mask].res;
  __atomic_store_n(u->r.cq_khead, head, __ATOMIC_RELEASE);
  if (sq_queued(u) != 0) return -EIO;
  return res == -ECANCELED ? 0 : -EOPNOTSUPP;
}

static int uring_init(iomux_loop *loop) {
  uring *u = calloc(1, sizeof *u);
  if (!u) return -ENOMEM;
  u->foreign_fd = -1;
  /* SUBMIT_ALL (5.18): an SQE that fails does not stop the rest of the
   * batch. COOP_TASKRUN (5.19): completions are posted at our next kernel
   * entry instead of interrupting us with an IPI; a task asleep (in our wait
   * or in the outer loop's) is still woken. TASKRUN_FLAG (5.19) marks the
   * ring while such completions wait, so that a zero-timeout poll, which
   * otherwise makes no system call, enters the kernel to post them: without
   * it a thread that polls without sleeping (busy polling) would never see
   * them. All three are optional: an older kernel refuses them, and we go
   * without. */
  uint32_t optional = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN |
                      IORING_SETUP_TASKRUN_FLAG;
  int rc = uring_open(&u->r, SQ_ENTRIES, CQ_ENTRIES, optional, optional);
  if (rc < 0) {
    free(u);
    return rc;
  }
  if (u->r.features & IORING_FEAT_CQE_SKIP) u->skip_flag = IOSQE_CQE_SKIP_SUCCESS;
  uint32_t need = IORING_FEAT_NODROP | IORING_FEAT_EXT_ARG;
  rc = (u->r.features & need) == need ? probe_multishot(u) : -EOPNOTSUPP;
  if (rc < 0) {
    uring_release(u);
    return rc;
  }
  loop->backend = u;
  return 0;
}

static void uring_free(iomux_loop *loop) {
  uring *u = loop->backend;
  if (!u) return;
  uring_release(u);
  loop->backend = NULL;
}

static int uring_fd(const iomux_loop *loop) {
  return ((const uring *)loop->backend)->r.fd;
}

const backend_ops iomux__backend_io_uring = {
    .name = "io_uring",
    .init = uring_init,
    .free = uring_free,
    .fd = uring_fd,
    .add = uring_add,
    .add_listener = uring_add_listener,
    .listener_drained = uring_listener_drained,
    .want_write = uring_want_write,
    .del = uring_del,
    .watch_foreign = uring_watch_foreign,
    .poll = uring_poll,
    .pending = uring_pending,
};

#endif /* IOMUX_HAVE_IO_URING */
