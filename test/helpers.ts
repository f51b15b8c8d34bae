// Shared helpers for the tap tests.
import { once } from 'node:events';
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as iomux from '../dist';

export { iomux };

/** Listens on an ephemeral port of host (default 127.0.0.1); resolves to the port. */
export async function listen(server: iomux.Server, host = '127.0.0.1'): Promise<number> {
  server.listen(0, host);
  await once(server, 'listening');
  const a = server.address();
  if (a === null || typeof a === 'string') throw new Error('not a TCP server');
  return a.port;
}

/** Resolves when the socket is connected. */
export async function connected(socket: iomux.Socket): Promise<iomux.Socket> {
  if (!socket.connecting && socket._id >= 0) return socket;
  await once(socket, 'connect');
  return socket;
}

/** Collects everything a socket receives until 'end' (or 'close'). */
export function collect(socket: iomux.Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('end', () => resolve(Buffer.concat(chunks)));
    socket.on('close', () => resolve(Buffer.concat(chunks)));
  });
}

/** Closes a server and waits for its 'close'. */
export function closeServer(server: iomux.Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
  });
}

/** A fresh directory for unix socket paths. */
export function tempDir(prefix = 'iomux-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** How many fds this process has open (Linux). */
export function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A snapshot of the loop's counters, and the difference since. */
export function statsDelta(): () => Record<string, number> {
  const before = iomux.loop.stats() as unknown as Record<string, number>;
  return () => {
    const now = iomux.loop.stats() as unknown as Record<string, number>;
    const d: Record<string, number> = {};
    for (const k of Object.keys(now)) d[k] = now[k]! - (before[k] ?? 0);
    return d;
  };
}
