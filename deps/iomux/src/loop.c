/*
 * loop.c -- the loop: one iteration is one wait on the kernel queue followed
 * by the I/O it allows, the timers it expires, and the delivery of what
 * happened as batches of event records. iomux_loop_run_once() reads top to
 * bottom as those phases.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A bulk flow on loopback moves about 16 4 KiB messages per 64 KiB read; a
 * larger cap halves the wake-ups and reads per message of a receiver that
 * keeps up. The embedder's slab bounds each read as well (iomux_loop_set_slab),
 * so this is the most a socket may take, not what every read asks for. */
#define DEFAULT_READ_CAP (256 * 1024)
#define DEFAULT_ACCEPT_CAP 256
#define DEFAULT_MAX_EVENTS 1024
#define DEFAULT_ACCEPT_RETRY_MS 100
/* Delivery passes per iteration: a 'drain' handler that writes again can
 * cause another DRAIN record; past this many passes the rest waits for the
 * next iteration instead of starving the wait. */
#define MAX_DELIVERY_PASSES 8

int64_t iomux__now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int vec64_push(vec64 *v, uint64_t x) {
  if (v->len == v->cap) {
    uint32_t n = v->cap ? v->cap * 2 : 64;
    uint64_t *p = realloc(v->v, n * sizeof *p);
    if (!p) return -ENOMEM;
    v->v = p;
    v->cap = n;
  }
  v->v[v->len++] = x;
  return 0;
}

int vec32_push(vec32 *v, int32_t x) {
  if (v->len == v->cap) {
    uint32_t n = v->cap ? v->cap * 2 : 64;
    int32_t *p = realloc(v->v, n * sizeof *p);
    if (!p) return -ENOMEM;
    v->v = p;
    v->cap = n;
  }
  v->v[v->len++] = x;
  return 0;
}

/* ---- buffer pools --------------------------------------------------------- */

static int pool_init(buf_pool *p, uint32_t size, uint32_t max) {
  p->v = malloc(max * sizeof *p->v);
  if (!p->v) return -ENOMEM;
  p->len = 0;
  p->max = max;
  p->size = size;
  return 0;
}

static void pool_free(buf_pool *p) {
  while (p->len) free(p->v[--p->len]);
  free(p->v);
  p->v = NULL;
}

uint8_t *iomux__pool_get(buf_pool *p) {
  if (p->len) return p->v[--p->len];
  return malloc(p->size);
}

void iomux__pool_put(buf_pool *p, uint8_t *buf, size_t size) {
  if (!buf) return;
  if (size == p->size && p->len < p->max)
    p->v[p->len++] = buf;
  else
    free(buf);
}

/* ---- records and their delivery ------------------------------------------ */

void iomux__emit(iomux_loop *loop, int32_t type, int32_t id, int32_t a,
                 int32_t b) {
  /* Callers make room first (iomux__ensure_room), and records are only
   * produced inside an iteration, so the buffer cannot be full here. */
  assert(loop->iterating);
  assert(loop->rec_len + IOMUX_RECORD_WORDS <= loop->rec_cap);
  int32_t *r = loop->rec + loop->rec_len;
  r[0] = type;
  r[1] = id;
  r[2] = a;
  r[3] = b;
  loop->rec_len += IOMUX_RECORD_WORDS;
}

void iomux__emit_words(iomux_loop *loop, const int32_t *words) {
  assert(loop->iterating);
  assert(loop->rec_len + IOMUX_RECORD_WORDS <= loop->rec_cap);
  memcpy(loop->rec + loop->rec_len, words, IOMUX_RECORD_WORDS * sizeof *words);
  loop->rec_len += IOMUX_RECORD_WORDS;
}

/* Writes queued while records were being delivered (or uncorked since):
 * one write per socket, however many writes were issued, and the writes of
 * up to IOMUX_FLUSH_CHUNK sockets in one kernel call where the backend can. */
static void flush_queued_writes(iomux_loop *loop) {
  vec64 batch = loop->flush;
  loop->flush = (vec64){0};
  uint32_t chunk = iomux__sockets_per_round(loop, IOMUX_FLUSH_CHUNK);
  for (uint32_t i = 0; i < batch.len; i += chunk) {
    uint32_t n = batch.len - i < chunk ? batch.len - i : chunk;
    /* Room first: making it may run the embedder. */
    iomux__ensure_room(loop, 2 * (size_t)n, 0);
    iomux__flush_listed(loop, batch.v + i, n);
  }
  /* Keep whichever array is larger for reuse. */
  if (loop->flush.cap == 0) {
    batch.len = 0;
    loop->flush = batch;
  } else {
    free(batch.v);
  }
}

/* Hands the records to the embedder, then flushes the writes it made. */
static void deliver(iomux_loop *loop) {
  if (loop->rec_len == 0) return;
  assert(!loop->delivering);
  size_t count = loop->rec_len / IOMUX_RECORD_WORDS;
  size_t pos = loop->slab_size;
  loop->delivering = true;
  if (loop->flush_fn) pos = loop->flush_fn(loop->flush_data, loop->rec, count);
  loop->delivering = false;
  loop->rec_len = 0;
  loop->slab_pos = pos < loop->slab_size ? pos : loop->slab_size;
  loop->delivered += count;
  flush_queued_writes(loop);
}

void iomux__ensure_room(iomux_loop *loop, size_t records, size_t slab_bytes) {
  if (loop->delivering) return; /* flushes from inside a delivery append */
  if (loop->rec_len + records * IOMUX_RECORD_WORDS > loop->rec_cap ||
      loop->slab_size - loop->slab_pos < slab_bytes)
    deliver(loop);
}

uint32_t iomux__sockets_per_round(const iomux_loop *loop, uint32_t max) {
  size_t n = loop->rec_cap / IOMUX_RECORD_WORDS / 2;
  if (n > max) n = max;
  return n ? (uint32_t)n : 1;
}

/* ---- the iteration -------------------------------------------------------- */

static bool has_work(const iomux_loop *loop) {
  return loop->ready.len > 0 || loop->flush.len > 0 || loop->rec_len > 0 ||
         loop->fwd_ended != NULL;
}

/* How long this iteration's wait may sleep. Queued registrations do not cut
 * it short: they ride with this very wait. */
static int64_t wait_timeout(iomux_loop *loop) {
  if (has_work(loop)) return 0;
  int64_t deadline = iomux__timer_nearest(loop);
  if (deadline == INT64_MAX) return -1;
  int64_t delta = deadline - iomux__now();
  if (delta <= 0) return 0;
  return (delta + 999999) / 1000000; /* round up: never wake early */
}

int64_t iomux_loop_next_timeout(iomux_loop *loop) {
  /* Registrations still queued (kqueue, io_uring) reach the kernel only with
   * the next wait: until then their sockets cannot wake the embedder. */
  if (loop->ops->pending && loop->ops->pending(loop)) return 0;
  return wait_timeout(loop);
}

static void expire_timers(iomux_loop *loop) {
  if (loop->heap_len == 0) return; /* not even a clock read */
  int64_t now = iomux__now();
  for (;;) {
    /* Room first, pop second: the delivery that making room may cause runs
     * the embedder, which can stop the timer we would have popped (its
     * record never sent, so the stop must win), close the socket owning an
     * idle timer, or start timers and so move loop->tnodes. Nothing popped
     * or pointed to may be held across it. */
    iomux__ensure_room(loop, 1, 0);
    int32_t id = iomux__timer_pop_expired(loop, now);
    if (id < 0) break;
    tnode *t = &loop->tnodes[id];
    switch (t->kind) {
    case TK_USER:
      iomux__emit(loop, IOMUX_EV_TIMER, id, (int32_t)t->gen, 0);
      iomux__tnode_free(loop, id);
      break;
    case TK_IDLE:
      iomux__idle_expired(loop, t->owner, now);
      break;
    case TK_ACCEPT_RETRY:
      iomux__accept_retry(loop, t->owner);
      break;
    default:
      assert(!"armed timer of no kind");
    }
  }
}

static void service_ready(iomux_loop *loop) {
  /* Only what was listed before this phase: a socket that hits its cap again
   * goes to the next iteration, after everyone else had a turn. */
  vec64 batch = loop->ready;
  loop->ready = (vec64){0};
  for (uint32_t i = 0; i < batch.len; i++)
    iomux__service_ready(loop, batch.v[i]);
  if (loop->ready.cap == 0) {
    batch.len = 0;
    loop->ready = batch;
  } else {
    free(batch.v);
  }
}

/* Slots closed during the iteration become reusable only at its end, so ids
 * in one batch of records never name two different sockets. */
static void recycle_closed(iomux_loop *loop) {
  for (uint32_t i = 0; i < loop->closing.len; i++) {
    /* free_socks was sized for every slot when the slot table grew. */
    assert(loop->free_socks.len < loop->free_socks.cap);
    loop->free_socks.v[loop->free_socks.len++] = loop->closing.v[i];
  }
  loop->closing.len = 0;
}

int iomux_loop_run_once(iomux_loop *loop, int timeout_ms) {
  assert(!loop->iterating && "run_once is not reentrant");
  loop->iterating = true;
  loop->stats.iterations++;
  loop->foreign_ready = false;
  loop->delivered = 0;

  /* 1. Writes queued outside a delivery (uncork) go out before we sleep. */
  if (loop->flush.len) flush_queued_writes(loop);

  /* 2. Wait: no longer than the nearest deadline, not at all with work. */
  int64_t next = wait_timeout(loop);
  if (next >= 0 && (timeout_ms < 0 || next < timeout_ms))
    timeout_ms = next > INT_MAX ? INT_MAX : (int)next;
  int n = loop->ops->poll(loop, timeout_ms);
  if (n < 0) {
    loop->iterating = false;
    return n;
  }
  loop->stats.events += (uint64_t)n;

  /* 3. I/O for every event: accept, flush queues, read into the slab; the
   *    reads of many sockets together, in one kernel call where the loop can
   *    batch them (batch.c). */
  for (int i = 0; i < n; i++) {
    if (loop->fired[i].token == TOKEN_FOREIGN)
      loop->foreign_ready = true;
    else
      iomux__handle_event(loop, loop->fired[i].token, loop->fired[i].mask);
  }
  iomux__read_pending(loop);
  iomux__fwd_pending(loop);

  /* 4. Sockets left readable by a cap in an earlier iteration. */
  if (loop->ready.len) {
    service_ready(loop);
    iomux__read_pending(loop); /* what its listeners accepted */
  }

  /* 5. Timers: user timers, idle timeouts, accept retries. */
  expire_timers(loop);

  /* 5b. Forwardings that ended (here or in the embedder's last callback). */
  if (loop->fwd_ended) iomux__fwd_report(loop);

  /* 6. Deliver the batch; writes made in response go out coalesced. */
  for (int pass = 0; loop->rec_len && pass < MAX_DELIVERY_PASSES; pass++)
    deliver(loop);

  /* 7. Free what closed, and the ids of timers that fired or stopped. */
  recycle_closed(loop);
  iomux__timers_recycle(loop);
  loop->iterating = false;
  return loop->delivered > INT_MAX ? INT_MAX : (int)loop->delivered;
}

/* ---- set-up and tear-down ------------------------------------------------- */

/* The backends this build has, best first. */
static const backend_ops *const backends[] = {
#ifdef IOMUX_HAVE_IO_URING
    &iomux__backend_io_uring,
#endif
#ifdef __linux__
    &iomux__backend_epoll,
#endif
#ifdef IOMUX_HAVE_KQUEUE
    &iomux__backend_kqueue,
#endif
    NULL,
};

/* cfg.backend names one (unavailable: an error, never a silent fallback);
 * NULL takes the first that initialises. */
static int open_backend(iomux_loop *loop) {
  const char *want = loop->cfg.backend;
  int rc = -ENOSYS;
  for (const backend_ops *const *b = backends; *b; b++) {
    if (want && strcmp(want, (*b)->name) != 0) continue;
    loop->ops = *b;
    rc = (*b)->init(loop);
    if (rc == 0 || want) break;
  }
  if (rc < 0) loop->ops = NULL;
  return rc;
}

iomux_loop *iomux_loop_new(const iomux_config *cfg, int *err) {
  iomux_loop *loop = calloc(1, sizeof *loop);
  if (!loop) {
    *err = -ENOMEM;
    return NULL;
  }
  if (cfg) loop->cfg = *cfg;
  if (!loop->cfg.read_cap) loop->cfg.read_cap = DEFAULT_READ_CAP;
  if (!loop->cfg.accept_cap) loop->cfg.accept_cap = DEFAULT_ACCEPT_CAP;
  if (!loop->cfg.max_events) loop->cfg.max_events = DEFAULT_MAX_EVENTS;
  if (loop->cfg.accept_retry_ms <= 0)
    loop->cfg.accept_retry_ms = DEFAULT_ACCEPT_RETRY_MS;
  loop->foreign_fd = -1;
  loop->fired = calloc(loop->cfg.max_events, sizeof *loop->fired);
  int rc = loop->fired ? 0 : -ENOMEM;
  if (rc == 0) rc = pool_init(&loop->outq_pool, IOMUX_OUTQ_BUF, IOMUX_OUTQ_POOL);
  if (rc == 0) rc = pool_init(&loop->copy_pool, IOMUX_COPY_BUF, IOMUX_COPY_POOL);
  if (rc == 0) rc = open_backend(loop);
  if (rc < 0) {
    pool_free(&loop->outq_pool);
    pool_free(&loop->copy_pool);
    free(loop->fired);
    free(loop);
    *err = rc;
    return NULL;
  }
  if (!loop->cfg.no_batch) iomux__batch_open(loop);
  *err = 0;
  return loop;
}

void iomux_loop_free(iomux_loop *loop) {
  if (!loop) return;
  assert(!loop->delivering);
  loop->iterating = true; /* closes may list slots; recycle them below */
  iomux__close_all(loop);
  iomux__fwd_free_ended(loop); /* no records now: nobody to read them */
  recycle_closed(loop);
  loop->iterating = false;
  for (uint32_t i = 0; i < loop->nsocks; i++) free(loop->socks[i]);
  free(loop->socks);
  free(loop->free_socks.v);
  free(loop->closing.v);
  free(loop->ready.v);
  free(loop->flush.v);
  iomux__timers_free(loop);
  if (loop->ops) loop->ops->free(loop);
  iomux__batch_close(loop);
  pool_free(&loop->outq_pool);
  pool_free(&loop->copy_pool);
  free(loop->fired);
  free(loop);
}

void iomux_loop_memory(const iomux_loop *loop, iomux_memory *out) {
  size_t n = (size_t)loop->nsocks * (sizeof *loop->socks + sizeof *loop->free_socks.v);
  for (uint32_t i = 0; i < loop->nsocks; i++) {
    const sock *s = loop->socks[i];
    if (!s) continue;
    n += sizeof *s + s->out.cap;
    if (s->path) n += strlen(s->path) + 1;
    if (s->fwd) n += iomux__fwd_memory(s->fwd, (int32_t)i);
  }
  n += (size_t)loop->ntnodes * (sizeof *loop->tnodes + sizeof *loop->heap +
                                sizeof *loop->free_tnodes.v);
  out->sockets = n;
  out->pooled = (size_t)loop->outq_pool.len * loop->outq_pool.size +
                (size_t)loop->copy_pool.len * loop->copy_pool.size +
                (size_t)(loop->outq_pool.max + loop->copy_pool.max) * sizeof(uint8_t *);
}

const char *iomux_loop_backend(const iomux_loop *loop) {
  return loop->ops->name;
}

int iomux_loop_batching(const iomux_loop *loop) { return loop->batch != NULL; }

int iomux_loop_fd(const iomux_loop *loop) { return loop->ops->fd(loop); }

void iomux_loop_set_flush(iomux_loop *loop, iomux_flush_fn fn, void *data) {
  loop->flush_fn = fn;
  loop->flush_data = data;
}

void iomux_loop_set_records(iomux_loop *loop, int32_t *buf, size_t words) {
  assert(!loop->iterating);
  assert(words % IOMUX_RECORD_WORDS == 0 && words >= 64 * IOMUX_RECORD_WORDS);
  loop->rec = buf;
  loop->rec_cap = words;
}

void iomux_loop_set_slab(iomux_loop *loop, uint8_t *base, size_t size,
                         size_t pos) {
  loop->slab = base;
  loop->slab_size = size;
  loop->slab_pos = pos < size ? pos : size;
}

int iomux_loop_watch_foreign(iomux_loop *loop, int fd) {
  int rc = loop->ops->watch_foreign(loop, fd, loop->foreign_fd);
  loop->foreign_fd = rc == 0 ? fd : -1;
  return rc;
}

int iomux_loop_foreign_ready(const iomux_loop *loop) {
  return loop->foreign_ready;
}

const iomux_stats *iomux_loop_stats(const iomux_loop *loop) {
  return &loop->stats;
}
