// Helpers of the ZeroMQ tests.
import { mkdtempSync, chmodSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { iomux } from './helpers';

/** An ipc:// endpoint in a fresh 0700 directory. */
export function ipcEndpoint(name = 'zmq.sock'): string {
  const dir = mkdtempSync(join(tmpdir(), 'iomux-zmq-'));
  chmodSync(dir, 0o700);
  return `ipc://${join(dir, name)}`;
}

export const TRANSPORTS = ['tcp', 'ipc'] as const;

/** A bind endpoint for a transport: tcp on 127.0.0.1 with any port, or ipc in a 0700 dir. */
export function bindEndpoint(transport: 'tcp' | 'ipc'): string {
  return transport === 'tcp' ? 'tcp://127.0.0.1:*' : ipcEndpoint();
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Waits until cond() holds, polling; throws after ms. */
export async function until(cond: () => boolean, ms = 5000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

export function fdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

/** Timers armed on the iomux loop. */
export function loopTimers(): number {
  return (iomux.loop as unknown as { _timers: { heap: unknown[] } })._timers.heap.length;
}

export const str = (frames: Buffer[]) => frames.map((f) => f.toString());
