// The iomux-proxy command: a JSON config file, the --stats endpoint, SIGUSR2
// printing the statistics, and SIGTERM draining (a slow request under way
// completes, then the process exits well before its deadline); bad arguments.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import * as http from 'node:http';
import { join } from 'node:path';
import { childEnv, iomux, jsonLines, listen, runNode, tempDir, waitFor } from './helpers';

const BIN = join(__dirname, '..', 'bin', 'iomux-proxy.js');

interface Running {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function start(args: string[]): Running {
  const child = spawn(process.execPath, [BIN, ...args], { env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { err += d; });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('close', (code, signal) => resolve({ code, signal }));
  });
  const killer = setTimeout(() => child.kill('SIGKILL'), 30000);
  void exited.then(() => clearTimeout(killer));
  return { child, stdout: () => out, stderr: () => err, exited };
}

/** The port a line of stderr matching re announces. */
async function portFrom(r: Running, re: RegExp): Promise<number> {
  const ok = await waitFor(() => re.test(r.stderr()), 10000);
  if (!ok) throw new Error(`no match for ${re} in: ${r.stderr()}`);
  return Number(re.exec(r.stderr())![1]);
}

function get(port: number, path: string): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode!, body, headers: res.headers }));
    }).on('error', reject);
  });
}

t.test('SIGTERM drains: the slow request completes, the process exits before the deadline', async (t) => {
  let arrived = 0;
  const backend = iomux.http.createServer((req, res) => {
    arrived++;
    if (req.url === '/slow') setTimeout(() => res.end('slow done'), 700);
    else res.end('fast');
  });
  const bport = await listen(backend as unknown as iomux.Server);
  t.teardown(() => backend.close());
  const dir = tempDir('iomux-proxy-cli-');
  const config = join(dir, 'proxy.json');
  writeFileSync(config, JSON.stringify({
    mode: 'http', listen: '127.0.0.1:0', stats: '127.0.0.1:0', drainDeadline: 8000, deferAccept: true,
    upstreams: [{ host: '127.0.0.1', port: bport, weight: 2, name: 'backend-a' }],
  }));
  const r = start(['--config', config]);
  t.teardown(() => { r.child.kill('SIGKILL'); });
  const port = await portFrom(r, /http proxy on 127\.0\.0\.1:(\d+)/);
  const statsPort = await portFrom(r, /stats: http:\/\/127\.0\.0\.1:(\d+)\//);

  t.equal((await get(port, '/fast')).body, 'fast', 'proxies');
  const stats = await get(statsPort, '/');
  t.equal(stats.status, 200);
  t.equal(stats.headers['content-type'], 'application/json');
  const s = JSON.parse(stats.body);
  t.equal(s.mode, 'http');
  t.match(s.upstreams, [{ name: 'backend-a', weight: 2, state: 'up', requests: { total: 1 } }], 'per-upstream statistics');

  r.child.kill('SIGUSR2');
  t.ok(await waitFor(() => jsonLines(r.stdout()).length > 0, 5000), 'SIGUSR2 prints a JSON line');
  t.equal(jsonLines(r.stdout())[0].upstreams[0].name, 'backend-a');

  const slow = get(port, '/slow');
  await waitFor(() => arrived === 2, 5000);
  const signalled = Date.now();
  r.child.kill('SIGTERM');
  const res = await slow;
  t.equal(res.status, 200);
  t.equal(res.body, 'slow done', 'the request under way completed');
  t.equal(res.headers.connection, 'close', 'with Connection: close');
  const { code } = await r.exited;
  const took = Date.now() - signalled;
  t.equal(code, 0, 'exit code 0');
  t.ok(took < 5000, `exited ${took} ms after SIGTERM, before the 8000 ms deadline`);
  t.match(r.stderr(), /SIGTERM: draining/);
  t.match(r.stderr(), /drained: exiting/);
});

t.test('SIGTERM with a request outlasting the deadline: cut at the deadline', async (t) => {
  const backend = iomux.http.createServer(() => { /* never answers */ });
  const bport = await listen(backend as unknown as iomux.Server);
  t.teardown(async () => {
    const closed = backend.close();
    backend.closeAllConnections(); // its handler never answers
    await closed;
  });
  const r = start(['--listen', '127.0.0.1:0', '--upstream', `127.0.0.1:${bport}`, '--mode', 'http', '--drain-deadline', '400',
    '--defer-accept']);
  t.teardown(() => { r.child.kill('SIGKILL'); });
  const port = await portFrom(r, /http proxy on 127\.0\.0\.1:(\d+)/);
  const hung = get(port, '/hang').then(() => 'answered', () => 'cut');
  await waitFor(() => backend.connectionCount > 0, 5000);
  const signalled = Date.now();
  r.child.kill('SIGTERM');
  const { code } = await r.exited;
  const took = Date.now() - signalled;
  t.equal(code, 0);
  t.ok(took >= 350 && took < 4000, `exited at the deadline (${took} ms)`);
  t.equal(await hung, 'cut', 'the request was cut');
  t.match(r.stderr(), /drain deadline: closing 1 connection/);
});

t.test('bad arguments: a clear message and exit code 2', async (t) => {
  for (const [args, re] of [
    [['--upstream', 'nope'], /expected host:port/],
    [['--listen', '127.0.0.1:1', '--upstream', '127.0.0.1:2', '--mode', 'udp'], /mode/],
    [['--bogus', 'x'], /unknown option --bogus/],
    [[], /no upstreams/],
  ] as const) {
    const r = await runNode([BIN, ...args], { timeoutMs: 10000 });
    t.equal(r.code, 2, `exit 2 for ${args.join(' ')}`);
    t.match(r.stderr, re);
  }
  const help = await runNode([BIN, '--help'], { timeoutMs: 10000 });
  t.equal(help.code, 0);
  t.match(help.stdout, /Usage: iomux-proxy/);
});

for (const integrated of [false, true]) {
  const how = integrated ? ' (--integrated: inside Node\'s loop)' : ' (standalone, the default)';
  t.test(`TCP mode from the command line, with active health checks${how}`, async (t) => {
    const echo = iomux.createServer((s) => {
      s.on('data', (d: Buffer) => s.write(d));
      s.on('end', () => s.end());
    });
    const eport = await listen(echo);
    t.teardown(() => echo.close());
    const r = start(['--listen', '127.0.0.1:0', '--upstream', `127.0.0.1:${eport},127.0.0.1:1`,
      '--health-interval', '100', '--connect-timeout', '500', ...(integrated ? ['--integrated'] : [])]);
    t.teardown(() => { r.child.kill('SIGKILL'); });
    const port = await portFrom(r, /tcp proxy on 127\.0\.0\.1:(\d+)/);
    t.ok(await waitFor(() => /upstream-down: upstream 127\.0\.0\.1:1 is down/.test(r.stderr()), 5000), 'the dead upstream is logged down');
    for (let i = 0; i < 4; i++) {
      const c = iomux.connect(port, '127.0.0.1');
      const chunks: Buffer[] = [];
      c.on('data', (d: Buffer) => chunks.push(d));
      await once(c, 'connect');
      c.end(`hello ${i}`);
      await once(c, 'close');
      t.equal(Buffer.concat(chunks).toString(), `hello ${i}`);
    }
    r.child.kill('SIGUSR2');
    t.ok(await waitFor(() => /"upstreams"/.test(r.stdout()), 5000), 'SIGUSR2: the statistics on stdout');
    r.child.kill('SIGTERM');
    t.equal((await r.exited).code, 0);
  });
}
