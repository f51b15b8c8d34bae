/*
 * iomux_shm.h -- a hashtable in shared memory, for every process and thread
 * that maps the same region: TTLs, CLOCK eviction, robust locks.
 *
 * A region is one fd (memfd_create on Linux, shm_open elsewhere or when it
 * has a name) mapped MAP_SHARED. Its first page is a versioned header
 * (magic, layout version, size); attaching to a region of another layout or
 * size fails with an error message and never touches the rest.
 *
 * Concurrency: one process-shared robust mutex serialises writers; readers
 * take no lock, they validate against a sequence counter per stripe of
 * buckets (a seqlock) and retry, and fall back to the mutex when a writer
 * holds a stripe odd for long (a writer that died there). Every word a
 * writer changes in the table or the allocator is first saved in an undo log
 * in the header; a writer killed at any instruction leaves the mutex in
 * EOWNERDEAD, and the next locker rolls the log back, evens the stripes,
 * counts a repair and marks the mutex consistent. Where the platform has no
 * robust mutexes (macOS, OpenBSD, NetBSD), the mutex is a plain
 * process-shared one, and a holder that dies leaves it held: there, a
 * supervisor must restart the group that maps the region.
 *
 * Offsets, never pointers, are stored in the region: each process maps it at
 * its own address. Offsets are 32-bit, so a region is at most 4 GiB - 64 KiB.
 */
#ifndef IOMUX_SHM_H
#define IOMUX_SHM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define IOMUX_SHM_MAGIC 0x4d485358554d4f49ull /* "IOMUXSHM" little-endian */
#define IOMUX_SHM_LAYOUT 1
#define IOMUX_SHM_MAX_KEY 4096
#define IOMUX_SHM_MIN_SIZE (256 * 1024)
#define IOMUX_SHM_MAX_SIZE 0xFFFF0000ull
#define IOMUX_SHM_ENTRY_HEADER 40 /* bytes per entry besides key and value */

/* Value type tags, stored with each entry (the binding's encodings). */
enum {
  IOMUX_SHM_BYTES = 0,
  IOMUX_SHM_STRING = 1,
  IOMUX_SHM_STRUCTURED = 2,
  IOMUX_SHM_INT64 = 3 /* counters: 8 bytes, little-endian two's complement */
};

/* Results besides 0: negative errno values.
 *   -ENOENT  no live entry          -EEXIST  add() on a live entry
 *   -ENOSPC  full (evict off, or nothing left to evict)
 *   -E2BIG   key or value too large -EINVAL  bad argument
 *   -ESTALE  compareAndSet: another version
 *   -EDOM    incr on a value that is not a counter, or overflow */

typedef struct iomux_shm iomux_shm;

typedef struct iomux_shm_config {
  uint64_t size;        /* bytes of the whole region */
  uint32_t max_entries; /* the table's capacity in entries */
  uint64_t default_ttl; /* ms; 0: never expires */
  int evict;            /* non-zero: evict with CLOCK when full */
} iomux_shm_config;

typedef struct iomux_shm_item {
  uint64_t version;
  int64_t ttl;      /* ms left; -1: never expires; <= 0 with stale: expired */
  uint32_t len;     /* the value's length (also when it did not fit) */
  uint8_t type;
  uint8_t stale;    /* getStale: the entry has expired */
  uint8_t evicted;  /* set/add/...: live entries were evicted to make room */
} iomux_shm_item;

typedef struct iomux_shm_stats {
  uint64_t size, heap_size, entries, max_entries, bytes_used, bytes_free;
  uint64_t hits, misses, stale_hits, sets, deletes, evictions, expirations;
  uint64_t contention, read_retries, locked_reads, repairs;
} iomux_shm_stats;

/* Regions. iomux_shm_fd_new: an unnamed region's fd (memfd_create, or
 * shm_open of a random name, unlinked at once); name != NULL: a named one
 * (shm_open of "/iomux-<uid>-<name>", mode 0600, O_EXCL when create). The
 * fd is close-on-exec. Returns the fd or -errno. */
int iomux_shm_fd_new(const char *name, int create);
int iomux_shm_unlink(const char *name);

/* Formats the region on fd (sizes it, writes the header last) and maps it;
 * attach maps an existing one. errbuf receives a message on failure. The
 * handle keeps its own dup of fd. */
int iomux_shm_create(int fd, const iomux_shm_config *cfg, iomux_shm **out,
                     char *errbuf, size_t errlen);
int iomux_shm_attach(int fd, iomux_shm **out, char *errbuf, size_t errlen);
void iomux_shm_close(iomux_shm *shm);
int iomux_shm_fd(const iomux_shm *shm);
void iomux_shm_config_get(const iomux_shm *shm, iomux_shm_config *cfg);

/* Milliseconds on the clock every process shares (CLOCK_MONOTONIC). */
uint64_t iomux_shm_now(void);

/* get: copies the value into dst when it fits in cap (item->len tells its
 * length either way; retry with a larger buffer when len > cap). stale != 0
 * also returns an expired entry, flagged. Returns 0 or -ENOENT. */
int iomux_shm_get(iomux_shm *shm, const void *key, size_t klen, int stale,
                  void *dst, size_t cap, iomux_shm_item *item);

/* Write modes */
enum {
  IOMUX_SHM_SET = 0,     /* always */
  IOMUX_SHM_ADD = 1,     /* only when absent (or expired) */
  IOMUX_SHM_REPLACE = 2, /* only when present */
  IOMUX_SHM_CAS = 3      /* only when present with version `version` */
};
/* ttl: ms, 0 never, UINT64_MAX the region's default. item (may be NULL)
 * receives the new version and whether live entries were evicted. */
int iomux_shm_put(iomux_shm *shm, int mode, const void *key, size_t klen,
                  const void *val, size_t vlen, uint8_t type, uint64_t ttl,
                  uint64_t version, iomux_shm_item *item);
int iomux_shm_delete(iomux_shm *shm, const void *key, size_t klen);
/* Adds by to a counter; creates it as initial + by with ttl when absent. */
int iomux_shm_incr(iomux_shm *shm, const void *key, size_t klen, int64_t by,
                   int64_t initial, uint64_t ttl, int64_t *result,
                   iomux_shm_item *item);
/* ttl: 0 when present (*ms = ms left, -1 never), -ENOENT */
int iomux_shm_ttl(iomux_shm *shm, const void *key, size_t klen, int64_t *ms);
int iomux_shm_expire(iomux_shm *shm, const void *key, size_t klen, uint64_t ttl);
void iomux_shm_clear(iomux_shm *shm);
/* Reclaims up to max expired entries, scanning at most a whole pass of the
 * heap; returns how many. */
uint32_t iomux_shm_flush_expired(iomux_shm *shm, uint32_t max);
/* Keys of live entries from bucket *cursor on: each key as a u16 length
 * then its bytes, into buf while they fit. *cursor moves on; it is the
 * bucket count when the walk is over. Returns the bytes used. */
size_t iomux_shm_keys(iomux_shm *shm, uint32_t *cursor, void *buf, size_t cap);
void iomux_shm_stats_get(iomux_shm *shm, iomux_shm_stats *st);
/* Walks the whole structure under the lock; 0 when every invariant holds,
 * else -EUCLEAN (message in errbuf) or -ENOMEM. */
int iomux_shm_verify(iomux_shm *shm, char *errbuf, size_t errlen);

/* Test hook: calls fn(arg) after every logged word a writer changes, so a
 * test can kill the writer at each step. NULL to clear. */
void iomux_shm_set_step_hook(iomux_shm *shm, void (*fn)(void *), void *arg);

#ifdef __cplusplus
}
#endif

#endif
