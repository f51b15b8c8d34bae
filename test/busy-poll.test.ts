// loop.busyPoll: the loop polls without sleeping for a window before it lets
// the thread sleep. Checked in child processes, in Node's loop and in
// standalone mode: request-response traffic with a peer in
// another process is caught by the windows, the answers are right, the
// thread sleeps again once traffic stops, and the process exits by itself.
import { join } from 'node:path';
import t from 'tap';
import { jsonLines, runNode } from './helpers';
import { loop } from '../lib';

const DIST = join(__dirname, '..', 'dist');
const ROUND_TRIPS = 300;

// The echo peer is node:net in a process of its own, so that every answer
// comes from outside the polling thread.
function child(busyPoll: number, standalone: boolean): string {
  return `
const iomux = require(${JSON.stringify(DIST)});
const { spawn } = require('node:child_process');
const { loop } = iomux;
loop.busyPoll = ${busyPoll};
if (${standalone}) loop.run();
const peer = spawn(process.execPath, ['-e',
  "require('net').createServer((s) => s.pipe(s)).listen(0, '127.0.0.1', function () { console.log(this.address().port); })"],
  { stdio: ['ignore', 'pipe', 'inherit'] });
peer.stdout.once('data', (d) => {
  const s = iomux.connect(Number(String(d)), '127.0.0.1');
  s.setNoDelay(true);
  const before = loop.stats();
  let n = 0, got = '', wrong = 0;
  s.on('data', (b) => {
    got += b;
    if (got.length < ('ping' + n).length) return;
    if (got !== 'ping' + n) wrong++;
    got = '';
    if (++n < ${ROUND_TRIPS}) { s.write('ping' + n); return; }
    const st = loop.stats();
    s.end();
    peer.kill();
    // Nothing happens for 300 ms: the thread must be asleep for most of it.
    const c0 = process.cpuUsage(), t0 = performance.now();
    setTimeout(() => {
      const c = process.cpuUsage(c0);
      console.log(JSON.stringify({ n, wrong, windows: st.busy_windows - before.busy_windows,
        caught: st.busy_caught - before.busy_caught,
        idleCpuShare: (c.user + c.system) / 1000 / (performance.now() - t0) }));
    }, 300);
  });
  s.write('ping0');
});
`;
}

t.test('busyPoll validates its value', async (t) => {
  const was = loop.busyPoll;
  t.equal(was, 0, 'off by default');
  for (const bad of [-1, 1.5, 100_001, NaN, '50' as unknown as number])
    t.throws(() => { loop.busyPoll = bad; }, { code: 'ERR_OUT_OF_RANGE', message: /"busyPoll"/ }, `refuses ${String(bad)}`);
  t.equal(loop.busyPoll, 0, 'a refused value changes nothing');
  loop.busyPoll = 25;
  t.equal(loop.busyPoll, 25, 'takes microseconds');
  loop.busyPoll = 0;
  const r = await runNode(['-e', `require(${JSON.stringify(DIST)})`], { env: { IOMUX_BUSY_POLL: 'soon' }, timeoutMs: 15000 });
  t.not(r.code, 0, 'a bad IOMUX_BUSY_POLL stops the process at load');
  t.match(r.stderr, /"IOMUX_BUSY_POLL" is out of range/, 'naming the variable');
  const ok = await runNode(['-e', `console.log(require(${JSON.stringify(DIST)}).loop.busyPoll)`], { env: { IOMUX_BUSY_POLL: '40' }, timeoutMs: 15000 });
  t.equal(ok.stdout.trim(), '40', 'IOMUX_BUSY_POLL=40 sets it');
});

// The backend is the run's own (IOMUX_BACKEND, which the children inherit):
// the suite runs once per backend.
for (const standalone of [false, true]) {
  const mode = standalone ? 'standalone' : "in Node's loop";
  t.test(`on ${loop.backend}, ${mode}`, async (t) => {
    // A window of 5 ms: long enough that a loaded machine's peer still
    // answers within it most of the time.
    const on = await runNode(['-e', child(5000, standalone)], { timeoutMs: 30000 });
    t.equal(on.timedOut, false, 'with busyPoll on, the process exits by itself');
    t.equal(on.code, 0, `exit code 0${on.stderr ? ` (stderr: ${on.stderr.slice(0, 400)})` : ''}`);
    const [r] = jsonLines(on.stdout);
    t.equal(r?.n, ROUND_TRIPS, `${ROUND_TRIPS} round trips`);
    t.equal(r?.wrong, 0, 'every answer is the one asked for');
    t.ok(r?.windows > 0, `polling windows were opened (${r?.windows})`);
    t.ok(r?.caught > 0, `and caught answers without a sleep (${r?.caught} of ${ROUND_TRIPS})`);
    t.ok(r?.idleCpuShare < 0.5, `idle afterwards, the thread sleeps: ${(100 * r?.idleCpuShare).toFixed(1)}% of a core over 300 ms`);

    const off = await runNode(['-e', child(0, standalone)], { timeoutMs: 30000 });
    t.equal(off.code, 0, 'with busyPoll off, the same run');
    const [o] = jsonLines(off.stdout);
    t.equal(o?.n, ROUND_TRIPS, `${ROUND_TRIPS} round trips`);
    t.equal(o?.windows, 0, 'and no polling window');
  });
}
