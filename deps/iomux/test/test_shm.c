/*
 * test_shm.c -- the shared-memory hashtable's own tests (TAP), with no Node.
 *
 * Besides the operations: a region with a wrong magic, layout or size; a
 * random workload checked against a model; out of space with and without
 * eviction; a writer killed at every logged step of each kind of write (a
 * step hook raises SIGKILL), and writers SIGKILLed at random moments
 * (IOMUX_SHM_KILLS of them, 500 by default) by their parent, each followed
 * by verify() and reads that must not hang; concurrent readers checking
 * every value they see for tearing.
 */
#define _GNU_SOURCE
#include "iomux_shm.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int g_tests, g_failed, t_failed;
static bool g_valgrind;

#define CHECK(cond, ...)                                   \
  do {                                                     \
    if (!(cond)) {                                         \
      t_failed = 1;                                        \
      printf("#   %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      printf(__VA_ARGS__);                                 \
      printf("\n");                                        \
    }                                                      \
  } while (0)

static void run(const char *name, void (*fn)(void)) {
  const char *only = getenv("IOMUX_TEST_ONLY");
  if (only && !strstr(name, only)) return;
  t_failed = 0;
  uint64_t t0 = iomux_shm_now();
  fn();
  g_tests++;
  if (t_failed) g_failed++;
  printf("%s %d - shm %s (%llu ms)\n", t_failed ? "not ok" : "ok", g_tests, name,
         (unsigned long long)(iomux_shm_now() - t0));
  fflush(stdout);
}

static iomux_shm *make(uint64_t size, uint32_t max_entries, uint64_t ttl, int evict) {
  int fd = iomux_shm_fd_new(NULL, 1);
  if (fd < 0) {
    printf("# fd_new: %s\n", strerror(-fd));
    exit(2);
  }
  iomux_shm_config cfg = {.size = size, .max_entries = max_entries, .default_ttl = ttl, .evict = evict};
  iomux_shm *s;
  char err[200] = "";
  int rc = iomux_shm_create(fd, &cfg, &s, err, sizeof err);
  close(fd);
  if (rc) {
    printf("# create: %s\n", err);
    exit(2);
  }
  return s;
}

static bool verify_ok(iomux_shm *s) {
  char err[300] = "";
  int rc = iomux_shm_verify(s, err, sizeof err);
  if (rc) printf("#   verify: %s\n", err);
  return rc == 0;
}

static int put(iomux_shm *s, const char *k, const char *v, uint64_t ttl) {
  return iomux_shm_put(s, IOMUX_SHM_SET, k, strlen(k), v, strlen(v), IOMUX_SHM_STRING, ttl, 0, NULL);
}

static int get(iomux_shm *s, const char *k, char *out, size_t cap) {
  iomux_shm_item it;
  int rc = iomux_shm_get(s, k, strlen(k), 0, out, cap - 1, &it);
  if (rc == 0) out[it.len < cap - 1 ? it.len : 0] = 0;
  return rc;
}

/* ---- operations --------------------------------------------------------- */

static void test_basic(void) {
  iomux_shm *s = make(1 << 20, 1000, 0, 1);
  char buf[256];
  iomux_shm_item it;
  CHECK(get(s, "a", buf, sizeof buf) == -ENOENT, "empty");
  CHECK(put(s, "a", "one", UINT64_MAX) == 0, "set");
  CHECK(get(s, "a", buf, sizeof buf) == 0 && strcmp(buf, "one") == 0, "got %s", buf);
  CHECK(put(s, "a", "two!", UINT64_MAX) == 0, "overwrite");
  CHECK(get(s, "a", buf, sizeof buf) == 0 && strcmp(buf, "two!") == 0, "got %s", buf);
  CHECK(iomux_shm_put(s, IOMUX_SHM_ADD, "a", 1, "x", 1, 0, 0, 0, &it) == -EEXIST, "add on present");
  CHECK(iomux_shm_put(s, IOMUX_SHM_ADD, "b", 1, "x", 1, 0, 0, 0, &it) == 0, "add on absent");
  CHECK(iomux_shm_put(s, IOMUX_SHM_REPLACE, "c", 1, "x", 1, 0, 0, 0, &it) == -ENOENT, "replace absent");
  CHECK(iomux_shm_put(s, IOMUX_SHM_REPLACE, "b", 1, "yy", 2, 0, 0, 0, &it) == 0, "replace present");
  /* versions */
  CHECK(iomux_shm_get(s, "b", 1, 0, buf, sizeof buf, &it) == 0 && it.len == 2, "get b");
  uint64_t v = it.version;
  CHECK(iomux_shm_put(s, IOMUX_SHM_CAS, "b", 1, "zz", 2, 0, 0, v + 1, &it) == -ESTALE, "cas stale");
  CHECK(iomux_shm_put(s, IOMUX_SHM_CAS, "b", 1, "zz", 2, 0, 0, v, &it) == 0 && it.version > v, "cas");
  CHECK(iomux_shm_put(s, IOMUX_SHM_CAS, "b", 1, "zz", 2, 0, 0, v, &it) == -ESTALE, "cas again");
  /* counters */
  int64_t r = 0;
  CHECK(iomux_shm_incr(s, "n", 1, 5, 10, 0, &r, NULL) == 0 && r == 15, "incr new %lld", (long long)r);
  CHECK(iomux_shm_incr(s, "n", 1, -20, 0, 0, &r, NULL) == 0 && r == -5, "incr %lld", (long long)r);
  CHECK(iomux_shm_incr(s, "a", 1, 1, 0, 0, &r, NULL) == -EDOM, "incr on a string");
  CHECK(iomux_shm_incr(s, "n", 1, INT64_MAX, 0, 0, &r, NULL) == 0, "near overflow");
  CHECK(iomux_shm_incr(s, "n", 1, INT64_MAX, 0, 0, &r, NULL) == -EDOM, "overflow");
  /* delete */
  CHECK(iomux_shm_delete(s, "a", 1) == 0, "delete");
  CHECK(iomux_shm_delete(s, "a", 1) == -ENOENT, "delete again");
  CHECK(get(s, "a", buf, sizeof buf) == -ENOENT, "gone");
  /* a value bigger than the buffer: its length, no copy */
  char big[3000];
  memset(big, 'q', sizeof big);
  CHECK(iomux_shm_put(s, IOMUX_SHM_SET, "big", 3, big, sizeof big, 0, 0, 0, NULL) == 0, "big");
  CHECK(iomux_shm_get(s, "big", 3, 0, buf, sizeof buf, &it) == 0 && it.len == sizeof big, "len %u", it.len);
  /* keys */
  uint32_t cursor = 0;
  char kb[8192];
  size_t n = iomux_shm_keys(s, &cursor, kb, sizeof kb), seen = 0;
  for (size_t p = 0; p < n; seen++) {
    uint16_t kl;
    memcpy(&kl, kb + p, 2);
    p += 2 + kl;
  }
  iomux_shm_stats st;
  iomux_shm_stats_get(s, &st);
  CHECK(seen == 3 && st.entries == 3, "keys %zu entries %llu", seen, (unsigned long long)st.entries);
  CHECK(st.hits >= 4 && st.misses >= 2, "hits %llu misses %llu", (unsigned long long)st.hits,
        (unsigned long long)st.misses);
  /* key limits */
  char longkey[IOMUX_SHM_MAX_KEY + 1];
  memset(longkey, 'k', sizeof longkey);
  CHECK(iomux_shm_put(s, 0, longkey, sizeof longkey, "v", 1, 0, 0, 0, NULL) == -E2BIG, "long key");
  CHECK(iomux_shm_put(s, 0, longkey, IOMUX_SHM_MAX_KEY, "v", 1, 0, 0, 0, NULL) == 0, "longest key");
  CHECK(iomux_shm_put(s, 0, "", 0, "v", 1, 0, 0, 0, NULL) == -EINVAL, "empty key");
  CHECK(verify_ok(s), "verify");
  iomux_shm_clear(s);
  iomux_shm_stats_get(s, &st);
  CHECK(st.entries == 0 && st.bytes_used == 0, "clear");
  CHECK(verify_ok(s), "verify after clear");
  iomux_shm_close(s);
}

static void test_ttl(void) {
  iomux_shm *s = make(1 << 20, 1000, 0, 1);
  char buf[64];
  iomux_shm_item it;
  uint64_t t0 = iomux_shm_now();
  CHECK(put(s, "t", "v", 40) == 0, "set ttl");
  CHECK(put(s, "forever", "v", 0) == 0, "set no ttl");
  int64_t ms = 0;
  /* Under valgrind on a loaded machine the 40 ms can pass before the call: then the entry
   * is gone, and the check is that it went no sooner than its TTL. */
  int rc = iomux_shm_ttl(s, "t", 1, &ms);
  uint64_t elapsed = iomux_shm_now() - t0;
  CHECK(rc == 0 ? ms >= 0 && ms <= 40 && (uint64_t)ms + elapsed + 1 >= 40 : rc == -ENOENT && elapsed >= 40,
        "ttl: rc %d, %lld ms left, %llu ms after the set", rc, (long long)ms, (unsigned long long)elapsed);
  CHECK(iomux_shm_ttl(s, "forever", 7, &ms) == 0 && ms == -1, "ttl %lld", (long long)ms);
  while (get(s, "t", buf, sizeof buf) == 0) usleep(200);
  uint64_t took = iomux_shm_now() - t0;
  CHECK(took >= 40 && took < 1000, "expired after %llu ms", (unsigned long long)took);
  CHECK(iomux_shm_get(s, "t", 1, 1, buf, sizeof buf, &it) == 0 && it.stale && it.ttl <= 0, "stale");
  CHECK(iomux_shm_expire(s, "forever", 7, 20) == 0, "expire");
  CHECK(iomux_shm_expire(s, "t", 1, 20) == -ENOENT, "expire an expired one");
  usleep(30000);
  CHECK(get(s, "forever", buf, sizeof buf) == -ENOENT, "expired by expire()");
  /* an add over an expired entry succeeds */
  CHECK(iomux_shm_put(s, IOMUX_SHM_ADD, "t", 1, "w", 1, 0, 0, 0, NULL) == 0, "add over expired");
  /* many short-lived entries get swept without a read */
  for (int i = 0; i < 200; i++) {
    char k[16];
    snprintf(k, sizeof k, "e%d", i);
    put(s, k, "x", 1);
  }
  usleep(5000);
  uint32_t n = iomux_shm_flush_expired(s, 0);
  iomux_shm_stats st;
  iomux_shm_stats_get(s, &st);
  CHECK(st.entries == 1 && st.expirations >= 200, "flushed %u, %llu left, %llu expirations", n,
        (unsigned long long)st.entries, (unsigned long long)st.expirations);
  CHECK(verify_ok(s), "verify");
  iomux_shm_close(s);
}

/* One flush_expired() call covers the whole heap even when reclaimed entries
 * merge with free blocks the hand already passed (such a merge moves the
 * hand back to the merged block's start, and it passes those bytes again):
 * live entries, expired ones and holes left by deletes interleaved as
 * live, hole, expired, hole, with the hand wherever the writes left it. */
static void test_flush_fragmented(void) {
  iomux_shm *s = make(1 << 20, 8000, 0, 1);
  char k[16];
  int live = 0, short_lived = 0;
  for (int i = 0; i < 4000; i++) {
    snprintf(k, sizeof k, "f%d", i);
    put(s, k, "0123456789abcdef0123456789", i % 4 == 2 ? 1 : 0);
  }
  for (int i = 0; i < 4000; i++) {
    snprintf(k, sizeof k, "f%d", i);
    if (i % 2 == 1)
      CHECK(iomux_shm_delete(s, k, strlen(k)) == 0, "delete %s", k);
    else
      i % 4 == 0 ? live++ : short_lived++;
  }
  usleep(5000);
  uint32_t n = iomux_shm_flush_expired(s, 0);
  iomux_shm_stats st;
  iomux_shm_stats_get(s, &st);
  CHECK(st.entries == (uint64_t)live, "%llu entries left, %d live (flushed %u of %d)",
        (unsigned long long)st.entries, live, n, short_lived);
  CHECK(iomux_shm_flush_expired(s, 0) == 0, "nothing left for a second call");
  CHECK(verify_ok(s), "verify");
  iomux_shm_close(s);
}

/* ---- regions ------------------------------------------------------------ */

static void test_region_errors(void) {
  char err[200];
  iomux_shm *s = make(1 << 20, 100, 0, 1);
  put(s, "k", "v", 0);
  int fd = iomux_shm_fd(s);
  iomux_shm *b = NULL;
  CHECK(iomux_shm_attach(fd, &b, err, sizeof err) == 0, "attach: %s", err);
  char buf[8];
  CHECK(b && get(b, "k", buf, sizeof buf) == 0 && strcmp(buf, "v") == 0, "seen through a second mapping");
  iomux_shm_close(b);
  uint64_t *words = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  CHECK(words != MAP_FAILED, "mmap");
  uint64_t magic = words[0];
  words[0] = 0x1234;
  CHECK(iomux_shm_attach(fd, &b, err, sizeof err) == -EPROTO && strstr(err, "magic"), "bad magic: %s", err);
  words[0] = magic;
  uint32_t *layout = (uint32_t *)&words[1];
  *layout = IOMUX_SHM_LAYOUT + 1;
  CHECK(iomux_shm_attach(fd, &b, err, sizeof err) == -EPROTONOSUPPORT && strstr(err, "version"), "layout: %s", err);
  *layout = IOMUX_SHM_LAYOUT;
  words[2] += 4096; /* the size in the header */
  CHECK(iomux_shm_attach(fd, &b, err, sizeof err) == -EPROTO && strstr(err, "bytes"), "size: %s", err);
  words[2] -= 4096;
  CHECK(iomux_shm_attach(fd, &b, err, sizeof err) == 0, "restored: %s", err);
  iomux_shm_close(b);
  munmap(words, 4096);
  iomux_shm_close(s);
  /* an empty file, a small one */
  int e = iomux_shm_fd_new(NULL, 1);
  CHECK(iomux_shm_attach(e, &b, err, sizeof err) == -EPROTO, "empty: %s", err);
  CHECK(ftruncate(e, 1 << 20) == 0, "ftruncate");
  CHECK(iomux_shm_attach(e, &b, err, sizeof err) == -EPROTO && strstr(err, "magic"), "zeros: %s", err);
  close(e);
  /* bad configurations */
  e = iomux_shm_fd_new(NULL, 1);
  iomux_shm_config cfg = {.size = 1000, .max_entries = 10};
  CHECK(iomux_shm_create(e, &cfg, &b, err, sizeof err) == -EINVAL, "tiny: %s", err);
  cfg.size = 1 << 20;
  cfg.max_entries = 1 << 20;
  CHECK(iomux_shm_create(e, &cfg, &b, err, sizeof err) == -EINVAL, "buckets fill it: %s", err);
  cfg.max_entries = 0;
  CHECK(iomux_shm_create(e, &cfg, &b, err, sizeof err) == -EINVAL, "no entries: %s", err);
  close(e);
  /* named regions: exclusive create, 0600, open, unlink */
  char name[64];
  snprintf(name, sizeof name, "test-shm-%ld", (long)getpid());
  int n1 = iomux_shm_fd_new(name, 1);
  CHECK(n1 >= 0, "named: %s", strerror(-n1));
  CHECK(iomux_shm_fd_new(name, 1) == -EEXIST, "exclusive");
  struct stat sb;
  CHECK(fstat(n1, &sb) == 0 && (sb.st_mode & 0777) == 0600, "mode %o", sb.st_mode & 0777);
  int n2 = iomux_shm_fd_new(name, 0);
  CHECK(n2 >= 0, "open by name");
  CHECK(iomux_shm_unlink(name) == 0, "unlink");
  CHECK(iomux_shm_fd_new(name, 0) == -ENOENT, "gone");
  CHECK(iomux_shm_fd_new("../etc", 0) == -EINVAL, "name with a slash");
  close(n1);
  close(n2);
}

/* ---- a model ---------------------------------------------------------------- */

#define MK 300
static void test_model(void) {
  iomux_shm *s = make(4 << 20, 2000, 0, 0);
  static char model[MK][600];
  static int mlen[MK];
  static int64_t counter[MK];
  static bool is_counter[MK];
  memset(mlen, -1, sizeof mlen);
  for (int i = 0; i < MK; i++) mlen[i] = -1;
  srand(7);
  char key[32], val[600], buf[700];
  for (int op = 0; op < 40000; op++) {
    int k = rand() % MK, what = rand() % 10;
    int kl = snprintf(key, sizeof key, "key-%d", k);
    if (what < 4) {
      int vl = rand() % 590;
      for (int j = 0; j < vl; j++) val[j] = (char)('a' + (op + j) % 26);
      int rc = iomux_shm_put(s, IOMUX_SHM_SET, key, kl, val, vl, IOMUX_SHM_BYTES, 0, 0, NULL);
      CHECK(rc == 0, "set %d", rc);
      memcpy(model[k], val, vl);
      mlen[k] = vl;
      is_counter[k] = false;
    } else if (what < 6) {
      int rc = iomux_shm_delete(s, key, kl);
      CHECK(rc == (mlen[k] >= 0 ? 0 : -ENOENT), "delete %d", rc);
      mlen[k] = -1;
    } else if (what < 7) {
      int64_t r;
      int rc = iomux_shm_incr(s, key, kl, 3, 0, 0, &r, NULL);
      if (mlen[k] >= 0 && !is_counter[k]) {
        CHECK(rc == -EDOM, "incr on bytes %d", rc);
      } else {
        int64_t want = (mlen[k] >= 0 ? counter[k] : 0) + 3;
        CHECK(rc == 0 && r == want, "incr %d %lld %lld", rc, (long long)r, (long long)want);
        counter[k] = want;
        is_counter[k] = true;
        mlen[k] = 8;
      }
    } else {
      iomux_shm_item it;
      int rc = iomux_shm_get(s, key, kl, 0, buf, sizeof buf, &it);
      if (mlen[k] < 0) {
        CHECK(rc == -ENOENT, "get absent %d", rc);
      } else if (is_counter[k]) {
        int64_t v;
        memcpy(&v, buf, 8);
        CHECK(rc == 0 && it.type == IOMUX_SHM_INT64 && v == counter[k], "counter");
      } else {
        CHECK(rc == 0 && (int)it.len == mlen[k] && memcmp(buf, model[k], it.len) == 0, "value of %s", key);
      }
    }
    if (op % 5000 == 0) CHECK(verify_ok(s), "verify at %d", op);
    if (t_failed) break;
  }
  CHECK(verify_ok(s), "verify");
  iomux_shm_close(s);
}

static void test_out_of_space(void) {
  char val[4000];
  memset(val, 'v', sizeof val);
  iomux_shm_item it;
  /* refuse */
  iomux_shm *s = make(256 * 1024, 1000, 0, 0);
  int i, rc = 0;
  for (i = 0; i < 1000; i++) {
    char k[16];
    int kl = snprintf(k, sizeof k, "k%d", i);
    rc = iomux_shm_put(s, IOMUX_SHM_SET, k, kl, val, sizeof val, 0, 0, 0, &it);
    if (rc) break;
  }
  CHECK(rc == -ENOSPC && i > 10, "refused after %d: %d", i, rc);
  char buf[4096];
  CHECK(iomux_shm_get(s, "k0", 2, 0, buf, sizeof buf, &it) == 0, "first still there");
  /* a refused overwrite keeps the old value */
  CHECK(iomux_shm_put(s, IOMUX_SHM_SET, "k0", 2, val, 3 * sizeof val, 0, 0, 0, &it) == -ENOSPC, "refused");
  CHECK(iomux_shm_get(s, "k0", 2, 0, buf, sizeof buf, &it) == 0 && it.len == sizeof val, "k0 kept");
  CHECK(iomux_shm_put(s, IOMUX_SHM_SET, "huge", 4, val, 1 << 20, 0, 0, 0, &it) == -E2BIG, "bigger than the heap");
  CHECK(verify_ok(s), "verify");
  iomux_shm_close(s);
  /* entry limit, refusing */
  s = make(1 << 20, 10, 0, 0);
  for (i = 0; i < 20; i++) {
    char k[16];
    int kl = snprintf(k, sizeof k, "k%d", i);
    rc = iomux_shm_put(s, IOMUX_SHM_SET, k, kl, "v", 1, 0, 0, 0, &it);
    if (rc) break;
  }
  CHECK(rc == -ENOSPC && i == 10, "entry limit at %d", i);
  CHECK(iomux_shm_put(s, IOMUX_SHM_SET, "k3", 2, "w", 1, 0, 0, 0, &it) == 0, "overwrite at the limit");
  iomux_shm_close(s);
  /* evict */
  s = make(256 * 1024, 1000, 0, 1);
  int evicted = 0;
  for (i = 0; i < 2000; i++) {
    char k[16];
    int kl = snprintf(k, sizeof k, "k%d", i);
    rc = iomux_shm_put(s, IOMUX_SHM_SET, k, kl, val, 100 + (i * 37) % 3900, 0, 0, 0, &it);
    CHECK(rc == 0, "set %d: %d", i, rc);
    evicted += it.evicted;
    /* the hot key stays: read it every time */
    if (i % 2 == 0) iomux_shm_get(s, "k5", 2, 0, buf, sizeof buf, &it);
    if (rc) break;
  }
  iomux_shm_stats st;
  iomux_shm_stats_get(s, &st);
  CHECK(evicted > 100 && st.evictions >= (uint64_t)evicted, "evicted %d, stats %llu", evicted,
        (unsigned long long)st.evictions);
  CHECK(iomux_shm_get(s, "k5", 2, 0, buf, sizeof buf, &it) == 0, "a referenced key survives CLOCK");
  CHECK(iomux_shm_get(s, "k1999", 5, 0, buf, sizeof buf, &it) == 0, "the newest is there");
  CHECK(verify_ok(s), "verify");
  /* entry limit, evicting */
  iomux_shm_close(s);
  s = make(1 << 20, 50, 0, 1);
  for (i = 0; i < 500; i++) {
    char k[16];
    int kl = snprintf(k, sizeof k, "k%d", i);
    CHECK(iomux_shm_put(s, IOMUX_SHM_SET, k, kl, "v", 1, 0, 0, 0, &it) == 0, "set");
  }
  iomux_shm_stats_get(s, &st);
  CHECK(st.entries == 50, "entries %llu", (unsigned long long)st.entries);
  CHECK(verify_ok(s), "verify");
  iomux_shm_close(s);
}

/* Per-entry overhead: bytes used minus keys and values, per entry, plus the
 * bucket word and the reference bits. */
static void test_overhead(void) {
  iomux_shm *s = make(8 << 20, 20000, 0, 0);
  char val[100];
  memset(val, 'x', sizeof val);
  int n = 20000;
  for (int i = 0; i < n; i++) {
    char k[17];
    snprintf(k, sizeof k, "%016d", i);
    CHECK(iomux_shm_put(s, IOMUX_SHM_SET, k, 16, val, 100, 0, 0, 0, NULL) == 0, "set");
  }
  iomux_shm_stats st;
  iomux_shm_stats_get(s, &st);
  double per = (double)st.bytes_used / n - 116 + 4.0 * 32768 / n + 116.0 / 128;
  printf("# per-entry overhead, 16-byte keys and 100-byte values: %.1f bytes\n", per);
  CHECK(per <= 64, "overhead %.1f", per);
  iomux_shm_close(s);
}

/* ---- concurrent readers: never a torn value -------------------------------- */

/* A value: key index, length, a checksum over the rest, the rest. */
static size_t make_value(unsigned char *v, uint32_t k, uint32_t seed) {
  size_t len = 16 + (seed * 2654435761u) % 900;
  memcpy(v, &k, 4);
  uint32_t l32 = (uint32_t)len;
  memcpy(v + 4, &l32, 4);
  uint32_t sum = 0;
  for (size_t i = 12; i < len; i++) {
    v[i] = (unsigned char)(seed + i * 7);
    sum = sum * 31 + v[i];
  }
  memcpy(v + 8, &sum, 4);
  return len;
}

static bool value_ok(const unsigned char *v, size_t len, uint32_t k) {
  uint32_t kk, l32, sum, s2 = 0;
  if (len < 12) return false;
  memcpy(&kk, v, 4);
  memcpy(&l32, v + 4, 4);
  memcpy(&sum, v + 8, 4);
  if (kk != k || l32 != len) return false;
  for (size_t i = 12; i < len; i++) s2 = s2 * 31 + v[i];
  return s2 == sum;
}

static void writer_loop(iomux_shm *s, uint32_t seed, int nkeys) {
  unsigned char v[1000];
  for (uint32_t i = 0;; i++) {
    uint32_t r = (seed + i) * 2654435761u;
    uint32_t k = r % (uint32_t)nkeys;
    char key[16];
    int kl = snprintf(key, sizeof key, "k%u", k);
    if ((r >> 8) % 8 == 0) {
      iomux_shm_delete(s, key, kl);
    } else if ((r >> 8) % 8 == 1) {
      int64_t out;
      char ck[16];
      int cl = snprintf(ck, sizeof ck, "c%u", k % 8);
      iomux_shm_incr(s, ck, cl, 1, 0, 0, &out, NULL);
    } else {
      size_t len = make_value(v, k, r);
      iomux_shm_put(s, IOMUX_SHM_SET, key, kl, v, len, 0, (r >> 12) % 4 == 0 ? 5 : 0, 0, NULL);
    }
  }
}

static void test_concurrent_readers(void) {
  iomux_shm *s = make(512 * 1024, 2000, 0, 1);
  pid_t w = fork();
  if (w == 0) {
    writer_loop(s, 1, 500);
    _exit(0);
  }
  unsigned char buf[1000];
  uint64_t end = iomux_shm_now() + (g_valgrind ? 3000 : 1000), reads = 0, hits = 0, torn = 0, late = 0;
  while (iomux_shm_now() < end) {
    for (int i = 0; i < 1000; i++, reads++) {
      uint32_t k = (uint32_t)(reads * 7919) % 500;
      char key[16];
      int kl = snprintf(key, sizeof key, "k%u", k);
      iomux_shm_item it;
      uint64_t before = iomux_shm_now();
      if (iomux_shm_get(s, key, kl, 0, buf, sizeof buf, &it) == 0) {
        hits++;
        if (!value_ok(buf, it.len, k)) torn++;
        if (it.stale || (it.ttl != -1 && it.ttl < 0)) late++;
        (void)before;
      }
    }
  }
  kill(w, SIGKILL);
  waitpid(w, NULL, 0);
  iomux_shm_stats st;
  iomux_shm_stats_get(s, &st);
  printf("# %llu reads, %llu hits, %llu retries, %llu locked, %llu writes\n", (unsigned long long)reads,
         (unsigned long long)hits, (unsigned long long)st.read_retries, (unsigned long long)st.locked_reads,
         (unsigned long long)st.sets);
  CHECK(torn == 0, "%llu torn values", (unsigned long long)torn);
  CHECK(late == 0, "%llu served past their TTL", (unsigned long long)late);
  CHECK(hits > 0 && st.sets > 0, "both sides ran");
  CHECK(verify_ok(s), "verify");
  iomux_shm_close(s);
}

/* ---- killed writers ----------------------------------------------------- */

static long g_step, g_kill_at;
static void kill_hook(void *arg) {
  (void)arg;
  if (++g_step == g_kill_at) raise(SIGKILL);
}

typedef void (*op_fn)(iomux_shm *s);

static void fill(iomux_shm *s, int n, int vl) {
  char val[3000];
  memset(val, 'f', sizeof val);
  for (int i = 0; i < n; i++) {
    char k[16];
    int kl = snprintf(k, sizeof k, "f%d", i);
    iomux_shm_put(s, IOMUX_SHM_SET, k, kl, val, (size_t)vl, 0, 0, 0, NULL);
  }
}
static void op_set_new(iomux_shm *s) { put(s, "new", "a new value", 0); }
static void op_set_replace(iomux_shm *s) { put(s, "f3", "replaced", 0); }
static void op_delete(iomux_shm *s) {
  iomux_shm_delete(s, "f4", 2); /* f3 and f5 free: merges both ways */
}
static void op_evict(iomux_shm *s) {
  char val[20000];
  memset(val, 'e', sizeof val);
  iomux_shm_put(s, IOMUX_SHM_SET, "big", 3, val, sizeof val, 0, 0, 0, NULL);
}
static void op_incr(iomux_shm *s) {
  int64_t r;
  iomux_shm_incr(s, "cnt", 3, 2, 0, 0, &r, NULL);
}
static void op_clear(iomux_shm *s) { iomux_shm_clear(s); }
static void op_sweep(iomux_shm *s) { iomux_shm_flush_expired(s, 0); }

static void kill_steps(const char *what, op_fn prep, op_fn op) {
  int steps_run = 0;
  for (long k = 1; k < 100000; k++) {
    iomux_shm *s = make(256 * 1024, 100, 0, 1);
    fill(s, 40, 3000);
    iomux_shm_delete(s, "f3", 2);
    iomux_shm_delete(s, "f5", 2);
    int64_t r;
    iomux_shm_incr(s, "cnt", 3, 1, 0, 0, &r, NULL);
    put(s, "short", "lived", 1);
    if (prep) prep(s);
    usleep(2000);
    iomux_shm_stats before;
    iomux_shm_stats_get(s, &before);
    fflush(stdout);
    pid_t c = fork();
    if (c == 0) {
      g_step = 0;
      g_kill_at = k;
      iomux_shm_set_step_hook(s, kill_hook, NULL);
      op(s);
      _exit(0);
    }
    int status;
    waitpid(c, &status, 0);
    bool killed = WIFSIGNALED(status);
    steps_run++;
    /* the next locker repairs; every invariant holds; reads work */
    CHECK(verify_ok(s), "%s killed at step %ld", what, k);
    iomux_shm_stats after;
    iomux_shm_stats_get(s, &after);
    if (killed) CHECK(after.repairs == before.repairs + 1, "%s step %ld: repairs %llu", what, k,
                      (unsigned long long)after.repairs);
    char buf[3100];
    iomux_shm_item it;
    CHECK(iomux_shm_get(s, "f0", 2, 0, buf, sizeof buf, &it) == 0 || after.evictions > 0 || op == op_clear,
          "f0 readable");
    int rc = iomux_shm_get(s, "cnt", 3, 0, buf, sizeof buf, &it);
    if (rc == 0) {
      int64_t v;
      memcpy(&v, buf, 8);
      CHECK(v == 1 || v == 3, "%s step %ld: counter %lld (rolled back or done)", what, k, (long long)v);
    }
    put(s, "after", "works", 0);
    CHECK(verify_ok(s), "%s: verify after a write", what);
    iomux_shm_close(s);
    if (!killed || t_failed) break;
  }
  printf("# %s: killed at each of %d steps\n", what, steps_run - 1);
}

static void prep_many(iomux_shm *s) {
  iomux_shm_clear(s);
  for (int i = 0; i < 20; i++) {
    char k[16];
    int kl = snprintf(k, sizeof k, "x%d", i);
    iomux_shm_put(s, IOMUX_SHM_SET, k, kl, "v", 1, 0, 1, 0, NULL);
  }
  fill(s, 2, 100);
  int64_t r;
  iomux_shm_incr(s, "cnt", 3, 1, 0, 0, &r, NULL);
}

static void test_kill_each_step(void) {
  kill_steps("set new", NULL, op_set_new);
  kill_steps("set replace", NULL, op_set_replace);
  kill_steps("delete merging", NULL, op_delete);
  kill_steps("set evicting", NULL, op_evict);
  kill_steps("incr", NULL, op_incr);
  kill_steps("clear", NULL, op_clear);
  kill_steps("sweep", prep_many, op_sweep);
}

static void test_kill_random(void) {
  const char *env = getenv("IOMUX_SHM_KILLS");
  int kills = env ? atoi(env) : (g_valgrind ? 40 : 500);
  iomux_shm *s = make(256 * 1024, 500, 0, 1);
  unsigned seed = 1;
  int mid = 0;
  uint64_t t0 = iomux_shm_now();
  for (int i = 0; i < kills && !t_failed; i++) {
    iomux_shm_stats before;
    iomux_shm_stats_get(s, &before);
    pid_t c = fork();
    if (c == 0) {
      writer_loop(s, (uint32_t)i * 1000003u, 300);
      _exit(0);
    }
    seed = seed * 1103515245u + 12345u;
    usleep(200 + (seed >> 8) % 1500);
    kill(c, SIGKILL);
    waitpid(c, NULL, 0);
    alarm(g_valgrind ? 120 : 20); /* a deadlock bails out */
    CHECK(verify_ok(s), "after kill %d", i);
    unsigned char buf[1000];
    iomux_shm_item it;
    for (uint32_t k = 0; k < 300; k++) {
      char key[16];
      int kl = snprintf(key, sizeof key, "k%u", k);
      if (iomux_shm_get(s, key, kl, 0, buf, sizeof buf, &it) == 0)
        CHECK(value_ok(buf, it.len, k), "kill %d: key %u torn", i, k);
    }
    iomux_shm_stats after;
    iomux_shm_stats_get(s, &after);
    mid += after.repairs > before.repairs;
  }
  alarm(g_valgrind ? 1200 : 300);
  printf("# %d writers SIGKILLed, %d of them holding the lock (repaired), %llu ms\n", kills, mid,
         (unsigned long long)(iomux_shm_now() - t0));
  CHECK(kills < 50 || mid > 0, "no kill landed inside a write");
  iomux_shm_close(s);
}

static void on_alarm(int sig) {
  (void)sig;
  static const char msg[] = "Bail out! shm tests hung (deadlock?)\n";
  ssize_t r = write(1, msg, sizeof msg - 1);
  (void)r;
  _exit(3);
}

int main(void) {
  const char *pre = getenv("LD_PRELOAD");
  g_valgrind = pre && strstr(pre, "vgpreload");
  signal(SIGALRM, on_alarm);
  alarm(g_valgrind ? 1200 : 300);
  run("basic operations", test_basic);
  run("ttl, stale, expire, sweep", test_ttl);
  run("flush_expired: one call covers a fragmented heap", test_flush_fragmented);
  run("region errors: magic, layout, size, names", test_region_errors);
  run("random operations against a model", test_model);
  run("out of space: refuse and evict", test_out_of_space);
  run("overhead per entry", test_overhead);
  run("concurrent reader and writer: nothing torn", test_concurrent_readers);
  run("writer killed at every step of each write", test_kill_each_step);
  run("writers SIGKILLed at random", test_kill_random);
  printf("1..%d\n", g_tests);
  return g_failed ? 1 : 0;
}
