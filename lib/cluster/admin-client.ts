// admin-client.ts -- one request to a supervisor's admin socket (iomux-ctl).
import { once } from 'node:events';
import { connect } from '../socket';
import { Channel } from './channel';
import { FrameType, type Frame } from './protocol';
import { adminPath, defaultRunDir } from './rundir';

/** Sends one admin command (list, restart, send, shutdown) and resolves with the reply. */
export async function adminRequest(op: string, args: Record<string, unknown> = {},
  runDir = defaultRunDir(), timeoutMs = 60000): Promise<unknown> {
  const socket = connect({ path: adminPath(runDir) });
  socket.on('error', () => {}); // reported through the channel's close
  const channel = new Channel(socket);
  const refused = new Promise<never>((_, reject) => {
    channel.on('frame', (f: Frame) => {
      if (f.type === FrameType.ERROR) {
        const b = (f.body ?? {}) as { message?: string; code?: string };
        reject(Object.assign(new Error(b.message ?? 'refused'), { code: b.code }));
      }
    });
  });
  refused.catch(() => {}); // handled by the race below, maybe after it settled
  try {
    if (socket.connecting) {
      await Promise.race([once(socket, 'connect'), once(socket, 'error').then(([e]) => { throw e; })]);
    }
    // The refusal first: it may have come (and the channel closed) before the request went.
    return await Promise.race([refused, channel.request(op, args, timeoutMs)]);
  } finally {
    channel.destroy();
  }
}
