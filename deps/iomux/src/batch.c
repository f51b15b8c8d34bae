/*
 * batch.c -- the reads and writes of many sockets in one kernel call.
 *
 * Each is an io_uring IORING_OP_RECV or IORING_OP_SEND with MSG_DONTWAIT.
 * The kernel makes such an operation inline, within the io_uring_enter()
 * that submits it, and one that would block ends there with -EAGAIN instead
 * of waiting (REQ_F_NOWAIT). So a batch is a vectored form of the
 * nonblocking read()/send() the core makes anyway, with the same results,
 * and nothing of it is still running when the call returns: its buffers are
 * the caller's again at once. That is the whole contract; the socket layer
 * decides what to read and write exactly as with one syscall each.
 *
 * Why: on a busy server most iterations read from and write to several
 * sockets, and each syscall costs its entry and exit on top of the work
 * (about 1 us on a virtualised x86 guest, where a null syscall measured
 * 1,017 ns). Two or more operations go as a batch; one goes as a plain
 * syscall, which is cheaper than a ring round trip.
 *
 * The ring is this module's own, apart from the io_uring backend's: its
 * completion queue then holds only a batch's results, whichever backend
 * waits for readiness. It needs Linux 5.6 (IORING_OP_SEND, IORING_OP_RECV);
 * that MSG_DONTWAIT is honoured inline is probed at start, and without it
 * (or without io_uring at all: ENOSYS, or EPERM under
 * kernel.io_uring_disabled or a seccomp filter) every operation is a
 * syscall of its own, as before.
 */
#define _GNU_SOURCE
#include "uring.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifdef IOMUX_HAVE_IO_URING

/* A batch is at most one delivery's flush (IOMUX_FLUSH_CHUNK) or one
 * harvest's reads (IOMUX_READ_CHUNK); larger batches are split. The
 * completion ring is twice that (the kernel's default), and holds no more
 * than one batch at a time. */
#define BATCH_ENTRIES 128u

struct iomux_batch {
  uring_rings r;
};

static void prep(struct io_uring_sqe *e, const io_op *op, uint64_t ud) {
  memset(e, 0, sizeof *e);
  e->opcode = op->send ? IORING_OP_SEND : IORING_OP_RECV;
  e->fd = op->fd;
  e->addr = (uint64_t)(uintptr_t)op->buf;
  e->len = op->len > UINT32_MAX ? UINT32_MAX : (uint32_t)op->len;
  /* MSG_NOSIGNAL: as sys_write, a reset peer is EPIPE, never SIGPIPE. */
  e->msg_flags = MSG_DONTWAIT | (op->send ? MSG_NOSIGNAL : 0);
  e->user_data = ud;
}

/* Submits the queued SQEs and takes every completion they post. Returns how
 * many of the n were submitted (a prefix: the kernel takes the ring in
 * order); those not submitted are taken back. */
static uint32_t run(iomux_loop *loop, io_op *ops, uint32_t n) {
  uring_rings *r = &loop->batch->r;
  uint32_t first = r->sq_tail - n;
  uring_sq_publish(r);
  loop->stats.batch++;
  (void)uring_enter(r, n, 0, 0, NULL, 0);
  /* An error (EAGAIN or ENOMEM: no memory for the requests; EBUSY: before
   * 5.19, completions the full ring could not take; EINTR) submits fewer or
   * none: the head says how many went. */
  int32_t taken = (int32_t)(uring_sq_head(r) - first);
  uint32_t made = taken <= 0 ? 0 : (uint32_t)taken > n ? n : (uint32_t)taken;
  if (made < n) {
    r->sq_tail = first + made;
    uring_sq_publish(r);
  }
  /* Every operation made completed inline. Their completions are all in
   * the ring unless it had no room, which it always has (it holds twice
   * the largest batch, and is emptied here each time); GETEVENTS would
   * fetch any the kernel kept back all the same. */
  uint32_t missing = made;
  while (missing) {
    uint32_t head = *r->cq_khead;
    uint32_t tail = __atomic_load_n(r->cq_ktail, __ATOMIC_ACQUIRE);
    for (; head != tail; head++) {
      const struct io_uring_cqe *c = &r->cqes[head & r->cq_mask];
      uint64_t i = c->user_data;
      assert(i < made && "a completion of this batch");
      if (i < made) {
        ops[i].res = c->res;
        missing--;
      }
    }
    __atomic_store_n(r->cq_khead, head, __ATOMIC_RELEASE);
    if (missing) (void)uring_enter(r, 0, missing, IORING_ENTER_GETEVENTS, NULL, 0);
  }
  return made;
}

uint32_t iomux__batch_run(iomux_loop *loop, io_op *ops, uint32_t n) {
  iomux_batch *b = loop->batch;
  if (!b || n < 2) return 0;
  if (n > BATCH_ENTRIES) n = BATCH_ENTRIES;
  assert(uring_sq_queued(&b->r) == 0);
  for (uint32_t i = 0; i < n; i++)
    prep(&b->r.sqes[b->r.sq_tail++ & b->r.sq_mask], &ops[i], i);
  uint32_t made = run(loop, ops, n);
  for (uint32_t i = 0; i < made; i++) {
    if (ops[i].send)
      loop->stats.batch_write++;
    else
      loop->stats.batch_read++;
  }
  return made;
}

/* Whether this kernel makes a MSG_DONTWAIT receive inline: one on an empty
 * socket must have completed with -EAGAIN by the time the enter that
 * submits it returns. A kernel that instead waits for data would leave it
 * running (closing the ring cancels it). */
static bool probe(iomux_batch *b) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
    return false;
  uint8_t byte;
  io_op op = {.fd = sv[0], .buf = &byte, .len = 1, .res = 1};
  prep(&b->r.sqes[b->r.sq_tail++ & b->r.sq_mask], &op, 0);
  uring_sq_publish(&b->r);
  bool ok = false;
  if (uring_enter(&b->r, 1, 0, 0, NULL, 0) == 1) {
    uint32_t head = *b->r.cq_khead;
    uint32_t tail = __atomic_load_n(b->r.cq_ktail, __ATOMIC_ACQUIRE);
    ok = head != tail && b->r.cqes[head & b->r.cq_mask].res == -EAGAIN;
    __atomic_store_n(b->r.cq_khead, tail, __ATOMIC_RELEASE);
  }
  close(sv[0]);
  close(sv[1]);
  return ok;
}

void iomux__batch_open(iomux_loop *loop) {
  iomux_batch *b = calloc(1, sizeof *b);
  if (!b) return;
  /* SINGLE_ISSUER (6.0): only this thread submits, which spares the kernel
   * some locking; optional. */
  uint32_t flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN;
  if (uring_open(&b->r, BATCH_ENTRIES, 0, flags, flags) < 0) {
    free(b);
    return;
  }
  if (!probe(b)) {
    uring_close(&b->r);
    free(b);
    return;
  }
  loop->batch = b;
}

void iomux__batch_close(iomux_loop *loop) {
  if (!loop->batch) return;
  uring_close(&loop->batch->r);
  free(loop->batch);
  loop->batch = NULL;
}

#else /* no io_uring: every operation is a syscall of its own */

uint32_t iomux__batch_run(iomux_loop *loop, io_op *ops, uint32_t n) {
  (void)loop;
  (void)ops;
  (void)n;
  return 0;
}

void iomux__batch_open(iomux_loop *loop) { (void)loop; }

void iomux__batch_close(iomux_loop *loop) { (void)loop; }

#endif /* IOMUX_HAVE_IO_URING */
