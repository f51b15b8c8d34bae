/*
 * shm_sync.c -- create, check and map the region of the cross-process
 * primitives (see include/iomux_sync.h). Everything after the mapping is
 * atomics on its words, done by whoever maps it.
 */
#define _GNU_SOURCE
#include "iomux_sync.h"
#include "iomux_shm.h"

#include <assert.h>
#include <stddef.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

_Static_assert(sizeof(pthread_mutex_t) <= IOMUX_SYNC_LIFE, "a life lock fits its cell");

static size_t layout_offsets(const iomux_sync_layout *l, uint32_t *slots, uint32_t *ledger, uint32_t *values,
                             uint32_t *lives) {
  if (!l || l->nslots == 0 || l->nslots > IOMUX_SYNC_MAX_SLOTS || l->rows == 0 || l->rows > IOMUX_SYNC_MAX_ROWS ||
      l->value_cap < 8 || l->value_cap > IOMUX_SYNC_MAX_VALUE || (l->value_cap & 7))
    return 0;
  uint64_t off = IOMUX_SYNC_HEADER;
  uint64_t s = off;
  off += (uint64_t)l->nslots * IOMUX_SYNC_SLOT;
  uint64_t g = off;
  off += (uint64_t)l->rows * l->nslots * 4;
  off = (off + 63) & ~(uint64_t)63;
  uint64_t v = off;
  off += (uint64_t)l->nslots * 2 * l->value_cap;
  uint64_t f = off;
  off += (uint64_t)l->rows * IOMUX_SYNC_LIFE;
  if (off > UINT32_MAX) return 0;
  if (lives) *lives = (uint32_t)f;
  if (slots) *slots = (uint32_t)s;
  if (ledger) *ledger = (uint32_t)g;
  if (values) *values = (uint32_t)v;
  return (size_t)off;
}

size_t iomux_sync_size(const iomux_sync_layout *l) { return layout_offsets(l, NULL, NULL, NULL, NULL); }

static int map_fd(int fd, size_t size, void **base) {
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return -errno;
  *base = p;
  return 0;
}

int iomux_sync_create(const iomux_sync_layout *l, int *fd, void **base, size_t *size) {
  uint32_t s, g, v, lv;
  size_t total = layout_offsets(l, &s, &g, &v, &lv);
  if (!total) return -EINVAL;
  int f = iomux_shm_fd_new(NULL, 1);
  if (f < 0) return f;
  int rc;
  do rc = ftruncate(f, (off_t)total);
  while (rc < 0 && errno == EINTR);
  if (rc < 0 || (rc = fchmod(f, 0600)) < 0) {
    rc = -errno;
    close(f);
    return rc;
  }
  void *p = NULL;
  rc = map_fd(f, total, &p);
  if (rc) {
    close(f);
    return rc;
  }
  /* a fresh memfd reads as zeros: only the header needs writing */
  uint32_t *h = (uint32_t *)p;
  h[IOMUX_SYNC_H_VERSION] = IOMUX_SYNC_VERSION;
  h[IOMUX_SYNC_H_SIZE] = (uint32_t)total;
  h[IOMUX_SYNC_H_NSLOTS] = l->nslots;
  h[IOMUX_SYNC_H_ROWS] = l->rows;
  h[IOMUX_SYNC_H_VALUE_CAP] = l->value_cap;
  h[IOMUX_SYNC_H_OFF_SLOTS] = s;
  h[IOMUX_SYNC_H_OFF_LEDGER] = g;
  h[IOMUX_SYNC_H_OFF_VALUES] = v;
  h[IOMUX_SYNC_H_OFF_LIVES] = lv;
  __atomic_store_n(&h[IOMUX_SYNC_H_MAGIC], IOMUX_SYNC_MAGIC, __ATOMIC_RELEASE);
  *fd = f;
  *base = p;
  *size = total;
  return 0;
}

static int fail(char *errbuf, size_t errlen, int rc, const char *msg) {
  if (errbuf && errlen) snprintf(errbuf, errlen, "%s", msg);
  return rc;
}

int iomux_sync_attach(int fd, void **base, size_t *size, char *errbuf, size_t errlen) {
  struct stat st;
  if (fstat(fd, &st) < 0) return fail(errbuf, errlen, -errno, "fstat failed");
  if (st.st_size < (off_t)IOMUX_SYNC_HEADER || st.st_size > (off_t)UINT32_MAX)
    return fail(errbuf, errlen, -EPROTO, "region size is not that of a sync region");
  size_t total = (size_t)st.st_size;
  void *p = NULL;
  int rc = map_fd(fd, total, &p);
  if (rc) return fail(errbuf, errlen, rc, "mmap failed");
  const uint32_t *h = (const uint32_t *)p;
  const char *why = NULL;
  iomux_sync_layout l = {h[IOMUX_SYNC_H_NSLOTS], h[IOMUX_SYNC_H_ROWS], h[IOMUX_SYNC_H_VALUE_CAP]};
  uint32_t s, g, v, f;
  if (__atomic_load_n(&h[IOMUX_SYNC_H_MAGIC], __ATOMIC_ACQUIRE) != IOMUX_SYNC_MAGIC)
    why = "bad magic: not a sync region";
  else if (h[IOMUX_SYNC_H_VERSION] != IOMUX_SYNC_VERSION)
    why = "sync region of another version";
  else if (layout_offsets(&l, &s, &g, &v, &f) != total || h[IOMUX_SYNC_H_SIZE] != total || s != h[IOMUX_SYNC_H_OFF_SLOTS] ||
           g != h[IOMUX_SYNC_H_OFF_LEDGER] || v != h[IOMUX_SYNC_H_OFF_VALUES] || f != h[IOMUX_SYNC_H_OFF_LIVES])
    why = "sync region layout does not match its size";
  if (why) {
    munmap(p, total);
    return fail(errbuf, errlen, -EPROTO, why);
  }
  *base = p;
  *size = total;
  return 0;
}

void iomux_sync_unmap(void *base, size_t size) {
  if (base) munmap(base, size);
}

/* ---- life locks --------------------------------------------------------- */

static pthread_mutex_t *life(void *base, uint32_t row) {
  const uint32_t *h = (const uint32_t *)base;
  if (!base || row >= h[IOMUX_SYNC_H_ROWS]) return NULL;
  return (pthread_mutex_t *)((char *)base + h[IOMUX_SYNC_H_OFF_LIVES] + (size_t)row * IOMUX_SYNC_LIFE);
}

int iomux_sync_life_init(void *base, uint32_t row) {
  pthread_mutex_t *m = life(base, row);
  if (!m) return -EINVAL;
  pthread_mutexattr_t a;
  int rc = pthread_mutexattr_init(&a);
  if (!rc) rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  if (!rc) rc = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  if (!rc) {
    memset(m, 0, IOMUX_SYNC_LIFE);
    rc = pthread_mutex_init(m, &a);
  }
  pthread_mutexattr_destroy(&a);
  return -rc;
}

int iomux_sync_life_hold(void *base, uint32_t row) {
  pthread_mutex_t *m = life(base, row);
  if (!m) return -EINVAL;
  int rc = pthread_mutex_trylock(m);
  if (rc == EOWNERDEAD) rc = pthread_mutex_consistent(m);
  return -rc; /* -EBUSY: someone holds it (a row given out twice) */
}

int iomux_sync_life_wait(void *base, uint32_t row, int timeout_ms) {
  pthread_mutex_t *m = life(base, row);
  if (!m || timeout_ms < 0) return -EINVAL;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += timeout_ms / 1000;
  ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  int rc;
  do rc = pthread_mutex_timedlock(m, &ts);
  while (rc == EINTR);
  if (rc == ETIMEDOUT) return 0;
  if (rc == EOWNERDEAD) rc = pthread_mutex_consistent(m);
  else if (rc) return -rc;
  /* got it: the holder is gone (or never held it); free it again */
  pthread_mutex_unlock(m);
  return rc ? -rc : 1;
}

/* ---- doorbells ---------------------------------------------------------- */

static int bell_addr(const char *path, struct sockaddr_un *sa, socklen_t *len) {
  if (!path || !*path) return -EINVAL;
  size_t n = strlen(path);
  if (n >= sizeof sa->sun_path) return -ENAMETOOLONG;
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  memcpy(sa->sun_path, path, n + 1);
  *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
  return 0;
}

int iomux_sync_bell_open(const char *path) {
  struct sockaddr_un sa;
  socklen_t len;
  int rc = bell_addr(path, &sa, &len);
  if (rc) return rc;
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  if (unlink(path) < 0 && errno != ENOENT) {
    rc = -errno;
    close(fd);
    return rc;
  }
  if (bind(fd, (struct sockaddr *)&sa, len) < 0 || chmod(path, 0600) < 0) {
    rc = -errno;
    close(fd);
    return rc;
  }
  return fd;
}

int iomux_sync_bell_sender(void) {
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  return fd < 0 ? -errno : fd;
}

int iomux_sync_bell_ring(int sender, const char *path, uint32_t slot) {
  struct sockaddr_un sa;
  socklen_t len;
  int rc = bell_addr(path, &sa, &len);
  if (rc) return rc;
  ssize_t n;
  do n = sendto(sender, &slot, sizeof slot, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&sa, len);
  while (n < 0 && errno == EINTR);
  if (n < 0) return errno == EWOULDBLOCK ? -EAGAIN : -errno;
  assert(n == (ssize_t)sizeof slot);
  return 0;
}

int iomux_sync_bell_drain(int fd) {
  uint32_t buf[16];
  int count = 0;
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n >= 0) {
      count++;
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return count;
    return -errno;
  }
}
