/*
 * timer.c -- userspace timers: a pool of timer nodes and a binary min-heap of
 * the armed ones, ordered by (deadline, arming sequence) so that timers due at
 * the same instant fire in the order they were armed. The nearest deadline
 * becomes the kernel wait's timeout; no timer ever costs a syscall.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>

static bool before(const iomux_loop *loop, int32_t a, int32_t b) {
  const tnode *x = &loop->tnodes[a], *y = &loop->tnodes[b];
  return x->deadline < y->deadline ||
         (x->deadline == y->deadline && x->seq < y->seq);
}

static void heap_set(iomux_loop *loop, uint32_t i, int32_t id) {
  loop->heap[i] = id;
  loop->tnodes[id].heap = (int32_t)i;
}

static void sift_up(iomux_loop *loop, uint32_t i) {
  int32_t id = loop->heap[i];
  while (i > 0) {
    uint32_t parent = (i - 1) / 2;
    if (!before(loop, id, loop->heap[parent])) break;
    heap_set(loop, i, loop->heap[parent]);
    i = parent;
  }
  heap_set(loop, i, id);
}

static void sift_down(iomux_loop *loop, uint32_t i) {
  int32_t id = loop->heap[i];
  for (;;) {
    uint32_t child = 2 * i + 1;
    if (child >= loop->heap_len) break;
    if (child + 1 < loop->heap_len &&
        before(loop, loop->heap[child + 1], loop->heap[child]))
      child++;
    if (!before(loop, loop->heap[child], id)) break;
    heap_set(loop, i, loop->heap[child]);
    i = child;
  }
  heap_set(loop, i, id);
}

int32_t iomux__tnode_alloc(iomux_loop *loop, uint8_t kind, int32_t owner) {
  int32_t id;
  if (loop->free_tnodes.len > 0) {
    id = loop->free_tnodes.v[--loop->free_tnodes.len];
  } else {
    if (loop->ntnodes == INT32_MAX) return -ENOMEM;
    uint32_t n = loop->ntnodes ? loop->ntnodes * 2 : 64;
    tnode *t = realloc(loop->tnodes, n * sizeof *t);
    if (!t) return -ENOMEM;
    for (uint32_t i = loop->ntnodes; i < n; i++)
      t[i] = (tnode){.heap = -1, .gen = 0, .kind = 0};
    /* Reserve room to recycle every node, so freeing never allocates. */
    int32_t *f = realloc(loop->free_tnodes.v, n * sizeof *f);
    int32_t *h = realloc(loop->heap, n * sizeof *h);
    if (f) loop->free_tnodes.v = f, loop->free_tnodes.cap = n;
    if (h) loop->heap = h, loop->heap_cap = n;
    loop->tnodes = t;
    if (!f || !h) return -ENOMEM;
    for (uint32_t i = n; i-- > loop->ntnodes + 1;)
      loop->free_tnodes.v[loop->free_tnodes.len++] = (int32_t)i;
    id = (int32_t)loop->ntnodes;
    loop->ntnodes = n;
  }
  tnode *t = &loop->tnodes[id];
  assert(t->kind == 0 && t->heap == -1);
  t->kind = kind;
  t->owner = owner;
  return id;
}

void iomux__tnode_free(iomux_loop *loop, int32_t id) {
  tnode *t = &loop->tnodes[id];
  assert(t->kind != 0);
  iomux__timer_disarm(loop, id);
  t->kind = 0;
  t->gen++;
  /* Reused only after the iteration: a timer started while a batch is
   * delivered never takes the id of one whose record is in that batch. */
  if (vec32_push(&loop->closing_tnodes, id) < 0) {
    /* Out of memory: the node is lost, never reused unsafely. */
  }
}

void iomux__timers_recycle(iomux_loop *loop) {
  for (uint32_t i = 0; i < loop->closing_tnodes.len; i++) {
    assert(loop->free_tnodes.len < loop->free_tnodes.cap);
    loop->free_tnodes.v[loop->free_tnodes.len++] = loop->closing_tnodes.v[i];
  }
  loop->closing_tnodes.len = 0;
}

void iomux__timer_arm(iomux_loop *loop, int32_t id, int64_t deadline) {
  tnode *t = &loop->tnodes[id];
  assert(t->kind != 0);
  t->deadline = deadline;
  t->seq = loop->timer_seq++;
  if (t->heap < 0) {
    assert(loop->heap_len < loop->heap_cap);
    heap_set(loop, loop->heap_len++, id);
    sift_up(loop, (uint32_t)t->heap);
  } else {
    /* A re-armed timer only moves later, except for restarts to a shorter
     * delay: sift both ways. */
    sift_up(loop, (uint32_t)t->heap);
    sift_down(loop, (uint32_t)loop->tnodes[id].heap);
  }
}

void iomux__timer_disarm(iomux_loop *loop, int32_t id) {
  tnode *t = &loop->tnodes[id];
  if (t->heap < 0) return;
  uint32_t i = (uint32_t)t->heap;
  t->heap = -1;
  int32_t last = loop->heap[--loop->heap_len];
  if (i == loop->heap_len) return;
  heap_set(loop, i, last);
  sift_up(loop, i);
  sift_down(loop, (uint32_t)loop->tnodes[last].heap);
}

int64_t iomux__timer_nearest(const iomux_loop *loop) {
  return loop->heap_len ? loop->tnodes[loop->heap[0]].deadline : INT64_MAX;
}

int32_t iomux__timer_pop_expired(iomux_loop *loop, int64_t now) {
  if (loop->heap_len == 0) return -1;
  int32_t id = loop->heap[0];
  if (loop->tnodes[id].deadline > now) return -1;
  iomux__timer_disarm(loop, id);
  return id;
}

void iomux__timers_free(iomux_loop *loop) {
  free(loop->tnodes);
  free(loop->heap);
  free(loop->free_tnodes.v);
  free(loop->closing_tnodes.v);
  loop->closing_tnodes = (vec32){0};
  loop->tnodes = NULL;
  loop->heap = NULL;
  loop->free_tnodes = (vec32){0};
  loop->ntnodes = loop->heap_len = loop->heap_cap = 0;
}

/* ---- the public timer API -------------------------------------------------- */

static tnode *user_timer(iomux_loop *loop, int id, uint32_t gen) {
  if (id < 0 || (uint32_t)id >= loop->ntnodes) return NULL;
  tnode *t = &loop->tnodes[id];
  return t->kind == TK_USER && t->gen == gen ? t : NULL;
}

static int64_t deadline_after(uint64_t ms) {
  if (ms > (uint64_t)INT64_MAX / 2000000) ms = (uint64_t)INT64_MAX / 2000000;
  return iomux__now() + (int64_t)ms * 1000000;
}

int iomux_timer_start(iomux_loop *loop, uint64_t ms, uint32_t *gen) {
  int32_t id = iomux__tnode_alloc(loop, TK_USER, -1);
  if (id < 0) return id;
  iomux__timer_arm(loop, id, deadline_after(ms));
  *gen = loop->tnodes[id].gen;
  return id;
}

int iomux_timer_restart(iomux_loop *loop, int id, uint32_t gen, uint64_t ms) {
  if (!user_timer(loop, id, gen)) return -ENOENT;
  iomux__timer_arm(loop, id, deadline_after(ms));
  return 0;
}

int iomux_timer_stop(iomux_loop *loop, int id, uint32_t gen) {
  if (!user_timer(loop, id, gen)) return -ENOENT;
  iomux__tnode_free(loop, id);
  return 0;
}
