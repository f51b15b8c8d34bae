/*
 * iomux_sync.h -- the region of the cross-process primitives (semaphores,
 * mutexes, shared variables): one small shared mapping that a master creates
 * and every worker maps from an inherited fd. The C side only creates,
 * validates and maps it; the operations are 32-bit atomics on its words,
 * done by the users of the mapping (lib/shared/sync.ts).
 *
 * Layout (bytes, little-endian 32-bit words):
 *   0     header (64 bytes): magic, version, total size, slots, ledger rows,
 *         value capacity, offset of the slots, of the ledgers, of the values
 *   slots nslots records of IOMUX_SYNC_SLOT bytes (state words of one
 *         primitive each)
 *   ledg  rows x nslots int32: each container's net contribution to each
 *         protected semaphore (increments minus successful decrements)
 *   vals  nslots x 2 buffers of value_cap bytes (a shared variable's
 *         double buffer)
 *   lives rows x IOMUX_SYNC_LIFE bytes: each container's life lock, a
 *         robust process-shared mutex its main thread holds until it dies
 */
#ifndef IOMUX_SYNC_H
#define IOMUX_SYNC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define IOMUX_SYNC_MAGIC 0x594e5953u /* "SYNY" */
#define IOMUX_SYNC_VERSION 2u
#define IOMUX_SYNC_HEADER 64u
#define IOMUX_SYNC_SLOT 64u
#define IOMUX_SYNC_LIFE 64u
#define IOMUX_SYNC_MAX_SLOTS 65536u
#define IOMUX_SYNC_MAX_ROWS 4096u
#define IOMUX_SYNC_MAX_VALUE (16u << 20)

typedef struct iomux_sync_layout {
  uint32_t nslots;    /* primitives in the table */
  uint32_t rows;      /* ledger rows: containers alive at once (+ the master) */
  uint32_t value_cap; /* bytes of one shared variable's value (multiple of 8) */
} iomux_sync_layout;

/* header word indexes (32-bit words from the start) */
enum {
  IOMUX_SYNC_H_MAGIC = 0,
  IOMUX_SYNC_H_VERSION = 1,
  IOMUX_SYNC_H_SIZE = 2,
  IOMUX_SYNC_H_NSLOTS = 3,
  IOMUX_SYNC_H_ROWS = 4,
  IOMUX_SYNC_H_VALUE_CAP = 5,
  IOMUX_SYNC_H_OFF_SLOTS = 6,
  IOMUX_SYNC_H_OFF_LEDGER = 7,
  IOMUX_SYNC_H_OFF_VALUES = 8,
  IOMUX_SYNC_H_OFF_LIVES = 9,
};

/* Bytes a region of this layout needs, or 0 if the layout is out of range. */
size_t iomux_sync_size(const iomux_sync_layout *l);

/* Creates an anonymous region (memfd, mode 0600) with this layout and maps
 * it: 0 and *fd, *base, *size, or -errno (-EINVAL for a bad layout). */
int iomux_sync_create(const iomux_sync_layout *l, int *fd, void **base, size_t *size);

/* Maps the region behind fd after checking its header against its size:
 * 0, or -errno with a reason in errbuf (-EPROTO for a bad header). */
int iomux_sync_attach(int fd, void **base, size_t *size, char *errbuf, size_t errlen);

void iomux_sync_unmap(void *base, size_t size);

/* Life locks: how the master learns of a container's death as soon as its
 * main thread is gone, before the kernel has torn the rest of the process
 * down (its other threads, its memory, its fds: tens of milliseconds for a
 * Node process on a loaded machine, after which come SIGCHLD and EOF).
 *
 * iomux_sync_life_init (master, before it hands out row): a fresh unlocked
 * robust process-shared mutex. iomux_sync_life_hold (the container's main
 * thread, once): locks it for good; the kernel releases it with
 * EOWNERDEAD when that thread exits. iomux_sync_life_wait (a master thread):
 * waits up to timeout_ms for that: 1 the holder is gone (the lock is made
 * consistent and released again), 0 the timeout, or -errno. All return
 * -EINVAL for a row out of range. */
int iomux_sync_life_init(void *base, uint32_t row);
int iomux_sync_life_hold(void *base, uint32_t row);
int iomux_sync_life_wait(void *base, uint32_t row, int timeout_ms);

/* Doorbells: the direct wake-up between two processes of the region. Each
 * process that waits binds a unix datagram socket at a path in a directory
 * only its uid can enter; a releaser sends one datagram (the slot number) to
 * the path of the process at the head of a slot's queue, which wakes its
 * event loop once. A ring is a hint: the woken process re-checks the region.
 *
 * iomux_sync_bell_open: binds a non-blocking, close-on-exec datagram socket
 * at path (a stale file there is removed first), mode 0600: its fd or
 * -errno (-ENAMETOOLONG if path does not fit a sockaddr_un). */
int iomux_sync_bell_open(const char *path);

/* An unbound non-blocking datagram socket to ring from: fd or -errno. */
int iomux_sync_bell_sender(void);

/* Sends one ring (slot) from sender to the bell at path: 0, or -errno:
 * -ENOENT or -ECONNREFUSED when no process listens there any more, -EAGAIN
 * when its queue is full (it has rings to read, so it wakes anyway). */
int iomux_sync_bell_ring(int sender, const char *path, uint32_t slot);

/* Reads every ring waiting on a bell's fd: how many (>= 0), or -errno. */
int iomux_sync_bell_drain(int fd);

#ifdef __cplusplus
}
#endif

#endif
