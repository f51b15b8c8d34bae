/*
 * uring.c -- setting up and tearing down an io_uring instance, and the one
 * call that drives it (see uring.h).
 */
#define _GNU_SOURCE
#include "uring.h"

#ifdef IOMUX_HAVE_IO_URING

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

int uring_enter(const uring_rings *r, unsigned submit, unsigned min_complete,
                unsigned flags, const void *arg, size_t argsz) {
  long rc = syscall(__NR_io_uring_enter, r->fd, submit, min_complete, flags,
                    arg, argsz);
  return rc < 0 ? -errno : (int)rc;
}

static void *map_ring(int fd, size_t len, off_t off, int *err) {
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                 fd, off);
  if (p == MAP_FAILED) {
    *err = -errno;
    return NULL;
  }
  return p;
}

static int map_rings(uring_rings *r, const struct io_uring_params *p) {
  int err = 0;
  r->sq_map_len = p->sq_off.array + p->sq_entries * sizeof(uint32_t);
  r->cq_map_len = p->cq_off.cqes + p->cq_entries * sizeof(struct io_uring_cqe);
  /* IORING_FEAT_SINGLE_MMAP (5.4): both rings live in one mapping. */
  bool single = p->features & IORING_FEAT_SINGLE_MMAP;
  if (single && r->cq_map_len > r->sq_map_len) r->sq_map_len = r->cq_map_len;
  r->sq_map = map_ring(r->fd, r->sq_map_len, IORING_OFF_SQ_RING, &err);
  if (!r->sq_map) return err;
  if (single) {
    r->cq_map = r->sq_map;
  } else {
    r->cq_map = map_ring(r->fd, r->cq_map_len, IORING_OFF_CQ_RING, &err);
    if (!r->cq_map) return err;
  }
  r->sqes_len = p->sq_entries * sizeof(struct io_uring_sqe);
  r->sqes = map_ring(r->fd, r->sqes_len, IORING_OFF_SQES, &err);
  if (!r->sqes) return err;

  uint8_t *sq = r->sq_map, *cq = r->cq_map;
  r->sq_khead = (uint32_t *)(sq + p->sq_off.head);
  r->sq_ktail = (uint32_t *)(sq + p->sq_off.tail);
  r->sq_kflags = (uint32_t *)(sq + p->sq_off.flags);
  r->sq_mask = *(uint32_t *)(sq + p->sq_off.ring_mask);
  r->sq_entries = p->sq_entries;
  r->sq_tail = *r->sq_ktail;
  /* SQE i always goes in array slot i: filled once, never touched again. */
  uint32_t *array = (uint32_t *)(sq + p->sq_off.array);
  for (uint32_t i = 0; i < p->sq_entries; i++) array[i] = i;
  r->cq_khead = (uint32_t *)(cq + p->cq_off.head);
  r->cq_ktail = (uint32_t *)(cq + p->cq_off.tail);
  r->cq_mask = *(uint32_t *)(cq + p->cq_off.ring_mask);
  r->cq_entries = p->cq_entries;
  r->cqes = (struct io_uring_cqe *)(cq + p->cq_off.cqes);
  assert(r->sq_mask == r->sq_entries - 1);
  return 0;
}

static int setup(struct io_uring_params *p, uint32_t entries,
                 uint32_t cq_entries, uint32_t flags) {
  memset(p, 0, sizeof *p);
  /* CQSIZE (5.5) sets the completion ring's size; CLAMP (5.6) clamps both
   * sizes to the kernel's limits instead of failing. */
  p->flags = IORING_SETUP_CLAMP | flags;
  if (cq_entries) {
    p->flags |= IORING_SETUP_CQSIZE;
    p->cq_entries = cq_entries;
  }
  long fd = syscall(__NR_io_uring_setup, entries, p);
  return fd < 0 ? -errno : (int)fd;
}

int uring_open(uring_rings *r, uint32_t entries, uint32_t cq_entries,
               uint32_t flags, uint32_t optional) {
  memset(r, 0, sizeof *r);
  struct io_uring_params p;
  int fd = setup(&p, entries, cq_entries, flags);
  if (fd == -EINVAL && optional) fd = setup(&p, entries, cq_entries, flags & ~optional);
  /* ENOSYS: no io_uring (or a seccomp filter); EPERM: disabled by
   * kernel.io_uring_disabled or a filter; ENOMEM: RLIMIT_MEMLOCK (before
   * 5.12 the rings were charged to it). */
  if (fd < 0) {
    r->fd = -1;
    return fd;
  }
  r->fd = fd;
  r->features = p.features;
  int rc = map_rings(r, &p);
  if (rc < 0) uring_close(r);
  return rc;
}

void uring_close(uring_rings *r) {
  if (r->sqes) munmap(r->sqes, r->sqes_len);
  if (r->cq_map && r->cq_map != r->sq_map) munmap(r->cq_map, r->cq_map_len);
  if (r->sq_map) munmap(r->sq_map, r->sq_map_len);
  /* Closing the instance cancels whatever it still has in flight. */
  if (r->fd >= 0) close(r->fd);
  memset(r, 0, sizeof *r);
  r->fd = -1;
}

#endif /* IOMUX_HAVE_IO_URING */
