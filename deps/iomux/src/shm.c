/*
 * shm.c -- the shared-memory hashtable (see include/iomux_shm.h).
 *
 * Region layout, every position an offset from the mapping's base:
 *
 *   [header page(s)]  magic, layout, size, geometry; the robust mutex; the
 *                     writers' state (counts, hands, free lists); the undo
 *                     log; the stripes' sequence counters; read counters
 *   [buckets]         u32 offset of the first entry of each chain (0: none)
 *   [reference bits]  one bit per 16-byte granule of the heap (CLOCK)
 *   [heap]            blocks of 16-byte multiples with boundary tags
 *
 * A block starts with u32 size|flags (USED, PREV_USED). A used block is an
 * entry: its 40-byte header, the key, the value. A free block holds its
 * free-list links after the size word and repeats its size in its last
 * word, so a freed neighbour can coalesce backwards. Free blocks sit in
 * segregated lists: one per 16-byte size up to 1 KiB, one per power of two
 * above.
 *
 * Writers (under the mutex) change shared words only through w32/w64,
 * which save the old value in the undo log first; when an operation reaches
 * a consistent state, the log is emptied (a checkpoint). A writer that dies
 * leaves the mutex EOWNERDEAD and the next locker rolls the log back. clear()
 * instead sets an intent flag and is redone from the start by a repair.
 *
 * Readers take no lock: per stripe of buckets, a sequence counter is odd
 * while a writer changes a chain of that stripe or an entry in it, and a
 * reader that saw it change retries. Everything a reader follows is
 * bounds-checked first, because it may be reading a block that a writer is
 * recycling at that moment; only a read that the counter confirms is used.
 */
#define _GNU_SOURCE
#include "iomux_shm.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Robust mutexes: Linux (glibc, musl) and FreeBSD have them; macOS, OpenBSD
 * and NetBSD do not (see the header for what replaces them there). */
#if defined(__linux__) || defined(__FreeBSD__)
#define HAVE_ROBUST 1
#else
#define HAVE_ROBUST 0
#endif

#define NSTRIPES 64
#define NSTATLINES 16
#define NCLASS 88
#define NSMALL 64 /* exact classes: 16 .. 1024 bytes */
#define UNDO_MAX 1024
#define SPIN_ODD 256      /* spins on an odd stripe before taking the lock */
#define SPIN_LOCK 200     /* trylocks on a held mutex before sleeping on it */
#define MAX_RETRIES 64    /* seqlock retries before taking the lock */
#define SWEEP_BLOCKS 4    /* blocks the sweep looks at per write */
#define SWEEP_RECLAIM 2   /* expired entries it reclaims per write */

#define B_USED 1u
#define B_PREV 2u
#define B_SIZE(x) ((x) & ~15u)

typedef struct undo_rec {
  uint32_t off, size;
  uint64_t old;
} undo_rec;

typedef struct entry {
  uint32_t szf;  /* block size | flags */
  uint32_t next; /* chain */
  uint32_t hash;
  uint32_t vlen;
  uint16_t klen;
  uint8_t type;
  uint8_t spare8;
  uint32_t spare32;
  uint64_t expires; /* ms on iomux_shm_now(); 0: never */
  uint64_t version;
} entry; /* the key follows, then the value */

typedef struct fblock {
  uint32_t szf, next, prev;
} fblock;

typedef struct stat_line {
  uint64_t hits, misses, stale, retries, locked;
  char pad[64 - 5 * sizeof(uint64_t)];
} stat_line;

typedef struct stripe {
  uint32_t seq;
  char pad[60];
} stripe;

typedef struct hdr {
  uint64_t magic;
  uint32_t layout, hdr_size;
  uint64_t size;
  uint32_t nbuckets, max_entries;
  uint64_t default_ttl;
  uint32_t evict, buckets_off, refbits_off, heap_off, heap_end, pad0;
  _Alignas(64) pthread_mutex_t lock;
  /* writers' state, under the lock */
  _Alignas(64) uint32_t entries;
  uint32_t clearing;
  uint64_t bytes_used;
  uint32_t clock_hand, sweep_hand;
  uint64_t version;
  uint64_t sets, deletes, evictions, expirations, contention, repairs;
  uint32_t free_head[NCLASS];
  uint32_t undo_n, pad1;
  undo_rec undo[UNDO_MAX];
  _Alignas(64) stripe stripes[NSTRIPES];
  _Alignas(64) stat_line stats[NSTATLINES];
} hdr;

struct iomux_shm {
  char *base;
  hdr *h;
  uint64_t size;
  int fd;
  uint32_t mask;
  stat_line *mine; /* this process's read counters */
  void (*hook)(void *);
  void *hook_arg;
};

/* ---- small helpers -------------------------------------------------------- */

static void errf(char *buf, size_t len, const char *fmt, ...) {
  if (!buf || !len) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, len, fmt, ap);
  va_end(ap);
}

uint64_t iomux_shm_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A 32-bit hash of the key (multiply-xorshift over 8-byte words). */
static uint32_t hash_key(const void *key, size_t n) {
  const unsigned char *p = key;
  uint64_t h = 0x9e3779b97f4a7c15ull ^ ((uint64_t)n * 0x100000001b3ull);
  while (n >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdull;
    h ^= h >> 31;
    p += 8;
    n -= 8;
  }
  uint64_t w = 0;
  memcpy(&w, p, n);
  h = (h ^ w ^ (uint64_t)n << 56) * 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 29;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 32;
  return (uint32_t)h;
}

static inline uint32_t ld32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline uint64_t ld64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }

static inline entry *E(iomux_shm *s, uint32_t off) { return (entry *)(void *)(s->base + off); }
static inline fblock *F(iomux_shm *s, uint32_t off) { return (fblock *)(void *)(s->base + off); }
static inline uint32_t *bucket(iomux_shm *s, uint32_t b) {
  return (uint32_t *)(void *)(s->base + s->h->buckets_off) + b;
}
static inline stripe *stripe_of(iomux_shm *s, uint32_t hash) {
  return &s->h->stripes[(hash & s->mask) % NSTRIPES];
}
static inline unsigned char *ekey(entry *e) { return (unsigned char *)(e + 1); }

/* ---- the undo log ------------------------------------------------------- */

static void barrier(void) { __atomic_signal_fence(__ATOMIC_SEQ_CST); }

static void log_word(iomux_shm *s, void *p, uint32_t size) {
  hdr *h = s->h;
  assert(h->undo_n < UNDO_MAX);
  if (h->undo_n >= UNDO_MAX) abort();
  undo_rec *r = &h->undo[h->undo_n];
  r->off = (uint32_t)((char *)p - s->base);
  r->size = size;
  r->old = 0;
  memcpy(&r->old, p, size);
  barrier(); /* the record is complete before it counts */
  h->undo_n++;
  barrier(); /* and counts before the word changes */
}

static void step(iomux_shm *s) {
  if (s->hook) s->hook(s->hook_arg);
}

static void w32(iomux_shm *s, uint32_t *p, uint32_t v) {
  log_word(s, p, 4);
  __atomic_store_n(p, v, __ATOMIC_RELAXED);
  step(s);
}

static void w64(iomux_shm *s, uint64_t *p, uint64_t v) {
  log_word(s, p, 8);
  __atomic_store_n(p, v, __ATOMIC_RELAXED);
  step(s);
}

/* Unaligned 64-bit word (a counter's value after its key). */
static void w64u(iomux_shm *s, void *p, uint64_t v) {
  log_word(s, p, 8);
  memcpy(p, &v, 8);
  step(s);
}

static void checkpoint(iomux_shm *s) {
  barrier();
  s->h->undo_n = 0;
  barrier();
}

static void rollback(iomux_shm *s) {
  hdr *h = s->h;
  uint32_t n = h->undo_n;
  if (n > UNDO_MAX) n = UNDO_MAX; /* never: a torn count stays in bounds */
  while (n-- > 0) {
    undo_rec *r = &h->undo[n];
    /* only words writers log: the writers' state in the header, the rest */
    bool state = r->off >= offsetof(hdr, entries) && r->off + r->size <= offsetof(hdr, undo_n);
    if (r->size > 8 || (uint64_t)r->off + r->size > s->size || (!state && r->off < h->hdr_size)) continue;
    memcpy(s->base + r->off, &r->old, r->size);
  }
  h->undo_n = 0;
}

/* ---- stripes ------------------------------------------------------------ */

static void seq_begin(stripe *st) {
  uint32_t v = st->seq;
  assert(!(v & 1));
  __atomic_store_n(&st->seq, v + 1, __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_RELEASE);
}

static void seq_end(stripe *st) {
  uint32_t v = st->seq;
  assert(v & 1);
  __atomic_store_n(&st->seq, v + 1, __ATOMIC_RELEASE);
}

/* ---- the lock ------------------------------------------------------------- */

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

static void do_clear(iomux_shm *s);

__attribute__((unused)) static void repair(iomux_shm *s) {
  hdr *h = s->h;
  if (h->clearing)
    do_clear(s);
  else
    rollback(s);
  for (int i = 0; i < NSTRIPES; i++)
    if (h->stripes[i].seq & 1) __atomic_store_n(&h->stripes[i].seq, h->stripes[i].seq + 1, __ATOMIC_RELEASE);
  h->undo_n = 0;
  h->repairs++;
}

static int lock(iomux_shm *s) {
  hdr *h = s->h;
  int rc = pthread_mutex_trylock(&h->lock);
  bool contended = false;
  if (rc == EBUSY) {
    /* Critical sections are short: spin a little while the holder runs
     * before sleeping in the kernel (a futex wait and wake cost
     * microseconds; robust mutexes cannot be glibc's adaptive kind). */
    contended = true;
    for (int i = 0; i < SPIN_LOCK && rc == EBUSY; i++) {
      cpu_relax();
      rc = pthread_mutex_trylock(&h->lock);
    }
    while (rc == EBUSY || rc == EINTR) rc = pthread_mutex_lock(&h->lock);
  }
#if HAVE_ROBUST
  if (rc == EOWNERDEAD) {
    repair(s);
    pthread_mutex_consistent(&h->lock);
    rc = 0;
  }
#endif
  if (rc != 0) return -rc;
  if (contended) h->contention++;
  /* A locked region never carries a log: a holder that died was repaired
   * above, a holder that returned emptied it. */
  assert(h->undo_n == 0 && !h->clearing);
  return 0;
}

static void unlock(iomux_shm *s) {
  checkpoint(s);
  pthread_mutex_unlock(&s->h->lock);
}

/* ---- the allocator ---------------------------------------------------------- */

static uint32_t class_of(uint32_t size) {
  if (size <= 1024) return size / 16 - 1;
  uint32_t c = NSMALL + (uint32_t)(31 - __builtin_clz(size)) - 10;
  return c < NCLASS ? c : NCLASS - 1;
}

static void set_footer(iomux_shm *s, uint32_t off, uint32_t size) {
  w32(s, (uint32_t *)(void *)(s->base + off + size - 4), size);
}

static void fl_push(iomux_shm *s, uint32_t off, uint32_t size) {
  hdr *h = s->h;
  uint32_t c = class_of(size);
  fblock *b = F(s, off);
  uint32_t head = h->free_head[c];
  w32(s, &b->next, head);
  w32(s, &b->prev, 0);
  if (head) w32(s, &F(s, head)->prev, off);
  w32(s, &h->free_head[c], off);
}

static void fl_remove(iomux_shm *s, uint32_t off) {
  hdr *h = s->h;
  fblock *b = F(s, off);
  uint32_t c = class_of(B_SIZE(b->szf));
  if (b->prev)
    w32(s, &F(s, b->prev)->next, b->next);
  else {
    assert(h->free_head[c] == off);
    w32(s, &h->free_head[c], b->next);
  }
  if (b->next) w32(s, &F(s, b->next)->prev, b->prev);
}

/* A block of exactly `need` bytes (a multiple of 16), or 0. */
static uint32_t heap_alloc(iomux_shm *s, uint32_t need) {
  hdr *h = s->h;
  uint32_t c = class_of(need), off = 0;
  if (c >= NSMALL) { /* first fit within the class, a few probes */
    uint32_t o = h->free_head[c];
    for (int probes = 0; o && probes < 32; probes++, o = F(s, o)->next)
      if (B_SIZE(F(s, o)->szf) >= need) {
        off = o;
        break;
      }
    c++;
  }
  for (; !off && c < NCLASS; c++) off = h->free_head[c];
  if (!off) return 0;
  fblock *b = F(s, off);
  uint32_t size = B_SIZE(b->szf), prev = b->szf & B_PREV;
  assert(size >= need && !(b->szf & B_USED));
  fl_remove(s, off);
  /* the words of the free block that the entry's bytes will overwrite
   * without the log: its old footer */
  log_word(s, s->base + off + size - 4, 4);
  if (size - need >= 16) {
    uint32_t r = off + need, rs = size - need;
    w32(s, &F(s, r)->szf, rs | B_PREV);
    set_footer(s, r, rs);
    fl_push(s, r, rs);
    w32(s, &b->szf, need | B_USED | prev);
  } else {
    w32(s, &b->szf, size | B_USED | prev);
    uint32_t n = off + size;
    if (n < h->heap_end) w32(s, &F(s, n)->szf, F(s, n)->szf | B_PREV);
  }
  w64(s, &h->bytes_used, h->bytes_used + B_SIZE(b->szf));
  return off;
}

static void heap_free(iomux_shm *s, uint32_t off) {
  hdr *h = s->h;
  fblock *b = F(s, off);
  uint32_t size = B_SIZE(b->szf), prev = b->szf & B_PREV;
  assert(b->szf & B_USED);
  w64(s, &h->bytes_used, h->bytes_used - size);
  uint32_t n = off + size;
  if (n < h->heap_end && !(F(s, n)->szf & B_USED)) {
    size += B_SIZE(F(s, n)->szf);
    fl_remove(s, n);
  }
  if (!prev) {
    uint32_t psize = *(uint32_t *)(void *)(s->base + off - 4);
    uint32_t p = off - psize;
    assert(p >= h->heap_off && !(F(s, p)->szf & B_USED) && B_SIZE(F(s, p)->szf) == psize);
    fl_remove(s, p);
    prev = F(s, p)->szf & B_PREV;
    off = p;
    size += psize;
  }
  w32(s, &F(s, off)->szf, size | prev);
  set_footer(s, off, size);
  fl_push(s, off, size);
  n = off + size;
  if (n < h->heap_end) w32(s, &F(s, n)->szf, F(s, n)->szf & ~B_PREV);
  /* a hand inside the merged block moves to its start */
  if (h->clock_hand > off && h->clock_hand < off + size) w32(s, &h->clock_hand, off);
  if (h->sweep_hand > off && h->sweep_hand < off + size) w32(s, &h->sweep_hand, off);
}

/* ---- reference bits (CLOCK) ----------------------------------------------- */

static inline uint64_t *refword(iomux_shm *s, uint32_t off, uint64_t *bit) {
  uint32_t g = (off - s->h->heap_off) / 16;
  *bit = 1ull << (g & 63);
  return (uint64_t *)(void *)(s->base + s->h->refbits_off) + g / 64;
}

static void ref_set(iomux_shm *s, uint32_t off) {
  uint64_t bit, *w = refword(s, off, &bit);
  if (!(__atomic_load_n(w, __ATOMIC_RELAXED) & bit)) __atomic_fetch_or(w, bit, __ATOMIC_RELAXED);
}

static bool ref_take(iomux_shm *s, uint32_t off) {
  uint64_t bit, *w = refword(s, off, &bit);
  if (!(__atomic_load_n(w, __ATOMIC_RELAXED) & bit)) return false;
  __atomic_fetch_and(w, ~bit, __ATOMIC_RELAXED);
  return true;
}

/* ---- entries (writers) ------------------------------------------------- */

static inline bool expired(const entry *e, uint64_t now) { return e->expires && e->expires <= now; }

/* The link that points at the entry for key (bucket word or a predecessor's
 * next), and the entry's offset (0 when absent). */
static uint32_t *find(iomux_shm *s, const void *key, size_t klen, uint32_t hash, uint32_t *out) {
  uint32_t *link = bucket(s, hash & s->mask);
  for (uint32_t off = *link; off; link = &E(s, off)->next, off = *link) {
    entry *e = E(s, off);
    if (e->hash == hash && e->klen == klen && memcmp(ekey(e), key, klen) == 0) {
      *out = off;
      return link;
    }
  }
  *out = 0;
  return link;
}

static uint32_t *link_of(iomux_shm *s, uint32_t off) {
  uint32_t *link = bucket(s, E(s, off)->hash & s->mask);
  while (*link && *link != off) link = &E(s, *link)->next;
  assert(*link == off);
  return link;
}

/* Removes an entry from its chain and frees it. */
static void unlink_entry(iomux_shm *s, uint32_t *link, uint32_t off) {
  hdr *h = s->h;
  entry *e = E(s, off);
  stripe *st = stripe_of(s, e->hash);
  seq_begin(st);
  w32(s, link, e->next);
  seq_end(st);
  w32(s, &h->entries, h->entries - 1);
  heap_free(s, off);
}

/* The block after off, or heap_off when off is the last. */
static uint32_t next_block(iomux_shm *s, uint32_t off) {
  uint32_t n = off + B_SIZE(F(s, off)->szf);
  return n >= s->h->heap_end ? s->h->heap_off : n;
}

/* Reclaims expired entries, a few blocks per call, and never more than one
 * turn of the hand over the heap. The turn ends when the hand has wrapped
 * and reached its starting address again: a count of the bytes passed would
 * end it early, since a free that merges with a free block already passed
 * moves the hand back to the merged block's start, and that block is passed
 * (and counted) again. The hand's old position is logged once per run of
 * blocks it passes over (a position any rollback can return to: it is a
 * block start until something is freed, and every free is followed by a
 * checkpoint and a new log record). */
static uint32_t sweep(iomux_shm *s, uint64_t now, uint32_t blocks, uint32_t max) {
  hdr *h = s->h;
  uint32_t done = 0;
  const uint32_t start = h->sweep_hand;
  bool wrapped = false;
  log_word(s, &h->sweep_hand, 4);
  for (uint32_t i = 0; i < blocks && done < max; i++) {
    uint32_t off = h->sweep_hand;
    if (wrapped && off >= start) break;
    uint32_t nx = next_block(s, off);
    if (nx <= off) wrapped = true;
    entry *e = E(s, off);
    if ((e->szf & B_USED) && expired(e, now)) {
      w32(s, &h->sweep_hand, nx); /* before the free, which may merge nx */
      unlink_entry(s, link_of(s, off), off);
      h->expirations++;
      done++;
      checkpoint(s);
      log_word(s, &h->sweep_hand, 4);
    } else {
      h->sweep_hand = nx;
      step(s);
    }
  }
  checkpoint(s);
  return done;
}

/* One step of CLOCK: frees one entry (an expired one, or a live one not
 * referenced since the hand last passed), or returns false when two whole
 * turns found nothing. *live counts live evictions. */
static bool evict_one(iomux_shm *s, uint64_t now, int *live) {
  hdr *h = s->h;
  uint64_t walked = 0, limit = 2ull * (h->heap_end - h->heap_off);
  while (walked < limit) {
    uint32_t off = h->clock_hand;
    uint32_t size = B_SIZE(F(s, off)->szf);
    uint32_t nx = next_block(s, off);
    walked += size;
    entry *e = E(s, off);
    if (!(e->szf & B_USED) || (!expired(e, now) && ref_take(s, off))) {
      w32(s, &h->clock_hand, nx);
      checkpoint(s);
      continue;
    }
    bool was_live = !expired(e, now);
    w32(s, &h->clock_hand, nx);
    unlink_entry(s, link_of(s, off), off);
    if (was_live) {
      h->evictions++;
      (*live)++;
    } else {
      h->expirations++;
    }
    checkpoint(s);
    return true;
  }
  return false;
}

static uint32_t block_need(size_t klen, size_t vlen) {
  uint64_t n = (uint64_t)IOMUX_SHM_ENTRY_HEADER + klen + vlen;
  n = (n + 15) & ~15ull;
  return n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
}

/* The deadline of a write with ttl: counted from the current millisecond
 * rounded up, so an entry lives at least ttl ms (reads compare the rounded
 * down millisecond): expiry is never early, at most 1 ms late. */
static uint64_t expiry(iomux_shm *s, uint64_t ttl, uint64_t now) {
  (void)now;
  if (ttl == UINT64_MAX) ttl = s->h->default_ttl;
  if (!ttl) return 0;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + ((uint64_t)ts.tv_nsec + 999999u) / 1000000u + ttl;
}

static void fill_item(iomux_shm_item *item, const entry *e, uint64_t now) {
  if (!item) return;
  item->version = e->version;
  item->ttl = !e->expires ? -1 : expired(e, now) ? (int64_t)e->expires - (int64_t)now : (int64_t)(e->expires - now - 1);
  item->len = e->vlen;
  item->type = e->type;
  item->stale = expired(e, now);
}

/* The body of every write: the lock is held. */
static int put_locked(iomux_shm *s, int mode, const void *key, size_t klen, const void *val,
                      size_t vlen, uint8_t type, uint64_t ttl, uint64_t version,
                      iomux_shm_item *item, uint64_t now) {
  hdr *h = s->h;
  uint32_t hash = hash_key(key, klen), old;
  int live = 0;
  uint32_t need = block_need(klen, vlen);
  if (need > h->heap_end - h->heap_off) return -E2BIG;
  sweep(s, now, SWEEP_BLOCKS, SWEEP_RECLAIM);

  uint32_t *link = find(s, key, klen, hash, &old);
  if (old && expired(E(s, old), now)) { /* lazily reclaimed */
    unlink_entry(s, link, old);
    h->expirations++;
    checkpoint(s);
    old = 0;
  }
  if (mode == IOMUX_SHM_ADD && old) {
    fill_item(item, E(s, old), now);
    return -EEXIST;
  }
  if ((mode == IOMUX_SHM_REPLACE || mode == IOMUX_SHM_CAS) && !old) return -ENOENT;
  if (mode == IOMUX_SHM_CAS && E(s, old)->version != version) {
    fill_item(item, E(s, old), now);
    return -ESTALE;
  }
  /* room: an entry slot, then bytes */
  while (!old && h->entries >= h->max_entries) {
    if (!h->evict || !evict_one(s, now, &live)) return -ENOSPC;
  }
  uint32_t off;
  while (!(off = heap_alloc(s, need))) {
    if (!h->evict) return -ENOSPC;
    if (!evict_one(s, now, &live)) return -ENOSPC;
  }
  /* the key may have been evicted or reclaimed meanwhile */
  link = find(s, key, klen, hash, &old);
  if (!old && (mode == IOMUX_SHM_REPLACE || mode == IOMUX_SHM_CAS)) {
    heap_free(s, off);
    checkpoint(s);
    return -ENOENT;
  }
  entry *e = E(s, off);
  w32(s, &e->hash, hash);
  w32(s, &e->vlen, (uint32_t)vlen);
  uint32_t kt = (uint32_t)klen | (uint32_t)type << 16;
  w32(s, (uint32_t *)(void *)&e->klen, kt);
  w32(s, &e->spare32, 0);
  w64(s, &e->expires, expiry(s, ttl, now));
  w64(s, &h->version, h->version + 1);
  w64(s, &e->version, h->version);
  memcpy(ekey(e), key, klen);
  if (vlen) memcpy(ekey(e) + klen, val, vlen);
  /* New entries start unreferenced: the hand takes entries nobody read
   * before those that were read since it last passed (a bit left by the
   * block's previous tenant is cleared). */
  ref_take(s, off);
  stripe *st = stripe_of(s, hash);
  seq_begin(st);
  w32(s, &e->next, old ? E(s, old)->next : *link);
  w32(s, link, off);
  seq_end(st);
  if (old) {
    heap_free(s, old); /* out of the chain: the new entry took its place */
  } else {
    w32(s, &h->entries, h->entries + 1);
  }
  h->sets++;
  fill_item(item, e, now);
  if (item) item->evicted = live > 0;
  checkpoint(s);
  return 0;
}

/* ---- public operations -------------------------------------------------- */

int iomux_shm_put(iomux_shm *s, int mode, const void *key, size_t klen, const void *val,
                  size_t vlen, uint8_t type, uint64_t ttl, uint64_t version,
                  iomux_shm_item *item) {
  if (klen == 0 || klen > IOMUX_SHM_MAX_KEY) return klen ? -E2BIG : -EINVAL;
  if (vlen > UINT32_MAX) return -E2BIG;
  if (mode < IOMUX_SHM_SET || mode > IOMUX_SHM_CAS) return -EINVAL;
  if (item) memset(item, 0, sizeof *item);
  int rc = lock(s);
  if (rc) return rc;
  rc = put_locked(s, mode, key, klen, val, vlen, type, ttl, version, item, iomux_shm_now());
  unlock(s);
  return rc;
}

int iomux_shm_delete(iomux_shm *s, const void *key, size_t klen) {
  if (klen == 0 || klen > IOMUX_SHM_MAX_KEY) return klen ? -E2BIG : -EINVAL;
  int rc = lock(s);
  if (rc) return rc;
  uint64_t now = iomux_shm_now();
  uint32_t off, *link = find(s, key, klen, hash_key(key, klen), &off);
  if (off) {
    bool was_live = !expired(E(s, off), now);
    unlink_entry(s, link, off);
    if (was_live) s->h->deletes++;
    else s->h->expirations++;
    rc = was_live ? 0 : -ENOENT;
  } else {
    rc = -ENOENT;
  }
  checkpoint(s);
  sweep(s, now, SWEEP_BLOCKS, SWEEP_RECLAIM);
  unlock(s);
  return rc;
}

int iomux_shm_incr(iomux_shm *s, const void *key, size_t klen, int64_t by, int64_t initial,
                   uint64_t ttl, int64_t *result, iomux_shm_item *item) {
  if (klen == 0 || klen > IOMUX_SHM_MAX_KEY) return klen ? -E2BIG : -EINVAL;
  if (item) memset(item, 0, sizeof *item);
  int rc = lock(s);
  if (rc) return rc;
  uint64_t now = iomux_shm_now();
  uint32_t hash = hash_key(key, klen), off;
  find(s, key, klen, hash, &off);
  if (off && !expired(E(s, off), now)) {
    entry *e = E(s, off);
    if (e->type != IOMUX_SHM_INT64 || e->vlen != 8) {
      unlock(s);
      return -EDOM;
    }
    int64_t v, nv;
    memcpy(&v, ekey(e) + e->klen, 8);
    if (__builtin_add_overflow(v, by, &nv)) {
      unlock(s);
      return -EDOM;
    }
    stripe *st = stripe_of(s, hash);
    seq_begin(st);
    w64u(s, ekey(e) + e->klen, (uint64_t)nv);
    w64(s, &s->h->version, s->h->version + 1);
    w64(s, &e->version, s->h->version);
    seq_end(st);
    ref_set(s, off);
    fill_item(item, e, now);
    *result = nv;
    rc = 0;
  } else {
    int64_t nv;
    if (__builtin_add_overflow(initial, by, &nv)) {
      unlock(s);
      return -EDOM;
    }
    rc = put_locked(s, IOMUX_SHM_SET, key, klen, &nv, 8, IOMUX_SHM_INT64, ttl, 0, item, now);
    if (rc == 0) *result = nv;
  }
  unlock(s);
  return rc;
}

int iomux_shm_ttl(iomux_shm *s, const void *key, size_t klen, int64_t *ms) {
  iomux_shm_item it;
  int rc = iomux_shm_get(s, key, klen, 0, NULL, 0, &it);
  if (rc == 0) *ms = it.ttl;
  return rc;
}

int iomux_shm_expire(iomux_shm *s, const void *key, size_t klen, uint64_t ttl) {
  if (klen == 0 || klen > IOMUX_SHM_MAX_KEY) return klen ? -E2BIG : -EINVAL;
  int rc = lock(s);
  if (rc) return rc;
  uint64_t now = iomux_shm_now();
  uint32_t hash = hash_key(key, klen), off;
  find(s, key, klen, hash, &off);
  if (off && !expired(E(s, off), now)) {
    stripe *st = stripe_of(s, hash);
    seq_begin(st);
    w64(s, &E(s, off)->expires, expiry(s, ttl, now));
    seq_end(st);
    rc = 0;
  } else {
    rc = -ENOENT;
  }
  unlock(s);
  return rc;
}

/* Idempotent: a repair after a death inside it runs it again whole. */
static void do_clear(iomux_shm *s) {
  hdr *h = s->h;
  h->clearing = 1;
  barrier();
  for (int i = 0; i < NSTRIPES; i++)
    if (!(h->stripes[i].seq & 1)) __atomic_store_n(&h->stripes[i].seq, h->stripes[i].seq + 1, __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_RELEASE);
  step(s);
  memset(s->base + h->buckets_off, 0, (size_t)h->nbuckets * 4);
  step(s);
  memset(s->base + h->refbits_off, 0, h->heap_off - h->refbits_off);
  memset(h->free_head, 0, sizeof h->free_head);
  step(s);
  uint32_t size = h->heap_end - h->heap_off;
  fblock *b = F(s, h->heap_off);
  b->szf = size | B_PREV;
  b->next = b->prev = 0;
  *(uint32_t *)(void *)(s->base + h->heap_end - 4) = size;
  h->free_head[class_of(size)] = h->heap_off;
  h->entries = 0;
  h->bytes_used = 0;
  h->clock_hand = h->sweep_hand = h->heap_off;
  step(s);
  h->undo_n = 0;
  __atomic_thread_fence(__ATOMIC_RELEASE);
  for (int i = 0; i < NSTRIPES; i++)
    if (h->stripes[i].seq & 1) __atomic_store_n(&h->stripes[i].seq, h->stripes[i].seq + 1, __ATOMIC_RELEASE);
  barrier();
  h->clearing = 0;
  barrier();
}

void iomux_shm_clear(iomux_shm *s) {
  if (lock(s)) return;
  do_clear(s);
  unlock(s);
}

uint32_t iomux_shm_flush_expired(iomux_shm *s, uint32_t max) {
  if (lock(s)) return 0;
  hdr *h = s->h;
  /* one turn of the hand (sweep() ends it); the block bound only guards the
   * loop: blocks are >= 16 bytes, and each reclaimed one may be passed once
   * more as part of the free block it merged into */
  uint64_t bound = 2ull * ((h->heap_end - h->heap_off) / 16) + 2;
  uint32_t n = sweep(s, iomux_shm_now(), bound > UINT32_MAX ? UINT32_MAX : (uint32_t)bound, max ? max : UINT32_MAX);
  unlock(s);
  return n;
}

/* ---- reads -------------------------------------------------------------- */

/* One attempt at a read; in unlocked mode the result is only good when the
 * stripe did not change. Returns the entry's offset or 0. */
static uint32_t read_entry(iomux_shm *s, const void *key, size_t klen, uint32_t hash,
                           void *dst, size_t cap, iomux_shm_item *it) {
  hdr *h = s->h;
  uint32_t off = ld32(bucket(s, hash & s->mask));
  uint32_t heap_off = h->heap_off, heap_end = h->heap_end;
  for (uint32_t steps = 0; off && steps <= h->max_entries; steps++) {
    if (off < heap_off || off > heap_end - IOMUX_SHM_ENTRY_HEADER || ((off - heap_off) & 15)) return 0;
    entry *e = E(s, off);
    uint32_t eh = ld32(&e->hash);
    uint32_t kt = ld32((uint32_t *)(void *)&e->klen);
    if (eh == hash && (kt & 0xffff) == klen) {
      uint32_t vlen = ld32(&e->vlen);
      if ((uint64_t)off + IOMUX_SHM_ENTRY_HEADER + klen + vlen > heap_end) return 0;
      if (memcmp(ekey(e), key, klen) == 0) {
        it->len = vlen;
        it->type = (uint8_t)(kt >> 16);
        it->version = ld64(&e->version);
        uint64_t exp = ld64(&e->expires);
        it->ttl = (int64_t)exp; /* the caller turns it into ms left */
        if (dst && vlen <= cap) memcpy(dst, ekey(e) + klen, vlen);
        return off;
      }
    }
    off = ld32(&e->next);
  }
  return 0;
}

int iomux_shm_get(iomux_shm *s, const void *key, size_t klen, int stale, void *dst, size_t cap,
                  iomux_shm_item *item) {
  memset(item, 0, sizeof *item);
  if (klen == 0 || klen > IOMUX_SHM_MAX_KEY) return -ENOENT;
  uint32_t hash = hash_key(key, klen), off = 0;
  stripe *st = stripe_of(s, hash);
  stat_line *sl = s->mine;
  bool done = false;
  for (int attempt = 0, spins = 0; attempt < MAX_RETRIES;) {
    uint32_t s1 = __atomic_load_n(&st->seq, __ATOMIC_ACQUIRE);
    if (s1 & 1) {
      if (++spins > SPIN_ODD) break;
      if (spins > 16) sched_yield();
      continue;
    }
    off = read_entry(s, key, klen, hash, dst, cap, item);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(&st->seq, __ATOMIC_RELAXED) == s1) {
      done = true;
      break;
    }
    attempt++;
    __atomic_fetch_add(&sl->retries, 1, __ATOMIC_RELAXED);
  }
  if (!done) { /* a writer is slow or dead in this stripe: take the lock */
    if (lock(s)) return -ENOENT;
    memset(item, 0, sizeof *item);
    off = read_entry(s, key, klen, hash, dst, cap, item);
    unlock(s);
    __atomic_fetch_add(&sl->locked, 1, __ATOMIC_RELAXED);
  }
  if (!off) {
    __atomic_fetch_add(&sl->misses, 1, __ATOMIC_RELAXED);
    memset(item, 0, sizeof *item);
    return -ENOENT;
  }
  uint64_t exp = (uint64_t)item->ttl;
  uint64_t now = exp ? iomux_shm_now() : 0; /* no deadline: no clock read */
  item->stale = exp && exp <= now;
  /* whole ms left, rounded down (the deadline is a rounded-up ms) */
  item->ttl = !exp ? -1 : item->stale ? (int64_t)exp - (int64_t)now : (int64_t)(exp - now - 1);
  if (item->stale && !stale) {
    __atomic_fetch_add(&sl->misses, 1, __ATOMIC_RELAXED);
    memset(item, 0, sizeof *item);
    return -ENOENT;
  }
  ref_set(s, off);
  __atomic_fetch_add(item->stale ? &sl->stale : &sl->hits, 1, __ATOMIC_RELAXED);
  return 0;
}

size_t iomux_shm_keys(iomux_shm *s, uint32_t *cursor, void *buf, size_t cap) {
  size_t used = 0;
  if (lock(s)) {
    *cursor = s->h->nbuckets;
    return 0;
  }
  hdr *h = s->h;
  uint64_t now = iomux_shm_now();
  unsigned char *out = buf;
  uint32_t b = *cursor;
  for (; b < h->nbuckets; b++) {
    size_t need = 0;
    for (uint32_t off = *bucket(s, b); off; off = E(s, off)->next) need += 2 + E(s, off)->klen;
    if (used + need > cap && used > 0) break;
    for (uint32_t off = *bucket(s, b); off; off = E(s, off)->next) {
      entry *e = E(s, off);
      if (expired(e, now) || used + 2 + e->klen > cap) continue;
      uint16_t kl = e->klen;
      memcpy(out + used, &kl, 2);
      memcpy(out + used + 2, ekey(e), kl);
      used += 2 + kl;
    }
  }
  *cursor = b;
  unlock(s);
  return used;
}

void iomux_shm_stats_get(iomux_shm *s, iomux_shm_stats *st) {
  memset(st, 0, sizeof *st);
  hdr *h = s->h;
  for (int i = 0; i < NSTATLINES; i++) {
    st->hits += ld64(&h->stats[i].hits);
    st->misses += ld64(&h->stats[i].misses);
    st->stale_hits += ld64(&h->stats[i].stale);
    st->read_retries += ld64(&h->stats[i].retries);
    st->locked_reads += ld64(&h->stats[i].locked);
  }
  if (lock(s)) return;
  st->size = h->size;
  st->heap_size = h->heap_end - h->heap_off;
  st->entries = h->entries;
  st->max_entries = h->max_entries;
  st->bytes_used = h->bytes_used;
  st->bytes_free = st->heap_size - h->bytes_used;
  st->sets = h->sets;
  st->deletes = h->deletes;
  st->evictions = h->evictions;
  st->expirations = h->expirations;
  st->contention = h->contention;
  st->repairs = h->repairs;
  unlock(s);
}

/* ---- verify ------------------------------------------------------------- */

#define BAD(...)                         \
  do {                                   \
    errf(errbuf, errlen, __VA_ARGS__);   \
    rc = -EUCLEAN;                       \
    goto out;                            \
  } while (0)

int iomux_shm_verify(iomux_shm *s, char *errbuf, size_t errlen) {
  int rc = lock(s);
  if (rc) {
    errf(errbuf, errlen, "lock: %s", strerror(-rc));
    return rc;
  }
  hdr *h = s->h;
  uint32_t granules = (h->heap_end - h->heap_off) / 16;
  unsigned char *mark = calloc(granules, 1); /* 1 free start, 2 used start, 3 seen in a chain */
  if (!mark) {
    unlock(s);
    return -ENOMEM;
  }
  uint64_t used_bytes = 0, free_blocks = 0, used_blocks = 0;
  uint32_t prev_used = 1, prev_free = 0;
  bool hands_ok[2] = {false, false};
  rc = 0;
  if (h->undo_n != 0) BAD("undo log holds %u records under the lock", h->undo_n);
  for (int i = 0; i < NSTRIPES; i++)
    if (h->stripes[i].seq & 1) BAD("stripe %d is odd under the lock", i);
  for (uint32_t off = h->heap_off; off < h->heap_end;) {
    uint32_t szf = F(s, off)->szf, size = B_SIZE(szf);
    if (size < 16 || off + size > h->heap_end || off + size < off)
      BAD("block at %u: size %u leaves the heap", off, size);
    if (!!(szf & B_PREV) != !!prev_used) BAD("block at %u: PREV_USED bit is wrong", off);
    if (off == h->clock_hand) hands_ok[0] = true;
    if (off == h->sweep_hand) hands_ok[1] = true;
    if (szf & B_USED) {
      entry *e = E(s, off);
      mark[(off - h->heap_off) / 16] = 2;
      if (e->klen == 0 || e->klen > IOMUX_SHM_MAX_KEY) BAD("entry at %u: key length %u", off, e->klen);
      if ((uint64_t)IOMUX_SHM_ENTRY_HEADER + e->klen + e->vlen > size)
        BAD("entry at %u: key and value (%u+%u) overflow its block of %u", off, e->klen, e->vlen, size);
      if (block_need(e->klen, e->vlen) != size && size - block_need(e->klen, e->vlen) >= 16)
        BAD("entry at %u: block of %u for %u bytes was not split", off, size, block_need(e->klen, e->vlen));
      if (hash_key(ekey(e), e->klen) != e->hash) BAD("entry at %u: stored hash is not its key's", off);
      if (e->type > IOMUX_SHM_INT64) BAD("entry at %u: type %u", off, e->type);
      if (e->type == IOMUX_SHM_INT64 && e->vlen != 8) BAD("entry at %u: counter of %u bytes", off, e->vlen);
      if (e->version > h->version) BAD("entry at %u: version from the future", off);
      used_bytes += size;
      used_blocks++;
      prev_used = 1;
      prev_free = 0;
    } else {
      fblock *b = F(s, off);
      mark[(off - h->heap_off) / 16] = 1;
      if (prev_free) BAD("free blocks at %u and before it were not merged", off);
      if (*(uint32_t *)(void *)(s->base + off + size - 4) != size) BAD("free block at %u: footer differs", off);
      if (b->next && (b->next < h->heap_off || b->next >= h->heap_end)) BAD("free block at %u: next out of heap", off);
      free_blocks++;
      prev_used = 0;
      prev_free = 1;
    }
    off += size;
  }
  if (!hands_ok[0] || !hands_ok[1]) BAD("a hand (clock %u, sweep %u) is not at a block", h->clock_hand, h->sweep_hand);
  if (used_bytes != h->bytes_used) BAD("bytes used %llu, blocks add up to %llu",
                                       (unsigned long long)h->bytes_used, (unsigned long long)used_bytes);
  if (used_blocks != h->entries) BAD("entries %u, used blocks %llu", h->entries, (unsigned long long)used_blocks);
  if (h->entries > h->max_entries) BAD("entries %u above the maximum %u", h->entries, h->max_entries);
  /* free lists: each free block once, in its class, links both ways */
  uint64_t listed = 0;
  for (uint32_t c = 0; c < NCLASS; c++) {
    uint32_t prev = 0;
    for (uint32_t off = h->free_head[c]; off; prev = off, off = F(s, off)->next) {
      if (off < h->heap_off || off >= h->heap_end || ((off - h->heap_off) & 15)) BAD("free list %u: offset %u", c, off);
      unsigned char *m = &mark[(off - h->heap_off) / 16];
      if (*m != 1) BAD("free list %u: %u is not a free block or is listed twice", c, off);
      *m = 4;
      if (class_of(B_SIZE(F(s, off)->szf)) != c) BAD("free block at %u is in class %u", off, c);
      if (F(s, off)->prev != prev) BAD("free block at %u: prev link %u, expected %u", off, F(s, off)->prev, prev);
      listed++;
    }
  }
  if (listed != free_blocks) BAD("%llu free blocks, %llu on the lists", (unsigned long long)free_blocks,
                                 (unsigned long long)listed);
  /* chains: every entry once, in its bucket */
  uint64_t chained = 0;
  for (uint32_t b = 0; b < h->nbuckets; b++) {
    for (uint32_t off = *bucket(s, b); off; off = E(s, off)->next) {
      if (off < h->heap_off || off >= h->heap_end || ((off - h->heap_off) & 15)) BAD("bucket %u: offset %u", b, off);
      unsigned char *m = &mark[(off - h->heap_off) / 16];
      if (*m != 2) BAD("bucket %u: %u is not an entry or is chained twice", b, off);
      *m = 3;
      if ((E(s, off)->hash & s->mask) != b) BAD("entry at %u is in bucket %u, its hash says %u", off, b,
                                               E(s, off)->hash & s->mask);
      chained++;
    }
  }
  if (chained != h->entries) BAD("%u entries, %llu in the chains", h->entries, (unsigned long long)chained);
out:
  free(mark);
  unlock(s);
  return rc;
}

/* ---- regions ------------------------------------------------------------ */

static int shm_name(char *buf, size_t len, const char *name) {
  size_t n = strlen(name);
  if (n == 0 || n > 200) return -EINVAL;
  for (size_t i = 0; i < n; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
          c == '_' || c == '.'))
      return -EINVAL;
  }
  snprintf(buf, len, "/iomux-%lu-%s", (unsigned long)geteuid(), name);
  return 0;
}

int iomux_shm_fd_new(const char *name, int create) {
  char path[256];
  int fd;
  if (name) {
    int rc = shm_name(path, sizeof path, name);
    if (rc) return rc;
    do fd = shm_open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT | O_EXCL : 0), 0600);
    while (fd < 0 && errno == EINTR);
    return fd < 0 ? -errno : fd;
  }
#ifdef __linux__
  fd = memfd_create("iomux-shm", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd >= 0) return fd;
  if (errno != ENOSYS) return -errno;
#endif
  for (int tries = 0; tries < 16; tries++) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    /* short: macOS limits these names to 31 bytes */
    snprintf(path, sizeof path, "/iomux.%lx.%lx.%x", (unsigned long)getpid(), (unsigned long)ts.tv_nsec,
             (unsigned)tries);
    fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
      shm_unlink(path);
      return fd;
    }
    if (errno != EEXIST && errno != EINTR) return -errno;
  }
  return -EEXIST;
}

int iomux_shm_unlink(const char *name) {
  char path[256];
  int rc = shm_name(path, sizeof path, name);
  if (rc) return rc;
  return shm_unlink(path) == 0 ? 0 : -errno;
}

static iomux_shm *handle_new(int fd, void *base, uint64_t size) {
  iomux_shm *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->base = base;
  s->h = base;
  s->size = size;
  s->fd = fd;
  s->mask = s->h->nbuckets - 1;
  s->mine = &s->h->stats[(uint32_t)getpid() % NSTATLINES];
  return s;
}

int iomux_shm_create(int fd0, const iomux_shm_config *cfg, iomux_shm **out, char *errbuf, size_t errlen) {
  *out = NULL;
  uint64_t size = cfg->size & ~4095ull;
  if (cfg->size < IOMUX_SHM_MIN_SIZE || cfg->size > IOMUX_SHM_MAX_SIZE) {
    errf(errbuf, errlen, "size must be between %u and %llu bytes", IOMUX_SHM_MIN_SIZE,
         (unsigned long long)IOMUX_SHM_MAX_SIZE);
    return -EINVAL;
  }
  if (cfg->max_entries < 1 || cfg->max_entries > (1u << 30)) {
    errf(errbuf, errlen, "maxEntries must be between 1 and 2^30");
    return -EINVAL;
  }
  uint32_t nb = 16;
  while (nb < cfg->max_entries) nb <<= 1;
  uint64_t hdr_size = (sizeof(hdr) + 4095) & ~4095ull;
  uint64_t avail = size - hdr_size - (uint64_t)nb * 4;
  if ((uint64_t)nb * 4 + hdr_size + 4096 > size) {
    errf(errbuf, errlen, "size %llu leaves no heap for %u entries", (unsigned long long)size, cfg->max_entries);
    return -EINVAL;
  }
  /* heap and its reference bits (one bit per 16 bytes): heap * 129/128 */
  uint64_t heap = ((avail - 128) * 128 / 129) & ~1023ull;
  uint64_t refbytes = heap / 128;
  if (heap < 4096) {
    errf(errbuf, errlen, "size %llu leaves no heap for %u entries", (unsigned long long)size, cfg->max_entries);
    return -EINVAL;
  }
  int fd = fcntl(fd0, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) {
    errf(errbuf, errlen, "dup: %s", strerror(errno));
    return -errno;
  }
  int rc;
  (void)fchmod(fd, 0600); /* memfds start 0777; shm objects (0600 already) may refuse it */
  if (ftruncate(fd, (off_t)size) < 0) {
    rc = -errno;
    errf(errbuf, errlen, "sizing the region: %s", strerror(errno));
    close(fd);
    return rc;
  }
#ifdef F_ADD_SEALS
  /* attachers can trust the size: nobody can shrink it under them */
  (void)fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
#endif
  void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    rc = -errno;
    errf(errbuf, errlen, "mmap: %s", strerror(errno));
    close(fd);
    return rc;
  }
  hdr *h = base;
  memset(h, 0, sizeof *h);
  h->layout = IOMUX_SHM_LAYOUT;
  h->hdr_size = (uint32_t)hdr_size;
  h->size = size;
  h->nbuckets = nb;
  h->max_entries = cfg->max_entries;
  h->default_ttl = cfg->default_ttl;
  h->evict = cfg->evict ? 1 : 0;
  h->buckets_off = (uint32_t)hdr_size;
  h->refbits_off = (uint32_t)(hdr_size + (uint64_t)nb * 4);
  h->heap_off = (uint32_t)((h->refbits_off + refbytes + 15) & ~15ull);
  h->heap_end = (uint32_t)(h->heap_off + heap);
  assert(h->heap_end <= size);
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
#if HAVE_ROBUST
  pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
#endif
  rc = pthread_mutex_init(&h->lock, &a);
  pthread_mutexattr_destroy(&a);
  if (rc) {
    errf(errbuf, errlen, "pthread_mutex_init: %s", strerror(rc));
    munmap(base, size);
    close(fd);
    return -rc;
  }
  iomux_shm *s = handle_new(fd, base, size);
  if (!s) {
    munmap(base, size);
    close(fd);
    return -ENOMEM;
  }
  do_clear(s);
  __atomic_store_n(&h->magic, IOMUX_SHM_MAGIC, __ATOMIC_RELEASE); /* last */
  *out = s;
  return 0;
}

int iomux_shm_attach(int fd0, iomux_shm **out, char *errbuf, size_t errlen) {
  *out = NULL;
  struct stat st;
  if (fstat(fd0, &st) < 0) {
    errf(errbuf, errlen, "fstat: %s", strerror(errno));
    return -errno;
  }
  if (st.st_uid != geteuid()) {
    errf(errbuf, errlen, "the region belongs to uid %lu, not to this process's %lu", (unsigned long)st.st_uid,
         (unsigned long)geteuid());
    return -EACCES;
  }
  if ((uint64_t)st.st_size < sizeof(hdr)) {
    errf(errbuf, errlen, "not an iomux shared cache: %lld bytes, smaller than its header", (long long)st.st_size);
    return -EPROTO;
  }
  uint64_t size = (uint64_t)st.st_size;
  if (size > IOMUX_SHM_MAX_SIZE) {
    errf(errbuf, errlen, "not an iomux shared cache: %llu bytes", (unsigned long long)size);
    return -EPROTO;
  }
  int fd = fcntl(fd0, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) {
    errf(errbuf, errlen, "dup: %s", strerror(errno));
    return -errno;
  }
  void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    int rc = -errno;
    errf(errbuf, errlen, "mmap: %s", strerror(errno));
    close(fd);
    return rc;
  }
  hdr *h = base;
  int rc = -EPROTO;
  uint64_t magic = __atomic_load_n(&h->magic, __ATOMIC_ACQUIRE);
  if (magic != IOMUX_SHM_MAGIC) {
    errf(errbuf, errlen, "not an iomux shared cache (magic %016llx, expected %016llx)", (unsigned long long)magic,
         (unsigned long long)IOMUX_SHM_MAGIC);
  } else if (h->layout != IOMUX_SHM_LAYOUT) {
    errf(errbuf, errlen, "shared cache layout version %u, this build reads version %u", h->layout, IOMUX_SHM_LAYOUT);
    rc = -EPROTONOSUPPORT;
  } else if (h->size != size) {
    errf(errbuf, errlen, "shared cache header says %llu bytes, the region has %llu", (unsigned long long)h->size,
         (unsigned long long)size);
  } else if (h->hdr_size < sizeof(hdr) || h->nbuckets == 0 || (h->nbuckets & (h->nbuckets - 1)) ||
             h->buckets_off != h->hdr_size || h->refbits_off != h->buckets_off + (uint64_t)h->nbuckets * 4 ||
             h->heap_off < h->refbits_off || (h->heap_off & 15) || h->heap_end > size ||
             h->heap_end <= h->heap_off || ((h->heap_end - h->heap_off) & 15) ||
             (uint64_t)(h->heap_end - h->heap_off) / 128 > h->heap_off - h->refbits_off) {
    errf(errbuf, errlen, "shared cache header is inconsistent");
  } else {
    rc = 0;
  }
  if (rc) {
    munmap(base, size);
    close(fd);
    return rc;
  }
  iomux_shm *s = handle_new(fd, base, size);
  if (!s) {
    munmap(base, size);
    close(fd);
    return -ENOMEM;
  }
  *out = s;
  return 0;
}

void iomux_shm_close(iomux_shm *s) {
  if (!s) return;
  munmap(s->base, s->size);
  close(s->fd);
  free(s);
}

int iomux_shm_fd(const iomux_shm *s) { return s->fd; }

void iomux_shm_config_get(const iomux_shm *s, iomux_shm_config *cfg) {
  cfg->size = s->h->size;
  cfg->max_entries = s->h->max_entries;
  cfg->default_ttl = s->h->default_ttl;
  cfg->evict = (int)s->h->evict;
}

void iomux_shm_set_step_hook(iomux_shm *s, void (*fn)(void *), void *arg) {
  s->hook = fn;
  s->hook_arg = arg;
}
