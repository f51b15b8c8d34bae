/*
 * iomux.h -- the iomux core: one kernel event queue per loop, non-blocking
 * sockets and userspace timers, in plain C. Nothing here knows about Node.
 *
 * Model
 *   A loop owns one kernel queue (io_uring, epoll or kqueue). Sockets and
 *   timers are named by small integer ids (slot numbers). One call,
 *   iomux_loop_run_once(), is one iteration: wait for readiness or the nearest
 *   deadline, do the I/O the kernel allows (accept, read into the slab, flush
 *   queued writes), expire timers, and describe everything that happened as
 *   fixed-size event records. The records are handed to the embedder in
 *   batches through the flush callback: one call per batch, never one per
 *   event.
 *
 * Memory the embedder provides
 *   - the record buffer (int32 words), and
 *   - the slab that reads land in.
 *   Both may be memory the embedder's runtime owns (JavaScript ArrayBuffers).
 *   A DATA record names a [offset, offset+length) range of the slab, valid until
 *   the flush callback returns. The callback returns the slab offset the core
 *   may write to next: 0 to reuse the whole slab, or the end of the last range it
 *   kept a reference to. It may also install a new slab from inside the call.
 *
 * Errors are returned as negative errno values; ids are >= 0.
 */
#ifndef IOMUX_H
#define IOMUX_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct iomux_loop iomux_loop;

/* ---- event records: IOMUX_RECORD_WORDS int32 words each ------------------ */

#define IOMUX_RECORD_WORDS 4

enum iomux_event {
  /* word 1 = new socket id, word 2 = listener id, word 3 = family << 16 | port.
   * The NEXT record carries the peer's address bytes (16 bytes, network order;
   * an IPv4 address in the first 4). Unix peers carry zeros. */
  IOMUX_EV_ACCEPT = 1,
  IOMUX_EV_DATA,         /* id, slab offset, length */
  IOMUX_EV_EOF,          /* id: the peer sent FIN; no more DATA follows */
  IOMUX_EV_DRAIN,        /* id: the write queue emptied (only when asked for) */
  IOMUX_EV_CONNECT,      /* id, 0 or errno of a failed connect */
  IOMUX_EV_ERROR,        /* id, errno, IOMUX_OP_* of the failing syscall */
  IOMUX_EV_TIMEOUT,      /* id: the socket's idle timeout expired */
  IOMUX_EV_TIMER,        /* timer id, timer generation */
  IOMUX_EV_ACCEPT_ERROR, /* listener id, errno (EMFILE, ENFILE, ENOBUFS...) */
  IOMUX_EV_ADDRESS       /* the address bytes following an ACCEPT (internal) */
};

/* Address families as the records carry them. */
enum { IOMUX_AF_UNIX = 1, IOMUX_AF_INET = 4, IOMUX_AF_INET6 = 6 };

/* The syscall an IOMUX_EV_ERROR came from. */
enum iomux_op {
  IOMUX_OP_READ = 1,
  IOMUX_OP_WRITE,
  IOMUX_OP_CONNECT,
  IOMUX_OP_ACCEPT,
  IOMUX_OP_SHUTDOWN
};

/* ---- counters: every syscall the core issues, by kind -------------------- */

/* wait: calls that wait for or harvest events (epoll_wait, kevent,
 *   io_uring_enter). io_uring makes none for a zero-timeout iteration with
 *   nothing to submit: its completions are already in shared memory.
 * ctl: epoll_ctl calls.
 * submit: calls that only submitted queued changes: the queue (io_uring's
 *   submission ring, kqueue's changelist) filled up within one iteration, or
 *   an io_uring listener closed (its removal cannot wait for the next wait).
 * changes: fd registrations and removals that rode with a wait instead of a
 *   call of their own (io_uring SQEs, kqueue changelist entries). */
#define IOMUX_STATS(X) \
  X(iterations)  X(events)     X(wait)       X(ctl)        X(accept)     \
  X(read)        X(write)      X(writev)     X(shutdown)   X(close)      \
  X(getpeername) X(getsockname) X(socket)    X(connect)    X(bind)       \
  X(listen)      X(setsockopt) X(getsockopt) X(unlink)     X(submit)     \
  X(changes)

typedef struct iomux_stats {
#define IOMUX_STAT_FIELD(name) uint64_t name;
  IOMUX_STATS(IOMUX_STAT_FIELD)
#undef IOMUX_STAT_FIELD
} iomux_stats;

/* ---- the loop ------------------------------------------------------------- */

/* Receives a batch of records; returns the slab offset the core may write to
 * next (see above). Writes made during the call are coalesced: each socket's
 * queue is flushed with one writev after the call returns. */
typedef size_t (*iomux_flush_fn)(void *data, const int32_t *records,
                                 size_t count);

typedef struct iomux_config {
  /* "epoll", "io_uring" or "kqueue"; NULL for the best this system allows.
   * A named backend this build or kernel cannot have fails iomux_loop_new
   * (-ENOSYS when not built in, else the backend's own -errno). */
  const char *backend;
  uint32_t read_cap;     /* bytes read per socket per iteration (64 KiB) */
  uint32_t accept_cap;   /* connections accepted per listener per iteration */
  uint32_t max_events;   /* kernel events harvested per wait */
  int32_t accept_retry_ms; /* back-off after EMFILE/ENFILE before accept retries */
} iomux_config;

/* cfg may be NULL for the defaults. On failure returns NULL and sets *err. */
iomux_loop *iomux_loop_new(const iomux_config *cfg, int *err);
/* Closes every socket and frees everything. Not during a flush callback. */
void iomux_loop_free(iomux_loop *loop);

const char *iomux_loop_backend(const iomux_loop *loop);
/* The fd an outer event loop watches for readability. */
int iomux_loop_fd(const iomux_loop *loop);

void iomux_loop_set_flush(iomux_loop *loop, iomux_flush_fn fn, void *data);
/* words must be a multiple of IOMUX_RECORD_WORDS and at least 64 records. */
void iomux_loop_set_records(iomux_loop *loop, int32_t *buf, size_t words);
/* size must be at least read_cap. pos is where the next read may land. */
void iomux_loop_set_slab(iomux_loop *loop, uint8_t *base, size_t size,
                         size_t pos);

/* One iteration. timeout_ms < 0 waits until an event or the nearest timer,
 * 0 only harvests. Returns the number of records delivered, or -errno.
 * Must not be called from inside the flush callback. */
int iomux_loop_run_once(iomux_loop *loop, int timeout_ms);

/* Milliseconds until the loop has work: 0 when it has work now (ready
 * sockets, queued records, registrations a batching backend queued for its
 * next wait), otherwise the nearest deadline rounded up, or -1 when there is
 * no timer at all. */
int64_t iomux_loop_next_timeout(iomux_loop *loop);

/* Adds a foreign fd (an outer loop's own backend fd) to the wait, level
 * triggered. run_once reports its readiness through iomux_loop_foreign_ready.
 * fd < 0 removes it. */
int iomux_loop_watch_foreign(iomux_loop *loop, int fd);
int iomux_loop_foreign_ready(const iomux_loop *loop);

const iomux_stats *iomux_loop_stats(const iomux_loop *loop);

/* ---- sockets -------------------------------------------------------------- */

enum iomux_listen_flags {
  IOMUX_LISTEN_REUSEPORT = 1,
  IOMUX_LISTEN_V6ONLY = 2
};

/* Binds and listens. A unix listener unlinks its path when closed. */
int iomux_listen(iomux_loop *loop, const struct sockaddr *addr,
                 socklen_t len, int backlog, unsigned flags);
/* Starts a non-blocking connect; IOMUX_EV_CONNECT reports the outcome. */
int iomux_connect(iomux_loop *loop, const struct sockaddr *addr,
                  socklen_t len);

/* Writes len bytes: straight to the kernel when nothing is queued and no
 * batch is being delivered, otherwise queued. Whatever the kernel refuses is
 * queued; nothing is dropped. Returns the bytes now queued, or -errno (the
 * data is then not taken). notify asks for an IOMUX_EV_DRAIN when the queue
 * empties. */
ssize_t iomux_write(iomux_loop *loop, int id, const void *buf, size_t len,
                    int notify);
/* The same for several buffers. */
ssize_t iomux_writev(iomux_loop *loop, int id, const struct iovec *iov,
                     int iovcnt, int notify);
/* Bytes queued in the core for this socket. */
ssize_t iomux_queued(iomux_loop *loop, int id);
/* Sends FIN once the queue is flushed. */
int iomux_shutdown(iomux_loop *loop, int id);
/* Closes now; queued bytes are discarded. The id is recycled after the
 * current iteration. On io_uring the fd is closed at once, but its poll holds
 * the socket until the removal queued here reaches the kernel: with the next
 * iteration (iomux_loop_next_timeout() says 0 meanwhile) or iomux_loop_free();
 * only then does the peer see the close. A listener is released at once. */
int iomux_close(iomux_loop *loop, int id);

int iomux_set_reading(iomux_loop *loop, int id, int on);
int iomux_cork(iomux_loop *loop, int id, int on);
/* Idle timeout: IOMUX_EV_TIMEOUT after ms without reads or writes; 0 disables.
 * Activity re-arms it with no syscall and no allocation. */
int iomux_set_timeout(iomux_loop *loop, int id, uint32_t ms);
int iomux_set_nodelay(iomux_loop *loop, int id, int on);
int iomux_set_keepalive(iomux_loop *loop, int id, int on, unsigned delay_s);

/* The peer as seen at accept or connect time: never a syscall, still valid
 * until the id is recycled. */
int iomux_peer_address(iomux_loop *loop, int id, struct sockaddr_storage *ss,
                       socklen_t *len);
/* getsockname(), counted. */
int iomux_local_address(iomux_loop *loop, int id, struct sockaddr_storage *ss,
                        socklen_t *len);

/* ---- timers --------------------------------------------------------------- */

/* One-shot timer, ms from now, never early. Returns the id; *gen receives the
 * generation an IOMUX_EV_TIMER record will carry. A timer that fires or is
 * stopped gives its id back; (id, gen) never names a later timer. */
int iomux_timer_start(iomux_loop *loop, uint64_t ms, uint32_t *gen);
/* Moves a pending timer to ms from now; -ENOENT once it fired or stopped. */
int iomux_timer_restart(iomux_loop *loop, int id, uint32_t gen, uint64_t ms);
int iomux_timer_stop(iomux_loop *loop, int id, uint32_t gen);

#ifdef __cplusplus
}
#endif

#endif /* IOMUX_H */
