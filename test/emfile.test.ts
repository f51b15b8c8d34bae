// EMFILE: an iomux server in a child with RLIMIT_NOFILE = 64 runs out of fds
// while the parent keeps connecting. It must keep serving what it has, not
// spin on the listener's readiness, report the EMFILE, and accept again as
// soon as fds free up.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import * as net from 'node:net';
import t from 'tap';
import { childEnv, fixturesDir, sleep, waitFor } from './helpers';

const LIMIT = 64;
const CLIENTS = 70;

interface Msg { type: string; [k: string]: any }
/** A subtest's `t` (the last overload of t.test takes only the callback). */
type TestT = Parameters<Parameters<typeof t.test>[0]>[0];

class Client {
  got = '';
  closed = false;
  readonly hello: string;
  constructor(readonly i: number, readonly sock: net.Socket) {
    this.hello = `hello ${i}\n`;
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => { this.got += d; });
    sock.on('error', () => {});
    sock.on('close', () => { this.closed = true; });
  }
  get served(): boolean {
    return this.got.startsWith(this.hello);
  }
}

/** The EMFILE fixture in a child with `ulimit -n LIMIT`, and its IPC messages. */
function startChild(t: TestT, arg?: string) {
  const child: ChildProcess = spawn('sh', ['-c', `ulimit -n ${LIMIT} && exec "${process.execPath}" emfile-server.js ${arg ?? ''}`], {
    cwd: fixturesDir,
    env: childEnv(),
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  const io = { child, msgs: [] as Msg[], stderr: '', clients: [] as Client[], exited: once(child, 'exit') };
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { io.stderr += d; });
  child.stdout!.resume();
  child.on('message', (m: Msg) => io.msgs.push(m));
  t.teardown(() => {
    for (const c of io.clients) c.sock.destroy();
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return io;
}

/** Opens n clients one after the other; each says hello once connected. */
async function connectMany(io: ReturnType<typeof startChild>, port: number, n: number): Promise<Client[]> {
  const made: Client[] = [];
  for (let k = 0; k < n; k++) {
    const c = new Client(io.clients.length, net.connect(port, '127.0.0.1'));
    io.clients.push(c);
    made.push(c);
    await once(c.sock, 'connect');
    c.sock.write(c.hello);
  }
  return made;
}

/** Waits until no new echo arrived for 300 ms; resolves to the served count. */
async function settle(clients: Client[]): Promise<number> {
  let served = -1;
  for (let stable = 0; stable < 3;) {
    await sleep(100);
    const n = clients.filter((c) => c.served).length;
    stable = n === served ? stable + 1 : 0;
    served = n;
  }
  return served;
}

t.test('EMFILE in a child with ulimit -n 64', async (t) => {
  const io = startChild(t);
  const { child, msgs } = io;
  const clients = io.clients;
  const next = async (type: string, ms = 5000): Promise<Msg | undefined> => {
    const seen = msgs.length;
    await waitFor(() => msgs.slice(seen).some((m) => m.type === type) || child.exitCode !== null, ms);
    return msgs.slice(seen).find((m) => m.type === type);
  };

  await waitFor(() => msgs.some((m) => m.type === 'listening') || child.exitCode !== null, 10000);
  const port = msgs.find((m) => m.type === 'listening')?.port as number;
  t.ok(port > 0, `the child listens (stderr: ${io.stderr.slice(0, 300)})`);
  if (!port) return;

  // Connect until well past the limit; each client says hello once connected.
  await connectMany(io, port, CLIENTS);
  t.ok(await waitFor(() => msgs.some((m) => m.type === 'error'), 5000), 'the server reports an error');
  const err = msgs.find((m) => m.type === 'error');
  t.match(err, { code: 'EMFILE', syscall: 'accept' }, 'EMFILE from accept');

  // Let the served set settle: no new echo for 300 ms.
  const served = await settle(clients);
  const pending = clients.filter((c) => !c.served);
  const accepted = (msgs.filter((m) => m.type === 'connection').at(-1)?.count ?? 0) as number;
  t.comment(`served ${served}, pending ${pending.length}, accepted ${accepted}`);
  t.ok(served > 0 && served < LIMIT, `some connections were served (${served})`);
  t.ok(pending.length > 0, `some connections wait in the backlog (${pending.length})`);
  t.equal(accepted, served, 'every accepted connection was served');
  t.equal(child.exitCode, null, 'the child is alive');

  // Existing connections keep working.
  const some = clients.filter((c) => c.served).slice(0, 5);
  for (const c of some) c.sock.write(`again ${c.i}\n`);
  t.ok(await waitFor(() => some.every((c) => c.got === `${c.hello}again ${c.i}\n`), 3000), 'echo still works on accepted connections');

  // No spinning: over 500 ms in which no fd frees up, the loop stays quiet.
  child.send({ cmd: 'measure', ms: 500 });
  const m = await next('measured', 5000);
  t.ok(m, 'the child measured');
  t.comment(`over 500 ms: ${JSON.stringify(m?.delta)}`);
  t.ok(m!.delta.accept < 50, `accept() calls: ${m!.delta.accept} (< 50)`);
  t.ok(m!.delta.iterations < 50, `iterations: ${m!.delta.iterations} (< 50)`);
  t.ok(m!.delta.wait < 50, `waits: ${m!.delta.wait} (< 50)`);
  t.equal(m!.open, served, 'still holding every connection');
  t.equal(clients.filter((c) => c.served).length, served, 'nothing was accepted meanwhile');

  // Free some fds: the pending connections get accepted and served.
  const toClose = clients.filter((c) => c.served).slice(0, Math.min(served, pending.length + 5));
  for (const c of toClose) c.sock.end();
  const expectServed = Math.min(pending.length, toClose.length);
  t.ok(await waitFor(() => pending.filter((c) => c.served).length >= expectServed, 10000),
    `pending connections are served once fds free up (${pending.filter((c) => c.served).length}/${expectServed})`);
  if (expectServed === pending.length) t.ok(pending.every((c) => c.served), 'all of them');
  const stillOpen = clients.filter((c) => c.served && !toClose.includes(c)).slice(0, 3);
  for (const c of stillOpen) c.sock.write('third\n');
  t.ok(await waitFor(() => stillOpen.every((c) => c.got.endsWith('third\n')), 3000), 'old connections still echo');

  child.send({ cmd: 'exit' });
  t.ok(await waitFor(() => child.exitCode !== null || child.signalCode !== null, 10000), 'the child exits by itself');
  const [code, signal] = await io.exited;
  t.equal(signal, null, 'not by a signal');
  t.equal(code, 0, `exit code 0 (stderr: ${io.stderr.slice(0, 300)})`);
});

t.test('EMFILE with no error listener: one warning, no crash, and accepting resumes', async (t) => {
  const io = startChild(t, 'no-error-listener');
  const { child, msgs } = io;
  await waitFor(() => msgs.some((m) => m.type === 'listening') || child.exitCode !== null, 10000);
  const port = msgs.find((m) => m.type === 'listening')?.port as number;
  t.ok(port > 0, `the child listens (stderr: ${io.stderr.slice(0, 300)})`);
  if (!port) return;

  const first = await connectMany(io, port, CLIENTS);
  t.ok(await waitFor(() => msgs.some((m) => m.type === 'warning'), 5000), 'a warning instead of an error event');
  await settle(io.clients);
  const warnings = msgs.filter((m) => m.type === 'warning');
  t.equal(warnings.length, 1, 'one warning');
  t.match(warnings[0], { name: 'IomuxWarning', message: /EMFILE/ });
  t.equal(child.exitCode, null, 'the child is alive');
  const pending = first.filter((c) => !c.served);
  t.ok(pending.length > 0, `some connections wait (${pending.length})`);

  // Free fds: the waiting ones get served.
  const toClose = first.filter((c) => c.served).slice(0, pending.length + 5);
  for (const c of toClose) c.sock.end();
  t.ok(await waitFor(() => pending.every((c) => c.served), 10000), 'the waiting connections are served');

  // A second episode: still only the one warning.
  await connectMany(io, port, 20);
  await settle(io.clients);
  t.ok(io.clients.some((c) => !c.served && !c.closed), 'out of fds again');
  t.equal(msgs.filter((m) => m.type === 'warning').length, 1, 'no second warning');

  child.send({ cmd: 'exit' });
  t.ok(await waitFor(() => child.exitCode !== null || child.signalCode !== null, 10000), 'the child exits by itself');
  const [code, signal] = await io.exited;
  t.equal(signal, null);
  t.equal(code, 0, `exit code 0 (stderr: ${io.stderr.slice(0, 300)})`);
});
