/*
 * uring.h -- an io_uring instance as the core drives it: through the raw
 * system calls (no liburing), with the submission ring's entries i always in
 * array slot i. Shared by the io_uring backend (backend_io_uring.c) and the
 * batched reads and writes (batch.c), each of which has a ring of its own.
 */
#ifndef IOMUX_URING_H
#define IOMUX_URING_H

#include "internal.h"

#ifdef IOMUX_HAVE_IO_URING

#include <linux/io_uring.h>

typedef struct uring_rings {
  int fd;
  /* The submission ring: head is the kernel's, tail (published at each
   * enter) ours; sq_tail is our private, not yet published, tail. */
  uint32_t *sq_khead, *sq_ktail, *sq_kflags;
  uint32_t sq_mask, sq_entries, sq_tail;
  struct io_uring_sqe *sqes;
  /* The completion ring: tail is the kernel's, head ours. */
  uint32_t *cq_khead, *cq_ktail;
  uint32_t cq_mask, cq_entries;
  struct io_uring_cqe *cqes;
  void *sq_map, *cq_map;
  size_t sq_map_len, cq_map_len, sqes_len;
  uint32_t features; /* IORING_FEAT_* */
} uring_rings;

/* Creates the instance with `flags`, or without `optional` among them when
 * the kernel refuses those (EINVAL), and maps its rings. cq_entries 0 takes
 * the kernel's default (twice the submission ring). 0 or -errno; on failure
 * nothing is left open. */
int uring_open(uring_rings *r, uint32_t entries, uint32_t cq_entries,
               uint32_t flags, uint32_t optional);
void uring_close(uring_rings *r);

int uring_enter(const uring_rings *r, unsigned submit, unsigned min_complete,
                unsigned flags, const void *arg, size_t argsz);

/* Without SQPOLL the kernel moves the SQ head only inside io_uring_enter(),
 * so entries between its head and our tail are ours to rewrite until the
 * next enter. */
static inline uint32_t uring_sq_head(const uring_rings *r) {
  return __atomic_load_n(r->sq_khead, __ATOMIC_ACQUIRE);
}

static inline uint32_t uring_sq_queued(const uring_rings *r) {
  return r->sq_tail - uring_sq_head(r);
}

static inline void uring_sq_publish(const uring_rings *r) {
  /* Release: the SQE contents are visible before the tail that hands them
   * over. */
  __atomic_store_n(r->sq_ktail, r->sq_tail, __ATOMIC_RELEASE);
}

#endif /* IOMUX_HAVE_IO_URING */
#endif /* IOMUX_URING_H */
