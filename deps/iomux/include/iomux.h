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
  IOMUX_EV_ADDRESS,      /* the address bytes following an ACCEPT (internal) */
  /* A forwarding (iomux_forward) ended and both its sockets are closed:
   * word 1 = id a, word 2 = id b, word 3 = reason | errno << 8 (IOMUX_FWD_*).
   * The NEXT record carries the byte counts: words 0-1 bytes a->b, words 2-3
   * bytes b->a, each a uint64 as two uint32 halves, low half first. */
  IOMUX_EV_FORWARD_END,
  IOMUX_EV_FORWARD_BYTES /* the counts following a FORWARD_END (internal) */
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

/* splice, pipe, fcntl: iomux_forward's splice(2) calls, the pipe2(2) calls
 *   that make its pipes and the fcntl(2) calls that size them.
 * sigmask: the signal-mask calls that keep splice(2) from raising SIGPIPE
 *   when the process does not ignore it (see iomux_forward).
 * wait: calls that wait for or harvest events (epoll_wait, kevent,
 *   io_uring_enter). io_uring makes none for a zero-timeout iteration with
 *   nothing to submit: its completions are already in shared memory.
 * ctl: epoll_ctl calls.
 * submit: calls that only submitted queued changes: the queue (io_uring's
 *   submission ring, kqueue's changelist) filled up within one iteration, or
 *   an io_uring listener closed (its removal cannot wait for the next wait).
 * changes: fd registrations and removals that rode with a wait instead of a
 *   call of their own (io_uring SQEs, kqueue changelist entries).
 * batch: io_uring_enter calls that made the reads or the writes of several
 *   sockets at once (see iomux_loop_batching).
 * batch_read, batch_write: the reads and writes made that way, each of
 *   which would otherwise have been a read or a write syscall.
 * accept_wakeups: readiness events of listening sockets, each one a wakeup
 *   of this loop by an incoming connection. Several processes that share a
 *   listener are woken one per connection, not all at once (EPOLLEXCLUSIVE
 *   on epoll, an exclusive one-shot poll on io_uring; see iomux_listen).
 * rearm: io_uring: a listener's one-shot poll armed again once its
 *   connections were accepted (an SQE that rides with the next wait; not
 *   counted in changes, which are registrations and removals). */
#define IOMUX_STATS(X) \
  X(iterations)  X(events)     X(wait)       X(ctl)        X(accept)     \
  X(read)        X(write)      X(writev)     X(shutdown)   X(close)      \
  X(getpeername) X(getsockname) X(socket)    X(connect)    X(bind)       \
  X(listen)      X(setsockopt) X(getsockopt) X(unlink)     X(submit)     \
  X(changes)     X(splice)     X(pipe)       X(fcntl)      X(sigmask)     \
  X(batch)       X(batch_read) X(batch_write) X(accept_wakeups) \
  X(rearm)

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
  /* Bytes read per socket per iteration (256 KiB). A read never takes more
   * than the room the slab has left, so the embedder's slab size bounds it
   * too: a small slab keeps the reads of a busy socket small. */
  uint32_t read_cap;
  uint32_t accept_cap;   /* connections accepted per listener per iteration */
  uint32_t max_events;   /* kernel events harvested per wait */
  int32_t accept_retry_ms; /* back-off after EMFILE/ENFILE before accept retries */
  /* Every read and write a syscall of its own, even where the kernel could
   * make those of many sockets in one call (Linux io_uring, used whatever
   * the backend; see src/batch.c). */
  int no_batch;
} iomux_config;

/* cfg may be NULL for the defaults. On failure returns NULL and sets *err. */
iomux_loop *iomux_loop_new(const iomux_config *cfg, int *err);
/* Closes every socket and frees everything. Not during a flush callback. */
void iomux_loop_free(iomux_loop *loop);

const char *iomux_loop_backend(const iomux_loop *loop);
/* Whether the reads and writes of many sockets go in one kernel call. */
int iomux_loop_batching(const iomux_loop *loop);
/* The fd an outer event loop watches for readability. */
int iomux_loop_fd(const iomux_loop *loop);

void iomux_loop_set_flush(iomux_loop *loop, iomux_flush_fn fn, void *data);
/* words must be a multiple of IOMUX_RECORD_WORDS and at least 64 records. */
void iomux_loop_set_records(iomux_loop *loop, int32_t *buf, size_t words);
/* pos is where the next read may land. A slab smaller than read_cap caps
 * every read at its size. Before a ready socket reads on, the core delivers
 * the records so far when less than IOMUX_READ_ROOM (or read_cap, if smaller)
 * is left, so the embedder may install a new slab; an embedder that keeps a
 * slab while at least that much room is left never starves a read. */
#define IOMUX_READ_ROOM (64u * 1024)
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

/* Heap bytes the loop holds, counted when asked (a walk of the slots), for
 * memory tests and diagnostics; never on a hot path. Fixed per-loop
 * allocations (the event and record arrays, the backend's rings) are left
 * out. */
typedef struct iomux_memory {
  size_t sockets; /* socket records and the slot table, write queues,
                     timers, forwardings and their copy buffers */
  size_t pooled;  /* buffers waiting in the loop's pools for reuse: bounded,
                     whatever the number of sockets */
} iomux_memory;
void iomux_loop_memory(const iomux_loop *loop, iomux_memory *out);

/* ---- sockets -------------------------------------------------------------- */

enum iomux_listen_flags {
  IOMUX_LISTEN_REUSEPORT = 1,
  IOMUX_LISTEN_V6ONLY = 2,
  /* The client speaks first (HTTP, TLS): the kernel holds a connection back
   * until its first bytes arrive (TCP_DEFER_ACCEPT, Linux), and the core
   * reads them as it accepts, so the ACCEPT and the first DATA come in one
   * batch and a connection costs one wakeup, not two. A silent client is
   * still accepted, about a second late. Ignored where the kernel has no
   * such option, and on unix sockets. */
  IOMUX_LISTEN_DEFER_ACCEPT = 4
};

/* Binds and listens. A unix listener unlinks its path when closed.
 *
 * Every listener (this one or an adopted one) waits for connections as an
 * exclusive waiter: when several loops, in one process or in several, watch
 * the same listening socket (one inherited from a parent), a connection
 * wakes one of them, not all (stats.accept_wakeups counts the wakeups).
 * epoll: EPOLLEXCLUSIVE, Linux 4.5. io_uring: a one-shot POLL_ADD with
 * EPOLLEXCLUSIVE (the kernel refuses it on a multishot poll), armed again
 * once the accepts of the iteration are made. Exclusivity holds where the
 * loop itself sleeps on its kernel queue: always on io_uring (the ring
 * takes the wakeup whoever waits on the ring fd), on epoll only in the
 * standalone mode; an epoll set that is itself watched by another epoll
 * (the embedded mode under libuv) passes the wakeup on to the other
 * waiters (the kernel's ep_poll_callback takes an exclusive wakeup only
 * for a task asleep in epoll_wait on that very set). */
int iomux_listen(iomux_loop *loop, const struct sockaddr *addr,
                 socklen_t len, int backlog, unsigned flags);
/* Binds and listens as iomux_listen, but only makes the socket: returns its
 * fd (non-blocking, close-on-exec), which no loop watches. For a process
 * that hands listeners down to others (a supervisor to its workers, which
 * adopt it with iomux_listen_fd) and never accepts itself. The caller closes
 * it (and unlinks a unix socket's path). */
int iomux_listen_socket(iomux_loop *loop, const struct sockaddr *addr,
                        socklen_t len, int backlog, unsigned flags);
/* Adopts fd, a listening stream socket made elsewhere (inherited from a
 * parent process, passed over a unix socket): the loop accepts from it as
 * from its own listeners and owns the fd from then on (iomux_close closes
 * it; a unix socket's path is not unlinked). It is made non-blocking and
 * close-on-exec. Returns the id, or -errno and the fd is left untouched:
 * -EBADF (not an open fd), -ENOTSOCK (not a socket), -EINVAL (not a stream
 * socket, or not listening). flags: none yet, must be 0. */
int iomux_listen_fd(iomux_loop *loop, int fd, unsigned flags);
/* Adopts fd, a connected stream socket made elsewhere (a socketpair end
 * inherited from a parent, say): as iomux_listen_fd, for a stream socket
 * that is not listening. Its peer address is read once (getpeername). */
int iomux_adopt(iomux_loop *loop, int fd);
/* Starts a non-blocking connect; IOMUX_EV_CONNECT reports the outcome. */
int iomux_connect(iomux_loop *loop, const struct sockaddr *addr,
                  socklen_t len);
/* The same, bound first to local (same family; port 0 lets the kernel
 * choose). local NULL is iomux_connect(). */
int iomux_connect_from(iomux_loop *loop, const struct sockaddr *addr,
                       socklen_t len, const struct sockaddr *local,
                       socklen_t local_len);

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
 * only then does the peer see the close. A listener is released at once.
 * Closing a forwarding socket ends its forwarding (see iomux_forward). */
int iomux_close(iomux_loop *loop, int id);
/* Closes a stream socket with a TCP RST (SO_LINGER 0): queued bytes are
 * dropped and the peer sees ECONNRESET. */
int iomux_reset(iomux_loop *loop, int id);

int iomux_set_reading(iomux_loop *loop, int id, int on);
int iomux_cork(iomux_loop *loop, int id, int on);
/* Idle timeout: IOMUX_EV_TIMEOUT after ms without reads or writes; 0 disables.
 * Activity re-arms it with no syscall and no allocation. */
int iomux_set_timeout(iomux_loop *loop, int id, uint32_t ms);
int iomux_set_nodelay(iomux_loop *loop, int id, int on);
int iomux_set_keepalive(iomux_loop *loop, int id, int on, unsigned delay_s);
/* The kernel's send (send != 0, SO_SNDBUF) or receive (SO_RCVBUF) buffer of
 * a connected socket, in bytes (1 to INT_MAX, else -EINVAL). A fixed size
 * turns off the kernel's autotuning of that buffer; Linux doubles the value
 * for its bookkeeping and clamps it to net.core.wmem_max / rmem_max. */
int iomux_set_bufsize(iomux_loop *loop, int id, int send, int bytes);
/* The size the kernel reports for that buffer (getsockopt), or -errno. */
int iomux_get_bufsize(iomux_loop *loop, int id, int send);

/* The peer as seen at accept or connect time: never a syscall, still valid
 * until the id is recycled. */
int iomux_peer_address(iomux_loop *loop, int id, struct sockaddr_storage *ss,
                       socklen_t *len);
/* The credentials of a unix socket's peer, as the kernel recorded them at
 * connect time (SO_PEERCRED; getpeereid() where there is no such option,
 * which gives no pid: *pid is then -1). -EBADF, -ENOTSUP (no way to ask),
 * or the getsockopt's -errno (a TCP socket: -EINVAL or -ENOTCONN...). */
int iomux_peer_cred(iomux_loop *loop, int id, uid_t *uid, gid_t *gid,
                    pid_t *pid);
/* A connected pair of unix stream sockets, non-blocking and close-on-exec,
 * which no loop watches yet: one end to hand to a child process, the other
 * to adopt (iomux_adopt). 0 or -errno. */
int iomux_socketpair(iomux_loop *loop, int fds[2]);
/* getsockname() of an fd no loop watches (iomux_listen_socket's), counted. */
int iomux_fd_local_address(iomux_loop *loop, int fd, struct sockaddr_storage *ss,
                           socklen_t *len);
/* getsockname(), counted. */
int iomux_local_address(iomux_loop *loop, int id, struct sockaddr_storage *ss,
                        socklen_t *len);

/* ---- forwarding ----------------------------------------------------------- */

/* Bytes move between two sockets inside the core, a->b and b->a, without
 * ever reaching the embedder: on Linux with splice(2) through a pipe per
 * direction, elsewhere (or for a socket splice(2) refuses, or with
 * IOMUX_FORWARD_COPY) with read and send through a buffer per direction.
 *
 *   - Bytes already queued for a socket (iomux_write) go out before anything
 *     forwarded to it. Until the forwarder first reads from a, the embedder
 *     may still write to b (and b to a): bytes it read itself come first.
 *     Records already delivered in the current batch may still carry DATA it
 *     must pass on that way. Afterwards writes fail with -EBUSY.
 *   - Backpressure: no more than high_water bytes read from one side wait
 *     for the other to accept them; reading resumes on the writable edge.
 *   - Half-close: a's FIN, once everything before it was delivered, becomes
 *     shutdown(b, SHUT_WR), and b->a keeps flowing (and the other way).
 *   - An error or reset on one side resets the other (SO_LINGER {1, 0}, then
 *     close) and ends the forwarding. So does idle_ms without a byte moved
 *     either way (both sides are reset), and iomux_close() of either socket
 *     by the embedder (the other is reset).
 *   - When it ends, both sockets are closed and one IOMUX_EV_FORWARD_END
 *     record (with its IOMUX_EV_FORWARD_BYTES) reports why. It is delivered
 *     in the iteration that ended it, or in the next when the embedder's
 *     iomux_close() ended it; the two ids are not reused before that.
 *   - No DATA, EOF, DRAIN, ERROR or TIMEOUT records for either socket follow
 *     the current batch; their idle timeouts are replaced by idle_ms.
 *
 * SIGPIPE: splice(2) cannot take MSG_NOSIGNAL. When the process does not
 * ignore SIGPIPE (checked at each iomux_forward), the forwarder blocks it in
 * the calling thread around its splices to a socket and consumes the one an
 * EPIPE raised (counted in stats.sigmask); a process that ignores it (Node
 * does) pays nothing. */

enum iomux_forward_flags {
  IOMUX_FORWARD_COPY = 1 /* read/send through a buffer even where splice works */
};

typedef struct iomux_forward_opts {
  uint32_t idle_ms;    /* end after this long without a byte moved; 0: never */
  uint32_t high_water; /* bytes in flight per direction; 0: 64 KiB */
  uint32_t flags;      /* IOMUX_FORWARD_* */
} iomux_forward_opts;

/* Why a forwarding ended: the low byte of a FORWARD_END's word 3. */
enum iomux_forward_reason {
  IOMUX_FWD_DONE = 0,    /* both directions delivered their FIN */
  IOMUX_FWD_RESET_A,     /* a failed (errno: ECONNRESET, EPIPE, ETIMEDOUT...) */
  IOMUX_FWD_RESET_B,     /* b failed */
  IOMUX_FWD_ERROR,       /* a local failure (errno: ENOMEM...) */
  IOMUX_FWD_TIMEOUT,     /* idle_ms passed without a byte moved */
  IOMUX_FWD_CLOSED       /* the embedder closed one of the sockets */
};

/* Starts forwarding between the connected stream sockets a and b (opts may
 * be NULL). Returns 0, or -errno: -EBADF (not an open stream), -EINVAL
 * (a == b), -EBUSY (already forwarding), -ENOTCONN (still connecting),
 * -EPIPE (a socket failed, or its write side was shut while the other can
 * still send), -ENOMEM. The bytes start moving in the next iteration (or,
 * when called during a delivery, once the batch was delivered). */
int iomux_forward(iomux_loop *loop, int a, int b,
                  const iomux_forward_opts *opts);

typedef struct iomux_forward_info {
  uint64_t bytes[2];    /* delivered a->b, b->a */
  uint32_t inflight[2]; /* read from a (b) and not yet accepted by b (a) */
  uint32_t high_water;  /* the bound on each inflight */
  uint32_t splicing[2]; /* 1 when the direction moves with splice(2) */
} iomux_forward_info;

/* The state of the forwarding a (or b) belongs to: -ENOENT when none. */
int iomux_forward_info_get(iomux_loop *loop, int id, iomux_forward_info *info);

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
