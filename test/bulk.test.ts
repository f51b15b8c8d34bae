// 256 MiB through an echo server with small write buffers, random chunk
// sizes, write()/'drain' backpressure and random pause()/resume() at both
// ends. SHA-256 of what was sent, what the server received and what came
// back must agree, and every byte counter must be exact.
import t, { type Test } from 'tap';
import { once } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { closeServer, connected, iomux, listen, openFds, settleFds, tempDir } from './helpers';

const TOTAL = Number(process.env.IOMUX_BULK_MIB ?? 256) * 1024 * 1024;
const MAX_CHUNK = 256 * 1024;
const POOL = randomBytes(4 * 1024 * 1024);

/**
 * mulberry32: a small seeded PRNG. IOMUX_BULK_SEED replays the buffer sizes
 * and the sequence of writes; pauses depend on timing as well.
 */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

interface SideStats {
  falses: number;      // write() returned false
  maxQueued: number;   // largest writableLength seen right after a false
  drains: number;
  randomPauses: number;
}

const newStats = (): SideStats => ({ falses: 0, maxQueued: 0, drains: 0, randomPauses: 0 });

/** Pauses a socket while any reason holds; resumes it when none does. */
function pauser(s: iomux.Socket) {
  const reasons = new Set<string>();
  return {
    hold(reason: string) {
      reasons.add(reason);
      s.pause();
    },
    release(reason: string) {
      reasons.delete(reason);
      if (reasons.size === 0 && !s.destroyed) s.resume();
    },
  };
}

async function bulk(t: Test, transport: 'tcp' | 'unix', seed: number): Promise<void> {
  const wrnd = prng(seed); // sizes and writes: reproducible from the seed
  const rnd = prng(seed ^ 0x5bd1e995); // pauses: their order depends on timing
  const int = (lo: number, hi: number, r = rnd) => lo + Math.floor(r() * (hi - lo + 1));
  const serverHwm = int(1, 16, wrnd) * 1024;
  const clientHwm = int(1, 16, wrnd) * 1024;
  t.comment(`seed=${seed} total=${TOTAL} serverHwm=${serverHwm} clientHwm=${clientHwm}`);

  const fdsBefore = openFds();
  const server = iomux.createServer({ writableHighWaterMark: serverHwm });
  const srv = newStats();
  const serverIn = createHash('sha256');
  let serverSocket: iomux.Socket | undefined;
  const serverDone = new Promise<void>((resolve, reject) => {
    server.on('connection', (s) => {
      serverSocket = s;
      t.equal(s.writableHighWaterMark, serverHwm, 'accepted socket took the server writableHighWaterMark');
      const p = pauser(s);
      s.on('data', (d: Buffer) => {
        serverIn.update(d);
        if (!s.write(d)) {
          srv.falses++;
          srv.maxQueued = Math.max(srv.maxQueued, s.writableLength);
          p.hold('drain');
        }
        if (rnd() < 0.02) {
          srv.randomPauses++;
          p.hold('random');
          setTimeout(() => p.release('random'), int(0, 3));
        }
      });
      s.on('drain', () => {
        srv.drains++;
        p.release('drain');
      });
      s.on('end', () => s.end());
      s.on('error', reject);
      s.on('close', () => resolve());
    });
  });

  let where: string | number;
  let dir: string | undefined;
  if (transport === 'tcp') {
    where = await listen(server);
  } else {
    dir = tempDir('iomux-bulk-');
    where = join(dir, 'bulk.sock');
    server.listen(where);
    await once(server, 'listening');
  }
  t.teardown(async () => {
    await closeServer(server);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const c = new iomux.Socket({ writableHighWaterMark: clientHwm });
  if (typeof where === 'number') c.connect(where, '127.0.0.1');
  else c.connect(where);
  await connected(c);
  t.equal(c.writableHighWaterMark, clientHwm);

  const cli = newStats();
  const sentHash = createHash('sha256');
  const backHash = createHash('sha256');
  let back = 0;
  const cp = pauser(c);
  const clientDone = new Promise<void>((resolve, reject) => {
    c.on('data', (d: Buffer) => {
      backHash.update(d);
      back += d.length;
      if (rnd() < 0.02) {
        cli.randomPauses++;
        cp.hold('random');
        setTimeout(() => cp.release('random'), int(0, 3));
      }
    });
    c.on('error', reject);
    c.on('end', () => resolve());
  });
  const clientClosed = once(c, 'close');
  c.on('drain', () => cli.drains++);

  // The writer: random sizes from 1 byte to 256 KiB, waiting for 'drain' after every false.
  let sent = 0;
  let writes = 0;
  let needDrainMissed = 0;
  while (sent < TOTAL) {
    // half uniform in 1 B..256 KiB, half log-uniform (many small writes too)
    const size = wrnd() < 0.5 ? int(1, MAX_CHUNK, wrnd) : Math.max(1, Math.floor(Math.exp(wrnd() * Math.log(MAX_CHUNK))));
    const n = Math.min(size, TOTAL - sent);
    const off = int(0, POOL.length - n, wrnd);
    const chunk = POOL.subarray(off, off + n);
    sentHash.update(chunk);
    sent += n;
    writes++;
    if (!c.write(chunk)) {
      cli.falses++;
      cli.maxQueued = Math.max(cli.maxQueued, c.writableLength);
      if (!c.writableNeedDrain) needDrainMissed++;
      await once(c, 'drain');
    }
  }
  c.end();
  await Promise.all([clientDone, serverDone, clientClosed]);

  const sentDigest = sentHash.digest('hex');
  t.equal(serverIn.digest('hex'), sentDigest, 'the server received exactly what the client sent (sha256)');
  t.equal(backHash.digest('hex'), sentDigest, 'the client got back exactly what it sent (sha256)');
  t.equal(back, TOTAL, 'bytes echoed back');
  t.equal(c.bytesWritten, TOTAL, 'client bytesWritten');
  t.equal(c.bytesRead, TOTAL, 'client bytesRead');
  t.equal(serverSocket!.bytesRead, TOTAL, 'server bytesRead');
  t.equal(serverSocket!.bytesWritten, TOTAL, 'server bytesWritten');
  t.comment(`writes=${writes} client ${JSON.stringify(cli)} server ${JSON.stringify(srv)}`);
  t.ok(cli.falses > 0 && cli.maxQueued > 0, 'client: write() returned false with bytes really queued (writableLength > 0)');
  t.ok(cli.drains > 0, "client: 'drain' fired");
  t.equal(cli.drains, cli.falses, "client: exactly one 'drain' per false");
  t.ok(srv.falses > 0 && srv.maxQueued > 0, 'server: write() returned false with bytes really queued (writableLength > 0)');
  t.ok(srv.drains > 0, "server: 'drain' fired");
  t.ok(cli.randomPauses > 0 && srv.randomPauses > 0, 'random pauses happened at both ends');
  t.equal(needDrainMissed, 0, 'writableNeedDrain was true after every false');
  t.equal(c.writableLength, 0, 'nothing left queued');
  await closeServer(server);
  t.equal(await settleFds(fdsBefore), fdsBefore, 'no fd left open');
}

const seed = Number(process.env.IOMUX_BULK_SEED ?? Math.floor(Math.random() * 2 ** 32));

t.test(`${TOTAL >> 20} MiB echo over TCP with backpressure and random pauses`, (t) => bulk(t, 'tcp', seed));
t.test(`${TOTAL >> 20} MiB echo over a unix socket with backpressure and random pauses`, (t) => bulk(t, 'unix', (seed + 1) >>> 0));
