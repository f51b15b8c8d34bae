/*
 * internal.h -- what the core's files share: the loop and socket records, the
 * timer heap, the backend interface and the counted syscall wrappers.
 */
#ifndef IOMUX_INTERNAL_H
#define IOMUX_INTERNAL_H

#include "iomux.h"

#include <assert.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

/* The kernel's user-data word holds a token, never a pointer: the slot in the
 * low half and the slot's generation in the high half. A late event for a
 * socket that closed (and whose slot may hold a new socket) fails the
 * generation check and is dropped. */
#define TOKEN(slot, gen) (((uint64_t)(gen) << 32) | (uint32_t)(slot))
#define TOKEN_SLOT(t) ((uint32_t)(t))
#define TOKEN_GEN(t) ((uint32_t)((t) >> 32))
#define TOKEN_FOREIGN UINT64_MAX /* the outer loop's fd in standalone mode */

typedef struct backend_ops backend_ops;
typedef struct iomux_batch iomux_batch;

/* Readiness as the backends report it. */
enum { RD_READ = 1, RD_WRITE = 2, RD_HUP = 4, RD_ERROR = 8 };

typedef struct fired_event {
  uint64_t token;
  uint32_t mask;
} fired_event;

/* Reads made together (iomux__read_pending): at most this many sockets per
 * kernel call, each with a region of the slab of at least this many bytes. */
#define IOMUX_READ_CHUNK 64u
#define IOMUX_READ_REGION_MIN 2048u

/* One nonblocking receive or send of several made together (sys_io_batch). */
typedef struct io_op {
  int fd;
  bool send;
  uint8_t *buf;
  size_t len;
  ssize_t res; /* bytes, or -errno */
} io_op;

/* ---- sockets -------------------------------------------------------------- */

enum sock_kind { SK_LISTENER = 1, SK_STREAM };

enum sock_flag {
  SF_PAUSED = 1u << 0,       /* the embedder stopped reading */
  SF_READABLE = 1u << 1,     /* the kernel may hold bytes or connections */
  SF_WRITABLE = 1u << 2,     /* no write has been refused since the last edge */
  SF_RDHUP = 1u << 3,        /* the peer's FIN was seen: read on to EOF */
  SF_EOF = 1u << 4,
  SF_CONNECTING = 1u << 5,
  SF_SHUT_PENDING = 1u << 6, /* shutdown(SHUT_WR) once the queue empties */
  SF_SHUT_DONE = 1u << 7,
  SF_CORKED = 1u << 8,
  SF_NOTIFY_DRAIN = 1u << 9,
  SF_READY_LISTED = 1u << 10,
  SF_FLUSH_LISTED = 1u << 11,
  SF_CLOSED = 1u << 12,
  SF_ERROR = 1u << 13,       /* an error was reported; no more I/O */
  SF_ACCEPT_PAUSED = 1u << 14,
  SF_ACCEPT_REPORTED = 1u << 15, /* an accept error of this episode was sent */
  SF_DEFER_ACCEPT = 1u << 16,    /* listener: connections come with bytes */
  SF_OUT_OFF = 1u << 17          /* unix stream: write readiness not watched
                                  * (backend want_write, iomux__want_write) */
};

/* Bytes the kernel refused, kept until the writable edge. */
typedef struct outq {
  uint8_t *buf;
  uint32_t head, len, cap;
} outq;

typedef struct iomux_fwd iomux_fwd;

typedef struct sock {
  int fd;
  uint32_t gen;
  uint32_t flags;
  uint8_t kind;
  uint8_t peer_family;  /* IOMUX_AF_* */
  uint16_t peer_port;   /* host order */
  uint8_t peer_addr[16];
  outq out;
  int32_t timer;        /* idle-timeout (stream) or accept-retry (listener) */
  uint32_t idle_ms;
  int64_t last_active;  /* ns; the idle deadline is last_active + idle_ms */
  uint64_t served;      /* the iteration (stats.iterations) of its last
                         * read_cap or accept_cap share */
  char *path;           /* unix listener: unlinked on close */
  iomux_fwd *fwd;       /* the forwarding it belongs to (forward.c) */
} sock;

/* ---- timers --------------------------------------------------------------- */

enum timer_kind { TK_USER = 1, TK_IDLE, TK_ACCEPT_RETRY };

typedef struct tnode {
  int64_t deadline; /* ns, CLOCK_MONOTONIC */
  uint64_t seq;     /* orders equal deadlines by arming time */
  int32_t heap;     /* index in the heap, -1 when not armed */
  uint32_t gen;
  int32_t owner;    /* socket slot for TK_IDLE and TK_ACCEPT_RETRY */
  uint8_t kind;     /* 0 when free */
} tnode;

/* ---- growable vectors of tokens and ids ---------------------------------- */

typedef struct vec64 {
  uint64_t *v;
  uint32_t len, cap;
} vec64;

typedef struct vec32 {
  int32_t *v;
  uint32_t len, cap;
} vec32;

/* ---- buffer pools --------------------------------------------------------- */

/* Buffers of one size kept by the loop for reuse. A socket holds a write
 * queue buffer only while bytes wait in it, a forwarding direction its copy
 * buffer only while bytes are in flight: an idle connection holds none, and
 * the next message takes one from here without calling malloc. At most max
 * wait here; the rest go back to malloc. */
typedef struct buf_pool {
  uint8_t **v;
  uint32_t len, max;
  uint32_t size;
} buf_pool;

/* The write queue's first buffer: a response of this size or less needs no
 * other (larger queues take malloc's and give it back once they empty). */
#define IOMUX_OUTQ_BUF 1024u
#define IOMUX_OUTQ_POOL 128u
/* A forwarding direction's copy buffer while small messages go by. */
#define IOMUX_COPY_BUF (16u * 1024)
#define IOMUX_COPY_POOL 32u

/* ---- the loop ------------------------------------------------------------- */

struct iomux_loop {
  iomux_config cfg;
  const backend_ops *ops;
  void *backend;      /* the backend's own state */
  iomux_batch *batch; /* batched reads and writes (batch.c); NULL: none */
  iomux_stats stats;

  sock **socks;       /* by slot; NULL when free */
  uint32_t nsocks;
  vec32 free_socks;   /* slots ready for reuse */
  vec32 closing;      /* slots closed during this iteration */

  tnode *tnodes;
  uint32_t ntnodes;
  vec32 free_tnodes;
  vec32 closing_tnodes; /* fired or stopped since the last iteration's end */
  int32_t *heap;      /* tnode ids, a binary min-heap on (deadline, seq) */
  uint32_t heap_len, heap_cap;
  uint64_t timer_seq;

  vec64 ready;        /* sockets with readiness left over (caps, pauses) */
  uint64_t reads[IOMUX_READ_CHUNK]; /* sockets to read with the others */
  uint32_t nreads;
  iomux_fwd *fwds[IOMUX_READ_CHUNK]; /* forwardings to pump with the others */
  uint32_t nfwds;
  vec64 flush;        /* sockets whose queue waits for the end of a batch */
  uint32_t paused_listeners;

  fired_event *fired;

  int32_t *rec;       /* the embedder's record buffer */
  size_t rec_len, rec_cap; /* in words */
  size_t delivered;   /* records handed over in this iteration */
  uint8_t *slab;
  size_t slab_size, slab_pos;
  iomux_flush_fn flush_fn;
  void *flush_data;

  iomux_fwd *fwd_ended; /* ended forwardings whose record is still due */

  buf_pool outq_pool;   /* IOMUX_OUTQ_BUF bytes each (sock.c) */
  buf_pool copy_pool;   /* IOMUX_COPY_BUF bytes each (forward.c) */

  int foreign_fd;
  bool foreign_ready;
  bool iterating;
  bool delivering;
};

/* loop.c */
int64_t iomux__now(void);
void iomux__emit(iomux_loop *loop, int32_t type, int32_t id, int32_t a,
                 int32_t b);
void iomux__emit_words(iomux_loop *loop, const int32_t *words);
void iomux__ensure_room(iomux_loop *loop, size_t records, size_t slab_bytes);
/* The slab room a ready socket's next read needs: IOMUX_READ_ROOM, or the
 * read cap if it is smaller (a read never takes more than the cap). */
static inline size_t iomux__read_room(const iomux_loop *loop) {
  return loop->cfg.read_cap < IOMUX_READ_ROOM ? loop->cfg.read_cap
                                              : IOMUX_READ_ROOM;
}
/* How many sockets one round of reads or of writes may take, at two records
 * each, so that making room for them never needs more than the buffer. */
uint32_t iomux__sockets_per_round(const iomux_loop *loop, uint32_t max);
int vec64_push(vec64 *v, uint64_t x);
int vec32_push(vec32 *v, int32_t x);
/* A buffer of p->size bytes, from the pool or else malloc; NULL without
 * memory. */
uint8_t *iomux__pool_get(buf_pool *p);
/* Gives back a buffer of `size` bytes (NULL is ignored): kept when it has the
 * pool's size and the pool has room, else freed. */
void iomux__pool_put(buf_pool *p, uint8_t *buf, size_t size);

/* sock.c */
sock *iomux__sock(iomux_loop *loop, int id, int kind);
/* Handles one harvested event. A plain socket's read, and the first read of
 * a connection accepted with its bytes, wait in loop->reads to be made with
 * the others of the harvest: iomux__read_pending() makes them, up to
 * IOMUX_READ_CHUNK in one kernel call where the loop batches (each into a
 * region of the slab of at least IOMUX_READ_REGION_MIN bytes; more sockets
 * than the slab has room for take several calls). */
void iomux__handle_event(iomux_loop *loop, uint64_t token, uint32_t mask);
void iomux__read_pending(iomux_loop *loop);
void iomux__service_ready(iomux_loop *loop, uint64_t token);
/* Sockets flushed together at the end of a delivery (one batch's worth). */
#define IOMUX_FLUSH_CHUNK 128u
void iomux__flush_listed(iomux_loop *loop, const uint64_t *tokens, uint32_t n);
void iomux__idle_expired(iomux_loop *loop, int32_t slot, int64_t now);
void iomux__accept_retry(iomux_loop *loop, int32_t slot);
void iomux__close_all(iomux_loop *loop);
/* What forward.c shares with the socket layer. */
void iomux__ready_push(iomux_loop *loop, sock *s, int32_t slot);
/* Watches (on) or stops watching the write readiness of the stream in slot
 * where the backend can (want_write) and the stream is a unix socket; a
 * no-op otherwise. 0 or -errno (only when watching could not be asked). */
int iomux__want_write(iomux_loop *loop, sock *s, int32_t slot, bool on);
void iomux__touch(iomux_loop *loop, sock *s);
/* Drops n bytes from the front; an emptied queue gives its buffer back. */
void iomux__outq_consume(iomux_loop *loop, outq *q, size_t n);
/* Closes a socket (reset: with a RST); listed for recycling unless a
 * forwarding's record must name it first (forward.c lists it then). */
int iomux__sock_close(iomux_loop *loop, int32_t id, bool recycle, bool reset);

/* forward.c: the socket layer hands a forwarding socket's readiness, ready
 * listing, queued flush and idle expiry here. */
/* A forwarded socket's event: its forwarding waits in loop->fwds to be
 * pumped with the others of the harvest, by iomux__fwd_pending(). */
void iomux__fwd_event(iomux_loop *loop, sock *s, uint32_t mask);
void iomux__fwd_pending(iomux_loop *loop);
void iomux__fwd_service(iomux_loop *loop, sock *s);
void iomux__fwd_idle(iomux_loop *loop, sock *s, int64_t now);
/* The embedder closes a forwarding socket: the forwarding ends. */
void iomux__fwd_closed(iomux_loop *loop, sock *s, int32_t id);
/* Until the forwarder first reads toward s, the embedder may write to s. */
bool iomux__fwd_accepts_writes(const sock *s);
/* Emits the records of forwardings that ended, and lists their slots. */
void iomux__fwd_report(iomux_loop *loop);
/* Loop teardown: frees ended forwardings without a record. */
void iomux__fwd_free_ended(iomux_loop *loop);
/* Heap bytes the forwarding of the socket in `slot` holds, counted for its
 * first socket only, 0 for the other (iomux_loop_memory). */
size_t iomux__fwd_memory(const iomux_fwd *f, int32_t slot);

/* timer.c */
int32_t iomux__tnode_alloc(iomux_loop *loop, uint8_t kind, int32_t owner);
void iomux__tnode_free(iomux_loop *loop, int32_t id);
void iomux__timer_arm(iomux_loop *loop, int32_t id, int64_t deadline);
void iomux__timer_disarm(iomux_loop *loop, int32_t id);
int64_t iomux__timer_nearest(const iomux_loop *loop); /* INT64_MAX if none */
int32_t iomux__timer_pop_expired(iomux_loop *loop, int64_t now);
void iomux__timers_recycle(iomux_loop *loop); /* at the end of an iteration */
void iomux__timers_free(iomux_loop *loop);

/* A backend: one file per kernel interface, each defining one of these. */
struct backend_ops {
  const char *name;
  /* Creates the kernel queue in loop->backend; -errno when this kernel or
   * process cannot have it (the loop then tries the next backend). */
  int (*init)(iomux_loop *loop);
  void (*free)(iomux_loop *loop);
  /* The fd an outer event loop watches for readability. */
  int (*fd)(const iomux_loop *loop);
  /* Registers fd once for read and write readiness, edge-triggered. A
   * backend that can batch only queues the change; it rides with the next
   * wait (see pending). On failure nothing is registered or queued. */
  int (*add)(iomux_loop *loop, int fd, uint64_t token);
  /* The same for a listening socket: read readiness only, as an exclusive
   * waiter (see iomux_listen). Optional: add() otherwise. */
  int (*add_listener)(iomux_loop *loop, int fd, uint64_t token);
  /* Optional: a listener accepted until EAGAIN. A backend whose listener
   * registration ends at each wakeup (io_uring's one-shot exclusive poll)
   * arms the next one here, and only here: a listener that stopped
   * accepting (out of fds) is not woken again until it accepts. */
  void (*listener_drained)(iomux_loop *loop, int fd, uint64_t token);
  /* Optional: watch (on) or stop watching fd's write readiness, which add()
   * watched. Asking to watch it reports the fd at the next wait if it is
   * writable then (no edge is lost between a refused write and this call).
   * The socket layer uses it for unix stream sockets only, whose writers the
   * kernel wakes at every read of the peer (see iomux__want_write). */
  int (*want_write)(iomux_loop *loop, int fd, uint64_t token, bool on);
  /* Called before fd is closed; token is what add() was given. Changes
   * still queued for fd must go: after the close its number may be reused. */
  void (*del)(iomux_loop *loop, int fd, uint64_t token);
  /* Level-triggered read interest in the outer loop's fd, reported with
   * TOKEN_FOREIGN; fd < 0 removes old_fd. */
  int (*watch_foreign)(iomux_loop *loop, int fd, int old_fd);
  /* Submits the queued changes and waits up to timeout_ms (-1: no limit) in
   * one kernel call; fills loop->fired; returns the count or -errno. EINTR
   * is a zero-event return. */
  int (*poll)(iomux_loop *loop, int timeout_ms);
  /* Optional, for a backend whose changes wait for the next poll: whether
   * any are queued. Until they are submitted the kernel does not watch those
   * fds, so the loop fd would not turn readable for them: an outer loop must
   * run an iteration before it sleeps (iomux_loop_next_timeout says 0). */
  bool (*pending)(const iomux_loop *loop);
};

/* Which backends this build has (backend_*.c compile to nothing without). */
#if defined(__linux__) && defined(__has_include)
#if __has_include(<linux/io_uring.h>)
#define IOMUX_HAVE_IO_URING 1
#endif
#endif
#if defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) || \
    defined(__NetBSD__) || defined(__DragonFly__) || defined(IOMUX_KQUEUE_EMULATION)
#define IOMUX_HAVE_KQUEUE 1
#endif

extern const backend_ops iomux__backend_epoll;
extern const backend_ops iomux__backend_io_uring;
extern const backend_ops iomux__backend_kqueue;

/* sys.c: every socket syscall the core issues, counted, EINTR retried. */
int sys_socket(iomux_loop *loop, int family);
int sys_setsockopt_int(iomux_loop *loop, int fd, int level, int name, int v);
int sys_bind(iomux_loop *loop, int fd, const struct sockaddr *a, socklen_t l);
int sys_listen(iomux_loop *loop, int fd, int backlog);
int sys_connect(iomux_loop *loop, int fd, const struct sockaddr *a,
                socklen_t l);
int sys_accept(iomux_loop *loop, int fd, struct sockaddr_storage *ss,
               socklen_t *len);
ssize_t sys_read(iomux_loop *loop, int fd, void *buf, size_t len);
ssize_t sys_write(iomux_loop *loop, int fd, const void *buf, size_t len);
ssize_t sys_writev(iomux_loop *loop, int fd, const struct iovec *iov, int n);
/* Makes every op: together in one kernel call when there are two or more
 * and the loop can batch (batch.c), else (and for what a batch leaves) one
 * sys_read or sys_write each. */
void sys_io_batch(iomux_loop *loop, io_op *ops, uint32_t n);

/* batch.c: reads and writes of many sockets in one io_uring_enter(). */
void iomux__batch_open(iomux_loop *loop); /* leaves loop->batch NULL if not */
void iomux__batch_close(iomux_loop *loop);
/* Makes a prefix of ops[0..n) together and returns its length; 0 when the
 * loop cannot batch or n < 2. */
uint32_t iomux__batch_run(iomux_loop *loop, io_op *ops, uint32_t n);
int sys_shutdown_wr(iomux_loop *loop, int fd);
int sys_close(iomux_loop *loop, int fd);
int sys_socket_error(iomux_loop *loop, int fd);
/* getsockopt() of an int option: 0 and *v, or -errno. */
int sys_getsockopt_int(iomux_loop *loop, int fd, int level, int name, int *v);
/* O_NONBLOCK and FD_CLOEXEC on an fd made elsewhere. */
int sys_adopt_flags(iomux_loop *loop, int fd);
int sys_getpeername(iomux_loop *loop, int fd, struct sockaddr_storage *ss,
                    socklen_t *len);
int sys_getsockname(iomux_loop *loop, int fd, struct sockaddr_storage *ss,
                    socklen_t *len);
int sys_unlink(iomux_loop *loop, const char *path);
/* Closes with SO_LINGER {1, 0}: the peer sees a RST, not a FIN. */
int sys_close_reset(iomux_loop *loop, int fd);
#ifdef __linux__
int sys_pipe(iomux_loop *loop, int fds[2]);
int sys_set_pipe_size(iomux_loop *loop, int fd, int size); /* size or -errno */
ssize_t sys_splice(iomux_loop *loop, int in, int out, size_t len);
#endif

#endif /* IOMUX_INTERNAL_H */
