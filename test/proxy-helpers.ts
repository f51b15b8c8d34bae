// Helpers shared by the proxy tests.
import type { Test } from 'tap';
import { once } from 'node:events';
import { closeServer, iomux, listen } from './helpers';
import { createProxy, type LogEntry, type Proxy, type ProxyOptions } from '../dist/proxy';

/** A proxy listening on an ephemeral port, closed at teardown; its log entries are kept. */
export async function startProxy(t: Test, options: ProxyOptions): Promise<{ proxy: Proxy; port: number; logs: LogEntry[] }> {
  const proxy = createProxy(options);
  const logs: LogEntry[] = [];
  proxy.on('log', (e: LogEntry) => logs.push(e));
  proxy.listen(0, '127.0.0.1');
  await once(proxy, 'listening');
  const a = proxy.address();
  if (a === null || typeof a === 'string') throw new Error('no address');
  t.teardown(() => proxy.close({ deadline: 0 }));
  return { proxy, port: a.port, logs };
}

/** A port nothing listens on (bound, then closed). */
export async function deadPort(): Promise<number> {
  const s = iomux.createServer();
  const port = await listen(s);
  await closeServer(s);
  return port;
}
