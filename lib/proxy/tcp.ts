// tcp.ts -- TCP mode: each client connection is relayed, bytes as they are,
// to one upstream chosen by the balancer (the next one on a connect failure).
import type { Socket } from '../socket';
import {
  clientFromHeader, clientOf, connectWithFailover, describeClient, readProxyHeader,
  type ClientInfo, type ProxyCore, type Session,
} from './core';
import { relay } from './relay';
import type { Upstream } from './upstream';

/** One listener for every relayed socket's 'error' ('close' follows it). */
function ignoreError(): void {}

export class TcpSession implements Session {
  private upstreamSocket: Socket | null = null;
  private upstream: Upstream | null = null;

  constructor(private readonly core: ProxyCore, private readonly socket: Socket) {
    // The client stays paused (the server accepts with pauseOnConnect) until
    // its upstream is connected: its bytes wait in the kernel meanwhile.
    socket.on('error', ignoreError); // a client's reset is no error of the proxy's
    socket.on('close', () => core._sessionClosed(this));
    void this.run();
  }

  /** A relayed connection is never idle: a drain waits for it until the deadline. */
  get idle(): boolean {
    return false;
  }

  drain(): void {
    // Nothing to say to a byte stream: it ends when its peers end it.
  }

  destroy(): void {
    this.socket.destroy();
    this.upstreamSocket?.destroy();
  }

  private async run(): Promise<void> {
    const core = this.core;
    const socket = this.socket;
    let client: ClientInfo = clientOf(socket);
    let rest: Buffer | null = null;
    if (core.options.acceptProxy !== false) {
      try {
        const r = await readProxyHeader(socket, core.options.acceptProxy, core.options.proxyHeaderTimeout);
        client = clientFromHeader(socket, r.header);
        rest = r.rest;
      } catch (err) {
        core._counters.proxyHeaderErrors++;
        core._log({
          level: 'warn', event: 'proxy-header', client: describeClient(client),
          message: `closing the connection: ${(err as Error).message}`,
        });
        socket.destroy();
        return;
      }
    }
    if (socket.destroyed) return;
    let up: { socket: Socket; upstream: Upstream };
    try {
      up = await connectWithFailover(core, client, new Set());
    } catch (err) {
      core._counters.noUpstream++;
      core._log({
        level: 'error', event: 'no-upstream', client: describeClient(client),
        message: `no upstream could be reached (${(err as Error).message}); closing the connection`,
      });
      socket.destroy();
      return;
    }
    const { socket: upSocket, upstream } = up;
    this.upstreamSocket = upSocket;
    this.upstream = upstream;
    if (socket.destroyed) {
      upSocket.destroy();
      upstream.load--;
      return;
    }
    upSocket.on('error', ignoreError);
    if (rest !== null && rest.length > 0) {
      upSocket.write(rest);
      upstream.counters.bytesOut += rest.length;
    }
    const r = await relay(socket, upSocket, { idleMs: core.options.idleTimeout });
    upstream.load--;
    upstream.counters.bytesOut += r.bytesAtoB;
    upstream.counters.bytesIn += r.bytesBtoA;
    if (r.reason === 'resetB') {
      upstream.counters.resets++;
      upstream._passiveFailure(core.options.passiveFailures, core.options.passiveCooldown, 'reset');
      core._log({
        level: 'warn', event: 'upstream-reset', upstream: upstream.name, client: describeClient(client),
        message: `upstream connection failed mid-stream (${(r.error as (Error & { code?: string }) | undefined)?.code ?? 'closed'}); client connection closed`,
      });
    } else if (r.reason === 'timeout') {
      upstream.counters.timeouts++;
    }
  }
}
