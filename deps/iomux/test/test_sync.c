/*
 * test_sync.c -- the sync region's own tests (TAP): layouts, header checks
 * on attach, and two processes doing atomics on their own mappings of one
 * region (including one SIGKILLed while it holds a CAS lock word).
 */
#define _GNU_SOURCE
#include "iomux_sync.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int g_tests, g_failed;

#define CHECK(cond, ...)                                            \
  do {                                                              \
    g_tests++;                                                      \
    if (!(cond)) {                                                  \
      g_failed++;                                                   \
      printf("not ok %d - %s:%d: %s: ", g_tests, __FILE__, __LINE__, #cond); \
      printf(__VA_ARGS__);                                          \
      printf("\n");                                                 \
    } else {                                                        \
      printf("ok %d - %s\n", g_tests, #cond);                       \
    }                                                               \
  } while (0)

static void test_layouts(void) {
  iomux_sync_layout ok = {256, 64, 4096};
  size_t n = iomux_sync_size(&ok);
  CHECK(n >= 64 + 256 * 64 + 64 * 256 * 4 + 256 * 2 * 4096, "size %zu", n);
  iomux_sync_layout bad[] = {{0, 1, 8}, {1, 0, 8}, {1, 1, 4}, {1, 1, 12}, {IOMUX_SYNC_MAX_SLOTS + 1, 1, 8},
                             {1, IOMUX_SYNC_MAX_ROWS + 1, 8}, {1, 1, IOMUX_SYNC_MAX_VALUE + 8}, {65536, 4096, 1u << 16}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) CHECK(iomux_sync_size(&bad[i]) == 0, "layout %zu accepted", i);
  int fd;
  void *base;
  size_t size;
  CHECK(iomux_sync_create(&bad[0], &fd, &base, &size) == -EINVAL, "create with a bad layout");
}

static void test_attach_checks(void) {
  iomux_sync_layout l = {16, 4, 64};
  int fd;
  void *base, *b2;
  size_t size, s2;
  char err[128] = "";
  CHECK(iomux_sync_create(&l, &fd, &base, &size) == 0, "create");
  CHECK(iomux_sync_attach(fd, &b2, &s2, err, sizeof err) == 0, "attach: %s", err);
  CHECK(s2 == size && b2 != base, "second mapping");
  uint32_t *h = (uint32_t *)base;
  /* the same memory through both mappings */
  __atomic_store_n(&h[100], 42u, __ATOMIC_SEQ_CST);
  CHECK(__atomic_load_n(&((uint32_t *)b2)[100], __ATOMIC_SEQ_CST) == 42u, "shared");
  iomux_sync_unmap(b2, s2);
  h[IOMUX_SYNC_H_VERSION] = 9;
  CHECK(iomux_sync_attach(fd, &b2, &s2, err, sizeof err) == -EPROTO && strstr(err, "version"), "version: %s", err);
  h[IOMUX_SYNC_H_VERSION] = IOMUX_SYNC_VERSION;
  h[IOMUX_SYNC_H_NSLOTS] = 17;
  CHECK(iomux_sync_attach(fd, &b2, &s2, err, sizeof err) == -EPROTO && strstr(err, "layout"), "layout: %s", err);
  h[IOMUX_SYNC_H_NSLOTS] = 16;
  h[IOMUX_SYNC_H_MAGIC] = 1;
  CHECK(iomux_sync_attach(fd, &b2, &s2, err, sizeof err) == -EPROTO && strstr(err, "magic"), "magic: %s", err);
  iomux_sync_unmap(base, size);
  CHECK(ftruncate(fd, 10) == 0, "truncate");
  CHECK(iomux_sync_attach(fd, &b2, &s2, err, sizeof err) == -EPROTO && strstr(err, "size"), "short: %s", err);
  close(fd);
  CHECK(iomux_sync_attach(fd, &b2, &s2, err, sizeof err) == -EBADF, "closed fd");
}

/* two processes add to one word through their own mappings; then a child
 * takes a CAS lock word and is SIGKILLed: the parent sees its id and clears it */
static void test_two_processes(void) {
  iomux_sync_layout l = {8, 2, 8};
  int fd;
  void *base;
  size_t size;
  char err[128];
  CHECK(iomux_sync_create(&l, &fd, &base, &size) == 0, "create");
  uint32_t *w = (uint32_t *)base + IOMUX_SYNC_HEADER / 4;
  enum { N = 200000 };
  pid_t pid = fork();
  if (pid == 0) {
    void *b;
    size_t s;
    if (iomux_sync_attach(fd, &b, &s, err, sizeof err)) _exit(3);
    uint32_t *cw = (uint32_t *)b + IOMUX_SYNC_HEADER / 4;
    for (int i = 0; i < N; i++) __atomic_fetch_add(&cw[0], 1, __ATOMIC_SEQ_CST);
    uint32_t zero = 0;
    __atomic_compare_exchange_n(&cw[1], &zero, (uint32_t)getpid(), 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    for (;;) pause();
  }
  for (int i = 0; i < N; i++) __atomic_fetch_add(&w[0], 1, __ATOMIC_SEQ_CST);
  while (__atomic_load_n(&w[1], __ATOMIC_SEQ_CST) == 0) usleep(100);
  kill(pid, SIGKILL);
  int st;
  waitpid(pid, &st, 0);
  CHECK(WIFSIGNALED(st), "child killed");
  CHECK(__atomic_load_n(&w[0], __ATOMIC_SEQ_CST) == 2 * N, "sum %u", w[0]);
  uint32_t holder = (uint32_t)pid;
  CHECK(__atomic_compare_exchange_n(&w[1], &holder, 0, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST), "dead holder cleared");
  iomux_sync_unmap(base, size);
  close(fd);
}

/* Life locks: a live holder times the wait out; its SIGKILL or its exit ends
 * the wait; the lock is reusable afterwards. */
static void test_lives(void) {
  iomux_sync_layout l = {4, 3, 8};
  int fd;
  void *base;
  size_t size;
  CHECK(iomux_sync_create(&l, &fd, &base, &size) == 0, "create");
  CHECK(iomux_sync_life_init(base, 3) == -EINVAL && iomux_sync_life_hold(base, 3) == -EINVAL &&
        iomux_sync_life_wait(base, 3, 1) == -EINVAL, "row out of range");
  CHECK(iomux_sync_life_init(base, 1) == 0, "init");
  for (int how = 0; how < 2; how++) {
    int pfd[2];
    CHECK(pipe(pfd) == 0, "pipe");
    pid_t pid = fork();
    if (pid == 0) {
      char c = (char)(iomux_sync_life_hold(base, 1) == 0 ? 'y' : 'n');
      if (write(pfd[1], &c, 1) != 1) _exit(2);
      if (how == 1) _exit(0); /* a clean exit releases it too */
      for (;;) pause();
    }
    char c = 0;
    CHECK(read(pfd[0], &c, 1) == 1 && c == 'y', "the child holds it");
    close(pfd[0]);
    close(pfd[1]);
    if (how == 0) {
      CHECK(iomux_sync_life_hold(base, 1) == -EBUSY, "held: a second hold fails");
      CHECK(iomux_sync_life_wait(base, 1, 30) == 0, "alive: the wait times out");
      kill(pid, SIGKILL);
    }
    CHECK(iomux_sync_life_wait(base, 1, 5000) == 1, "%s: the wait ends", how ? "exit" : "SIGKILL");
    waitpid(pid, NULL, 0);
    CHECK(iomux_sync_life_wait(base, 1, 1) == 1, "free afterwards");
  }
  CHECK(iomux_sync_life_init(base, 1) == 0 && iomux_sync_life_hold(base, 1) == 0, "re-init and hold");
  iomux_sync_unmap(base, size);
  close(fd);
}

/* Doorbells: errors, a stale path, a full queue, and a ping-pong of rings
 * between two processes waiting in poll(). */
static void test_bells(void) {
  char dir[] = "/tmp/iomux-bell-XXXXXX";
  CHECK(mkdtemp(dir) != NULL, "mkdtemp");
  char a[128], b[128], longp[200];
  snprintf(a, sizeof a, "%s/a", dir);
  snprintf(b, sizeof b, "%s/b", dir);
  memset(longp, 'x', sizeof longp - 1);
  longp[0] = '/';
  longp[sizeof longp - 1] = 0;
  CHECK(iomux_sync_bell_open(longp) == -ENAMETOOLONG, "long path refused");
  CHECK(iomux_sync_bell_open("") == -EINVAL, "empty path refused");
  int s = iomux_sync_bell_sender();
  CHECK(s >= 0, "sender %d", s);
  CHECK(iomux_sync_bell_ring(s, longp, 1) == -ENAMETOOLONG, "ring: long path refused");
  CHECK(iomux_sync_bell_ring(s, a, 1) == -ENOENT, "ring with nobody there");
  int fa = iomux_sync_bell_open(a);
  CHECK(fa >= 0, "open a %d", fa);
  struct stat st;
  CHECK(stat(a, &st) == 0 && (st.st_mode & 0777) == 0600, "bell mode %o", st.st_mode & 0777);
  CHECK(iomux_sync_bell_drain(fa) == 0, "nothing to drain");
  CHECK(iomux_sync_bell_ring(s, a, 7) == 0, "ring");
  CHECK(iomux_sync_bell_ring(s, a, 8) == 0, "ring again");
  CHECK(iomux_sync_bell_drain(fa) == 2, "two rings drained");
  /* a full queue: EAGAIN, never a block */
  int rc = 0, sent = 0;
  while (sent < 100000 && (rc = iomux_sync_bell_ring(s, a, 1)) == 0) sent++;
  CHECK(rc == -EAGAIN && sent > 0, "full queue: %d after %d rings", rc, sent);
  CHECK(iomux_sync_bell_drain(fa) == sent, "drained the full queue");
  /* a bell reopened at the same path replaces the stale file */
  int fa2 = iomux_sync_bell_open(a);
  CHECK(fa2 >= 0, "reopen over the old file");
  CHECK(iomux_sync_bell_ring(s, a, 1) == 0 && iomux_sync_bell_drain(fa2) == 1, "the new bell rings");
  CHECK(iomux_sync_bell_drain(fa) == 0, "the old one does not");
  close(fa);
  close(fa2);
  CHECK(iomux_sync_bell_ring(s, a, 1) == -ECONNREFUSED, "stale file: %d", iomux_sync_bell_ring(s, a, 1));
  /* ping-pong between two processes */
  enum { ROUNDS = 2000 };
  int fb = iomux_sync_bell_open(b);
  fa = iomux_sync_bell_open(a);
  pid_t pid = fork();
  if (pid == 0) {
    int cs = iomux_sync_bell_sender();
    for (int i = 0; i < ROUNDS; i++) {
      struct pollfd p = {fb, POLLIN, 0};
      if (poll(&p, 1, 5000) != 1 || iomux_sync_bell_drain(fb) < 1) _exit(2);
      if (iomux_sync_bell_ring(cs, a, (uint32_t)i)) _exit(3);
    }
    _exit(0);
  }
  int got = 0;
  for (int i = 0; i < ROUNDS; i++) {
    if (iomux_sync_bell_ring(s, b, (uint32_t)i)) break;
    struct pollfd p = {fa, POLLIN, 0};
    if (poll(&p, 1, 5000) != 1) break;
    got += iomux_sync_bell_drain(fa);
  }
  int wst = 0;
  waitpid(pid, &wst, 0);
  CHECK(got == ROUNDS && WIFEXITED(wst) && WEXITSTATUS(wst) == 0, "ping-pong: %d of %d, child status %d", got, ROUNDS, wst);
  close(fa);
  close(fb);
  close(s);
  unlink(a);
  unlink(b);
  CHECK(rmdir(dir) == 0, "rmdir");
}

int main(void) {
  test_layouts();
  test_attach_checks();
  test_two_processes();
  test_lives();
  test_bells();
  printf("1..%d\n", g_tests);
  return g_failed ? 1 : 0;
}
