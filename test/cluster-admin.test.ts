// The admin side: iomux-cluster FILE runs a supervisor from a config file,
// iomux-ctl lists, restarts, sends and shuts down through the admin socket
// (0600 in a 0700 run directory); a bad config names the field, exits 2.
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { WORKER, httpGet } from './cluster-helpers';
import { childEnv, iomux, sleep, tempDir, waitFor } from './helpers';

const ROOT = join(__dirname, '..');
const CLUSTER = join(ROOT, 'bin', 'iomux-cluster.js');
const CTL = join(ROOT, 'bin', 'iomux-ctl.js');

function ctl(runDir: string, ...args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, [CTL, '--run-dir', runDir, ...args], { encoding: 'utf8', env: childEnv(), timeout: 30000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

t.test('iomux-cluster FILE and iomux-ctl list, send, restart, shutdown', async (t) => {
  const dir = tempDir('iomux-ctl-');
  const runDir = join(dir, 'run');
  const logFile = join(dir, 'hooks.log');
  const conf = join(dir, 'cluster.json');
  writeFileSync(conf, JSON.stringify({
    runDir: 'run', grace: 2000,
    services: [{ name: 'web', worker: WORKER, count: 2, listen: [{ port: 0 }], env: { CLUSTER_LOG: logFile } }],
  }));
  const proc = spawn(process.execPath, [CLUSTER, conf], { env: childEnv(), stdio: ['ignore', 'inherit', 'pipe'] });
  let stderr = '';
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  t.teardown(() => { if (proc.exitCode === null) proc.kill('SIGKILL'); });
  t.ok(await waitFor(() => /admin socket in/.test(stderr), 20000), 'started');

  t.equal(statSync(runDir).mode & 0o777, 0o700, 'run dir 0700');
  t.equal(statSync(join(runDir, 'admin.sock')).mode & 0o777, 0o600, 'admin socket 0600');

  const list = ctl(runDir, 'list', '--json');
  t.equal(list.code, 0, list.err);
  const l = JSON.parse(list.out);
  t.equal(l.pid, proc.pid);
  t.same(l.services[0].containers.map((c: any) => c.id), ['web.1', 'web.2']);
  for (const c of l.services[0].containers) {
    t.ok(c.pid > 0 && c.state === 'ready' && c.uptime >= 0 && c.restarts === 0 && c.connections === 0 && c.rss > 1e6, `${c.id}: pid, state, uptime, restarts, connections, rss`);
  }
  const text = ctl(runDir, 'list');
  t.match(text.out, /SERVICE\s+CONTAINER\s+PID\s+STATE\s+UPTIME\s+RESTARTS\s+CONNS\s+RSS/);
  t.match(text.out, /web\s+web\.1\s+\d+\s+ready/);

  const send = ctl(runDir, 'send', '*', 'reload', '42', 'now');
  t.equal(send.code, 0, send.err);
  t.match(send.out, /delivered to 2 container/);
  const { readFileSync } = await import('node:fs');
  const events = () => readFileSync(logFile, 'utf8').split('\n').filter(Boolean).map((x) => JSON.parse(x));
  t.ok(await waitFor(() => events().filter((e) => e.event === 'admin').length === 2, 5000));
  t.same(events().find((e) => e.event === 'admin').args, [42, 'now'], 'arguments: JSON where they parse');
  t.equal(ctl(runDir, 'send', 'nobody', 'x').code, 1, 'no such target: exit 1');
  t.equal(ctl(runDir, 'restart', 'nope').code, 1, 'no such service: exit 1');
  t.equal(ctl(runDir, 'bogus').code, 2, 'unknown command: usage, exit 2');

  const rs = ctl(runDir, 'restart', 'web', '--json');
  t.equal(rs.code, 0, rs.err);
  t.same(JSON.parse(rs.out), { restarted: 'web' });
  const after = JSON.parse(ctl(runDir, 'list', '--json').out);
  t.same(after.services[0].containers.map((c: any) => c.id), ['web.3', 'web.4']);
  const port = Number(after.services[0].listen[0].split(':').pop());
  t.equal((await httpGet(port)).status, 200);

  const sd = ctl(runDir, 'shutdown');
  t.equal(sd.code, 0, sd.err);
  const [code] = await once(proc, 'exit');
  t.equal(code, 0, 'the master exits 0');
  t.equal(ctl(runDir, 'list').code, 1, 'no supervisor any more');
});

t.test('SIGTERM to the master: graceful stop, exit 0; SIGHUP: rolling restart', async (t) => {
  const dir = tempDir('iomux-ctl-');
  const conf = join(dir, 'cluster.js');
  const logFile = join(dir, 'hooks.log');
  writeFileSync(conf, `module.exports = async () => ({ runDir: ${JSON.stringify(join(dir, 'run'))}, services: [
    { name: 'web', worker: ${JSON.stringify(WORKER)}, count: 1, listen: [{ port: 0 }], env: { CLUSTER_LOG: ${JSON.stringify(logFile)} } }] });`);
  const proc = spawn(process.execPath, [CLUSTER, conf], { env: childEnv(), stdio: ['ignore', 'inherit', 'pipe'] });
  let stderr = '';
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  t.teardown(() => { if (proc.exitCode === null) proc.kill('SIGKILL'); });
  t.ok(await waitFor(() => /admin socket in/.test(stderr), 20000));
  proc.kill('SIGHUP');
  const { readFileSync } = await import('node:fs');
  const events = () => readFileSync(logFile, 'utf8').split('\n').filter(Boolean).map((x) => JSON.parse(x));
  t.ok(await waitFor(() => events().some((e) => e.event === 'shutdown' && e.id === 'web.1'), 20000), 'SIGHUP replaced web.1');
  t.ok(events().some((e) => e.event === 'postStart' && e.id === 'web.2'));
  await sleep(100);
  proc.kill('SIGTERM');
  const [code] = await once(proc, 'exit');
  t.equal(code, 0);
  t.ok(events().some((e) => e.event === 'preFinish' && e.id === 'web.2'), 'the worker stopped gracefully');
});

t.test('a bad config names the field and exits 2', async (t) => {
  const dir = tempDir('iomux-conf-');
  const cases: [unknown, RegExp][] = [
    [{}, /services: must be a non-empty array/],
    [{ services: [{ name: 'a', worker: 'w.js', count: 0 }] }, /services\[0\]\.count: must be between 1 and 1024, got 0/],
    [{ services: [{ name: 'a', worker: 'w.js', listen: [{ port: 'x' }] }] }, /services\[0\]\.listen\[0\]\.port: must be an integer/],
    [{ services: [{ name: 'a', worker: 'w.js' }, { name: 'a', worker: 'w.js' }] }, /services\[1\]\.name: "a" is used twice/],
    [{ services: [{ name: 'a', worker: 'w.js', restart: { maxDelay: 1, initialDelay: 5 } }] }, /services\[0\]\.restart\.maxDelay: must not be below initialDelay/],
    [{ services: [{ name: 'a', worker: 'w.js', colour: 1 }] }, /services\[0\]\.colour: is not a known option/],
    [{ services: [{ name: 'a' }] }, /services\[0\]\.worker: must be a module path/],
    [{ services: [{ name: 'a', worker: 'w.js' }], idleGrace: 0 }, /idleGrace: must be between 1 and 3600000, got 0/],
  ];
  for (const [i, [conf, re]] of cases.entries()) {
    const f = join(dir, `c${i}.json`);
    writeFileSync(f, JSON.stringify(conf));
    const r = spawnSync(process.execPath, [CLUSTER, f], { encoding: 'utf8', env: childEnv() });
    t.equal(r.status, 2, `case ${i}: exit 2`);
    t.match(r.stderr, re, `case ${i}: ${re.source}`);
  }
  const broken = join(dir, 'broken.json');
  writeFileSync(broken, '{ "services": [');
  const r = spawnSync(process.execPath, [CLUSTER, broken], { encoding: 'utf8', env: childEnv() });
  t.equal(r.status, 2);
  t.match(r.stderr, /file: .* is not valid JSON/);
  t.throws(() => iomux.cluster.createSupervisor({ services: [{ name: 'x', worker: 'w.js', count: -1 }] }), { code: 'ERR_IOMUX_CLUSTER_CONFIG', field: 'services[0].count' });
});

t.test('the run directory must be ours and closed to others', async (t) => {
  const dir = tempDir('iomux-rundir-');
  const open = join(dir, 'open');
  mkdirSync(open, { mode: 0o755 });
  chmodSync(open, 0o755);
  const sup = iomux.cluster.createSupervisor({ runDir: open, signals: false, services: [{ name: 'x', worker: WORKER, count: 1 }] });
  await t.rejects(sup.start(), /mode 755: others may enter it/);
});

t.test('the admin socket refuses another user even when the file modes would let it in', async (t) => {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    t.skip('needs root to run a client as another uid');
    return;
  }
  const dir = tempDir('iomux-peer-');
  const runDir = join(dir, 'run');
  const sup = iomux.cluster.createSupervisor({ runDir, signals: false, services: [{ name: 'x', worker: WORKER, count: 1 }] });
  await sup.start();
  t.teardown(() => sup.stop());
  // Loosen everything on the way (never do this): only SO_PEERCRED is left.
  chmodSync(dir, 0o711);
  chmodSync(runDir, 0o711);
  chmodSync(join(runDir, 'admin.sock'), 0o666);
  // Asynchronously: this process is the supervisor that must answer.
  const run = (uid?: number) => new Promise<{ code: number | null; err: string }>((resolve) => {
    const p = spawn(process.execPath, [CTL, '--run-dir', runDir, 'list'], {
      env: childEnv(), stdio: ['ignore', 'ignore', 'pipe'], ...(uid === undefined ? {} : { uid, gid: uid }),
    });
    let err = '';
    p.stderr!.setEncoding('utf8').on('data', (d: string) => { err += d; });
    p.on('exit', (code) => resolve({ code, err }));
  });
  const other = await run(65534);
  t.equal(other.code, 1, 'refused');
  t.match(other.err, /permission denied: not the supervisor's user/);
  t.equal((await run()).code, 0, 'the owner still gets in');
});
