'use strict';
// The "cache" scenario: iomux's SharedCache against lmdb, Redis (ioredis on
// loopback, redis-server started here) and a Map in one process (the floor).
//
//   node benchmarks/micro/cache.js [--duration MS] [--rounds N] [--quick] [--json FILE] [--no-pin] [--ops get,set,mix]
//
// Rows: get of 100 B and 4 KiB values at 100% and 90% hits, set of 100 B and
// 4 KiB values (lmdb: putSync, and put batched 1000 at a time), and a
// read-heavy mix (90% get at 90% hits, 10% set, 100 B) from 1 process and from
// 2 processes at once. Keys are 16 bytes; 10,000 of them are present. Each
// row runs in fresh worker processes pinned to CPU 0 (and CPU 1 for the
// second); Redis's server sits on CPU 1 for the 1-process rows. Candidates
// alternate within a round; figures are medians over rounds: CPU ns per
// operation of the worker (process.cpuUsage: independent of how loaded the
// machine is) and operations per second.
//
// Worker mode (internal): cache.js worker <json>
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const net = require('node:net');

const ROOT = path.join(__dirname, '..', '..');
const NKEYS = 10000;
const key = (i) => String(i).padStart(16, '0'); // 16 bytes
const missKey = (i) => 'm' + String(i).padStart(15, '0');

// ---------------------------------------------------------------------------
// worker

async function worker(cfg) {
  const { candidate, op, size, hit, durationMs } = cfg;
  const value = Buffer.alloc(size, 0x61);
  // a fixed pseudo-random sequence of keys with the row's hit ratio
  const seq = [];
  let s = 12345 + (cfg.index || 0) * 7919;
  for (let i = 0; i < 8192; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    const miss = hit < 100 && (s >>> 8) % 100 >= hit;
    seq.push(miss ? missKey(s % NKEYS) : key(s % NKEYS));
  }
  let get; let set; let setAsync = null; let close = () => {};
  if (candidate === 'iomux') {
    const { SharedCache } = require(path.join(ROOT, 'dist'));
    const c = SharedCache.fromFd(3);
    get = (k) => c.get(k);
    set = (k) => c.set(k, value);
    close = () => c.close();
  } else if (candidate === 'map') {
    const m = new Map();
    for (let i = 0; i < NKEYS; i++) m.set(key(i), Buffer.from(value));
    get = (k) => { const v = m.get(k); return v === undefined ? v : Buffer.from(v); };
    set = (k) => m.set(k, Buffer.from(value));
  } else if (candidate === 'lmdb' || candidate === 'lmdb-batched') {
    const { open } = require('lmdb');
    const db = open({ path: cfg.lmdbPath, compression: false, encoding: 'binary' });
    get = (k) => db.getBinary(k);
    set = (k) => db.putSync(k, value);
    if (candidate === 'lmdb-batched') setAsync = (k) => db.put(k, value);
    close = () => db.close();
  } else if (candidate === 'redis') {
    const Redis = require('ioredis');
    const r = new Redis({ port: cfg.redisPort, host: '127.0.0.1', lazyConnect: true, enableOfflineQueue: false });
    await r.connect();
    get = null;
    set = null;
    cfg.redis = r;
    close = () => r.disconnect();
  }
  const r = cfg.redis;
  // a warm-up (the JIT, the connection) of a third of the time, then the measure
  const warmEnd = process.hrtime.bigint() + BigInt(Math.round(durationMs / 3)) * 1000000n;
  let t0 = 0n;
  let c0 = null;
  let end = 0n;
  let ops = 0;
  let hits = 0;
  let j = 0;
  for (let warm = true; ;) { // eslint-disable-line no-constant-condition
    if (warm && process.hrtime.bigint() >= warmEnd) {
      warm = false;
      ops = hits = 0;
      t0 = process.hrtime.bigint();
      c0 = process.cpuUsage();
      end = t0 + BigInt(durationMs) * 1000000n;
    }
    if (r) {
      for (let i = 0; i < 200; i++, j = (j + 1) & 8191) {
        const k = seq[j];
        if (op === 'get' || (op === 'mix' && (j % 10) !== 0)) {
          if ((await r.getBuffer(k)) !== null) hits++;
        } else {
          await r.set(k, value);
        }
      }
      ops += 200;
    } else if (setAsync) {
      let last;
      for (let i = 0; i < 1000; i++, j = (j + 1) & 8191) last = setAsync(seq[j]);
      await last;
      ops += 1000;
    } else if (op === 'get') {
      for (let i = 0; i < 1000; i++, j = (j + 1) & 8191) if (get(seq[j]) !== undefined) hits++;
      ops += 1000;
    } else if (op === 'set') {
      for (let i = 0; i < 1000; i++, j = (j + 1) & 8191) set(seq[j]);
      ops += 1000;
    } else { // mix: every tenth a set
      for (let i = 0; i < 1000; i++, j = (j + 1) & 8191) {
        if (j % 10 === 0) set(seq[j]);
        else if (get(seq[j]) !== undefined) hits++;
      }
      ops += 1000;
    }
    if (!warm && process.hrtime.bigint() >= end) break;
  }
  const wallNs = Number(process.hrtime.bigint() - t0);
  const cu = process.cpuUsage(c0);
  close();
  process.stdout.write(JSON.stringify({ ops, hits, wallNs, cpuNs: (cu.user + cu.system) * 1000 }) + '\n');
}

// ---------------------------------------------------------------------------
// runner

function parse(argv) {
  const o = { duration: 2000, rounds: 3, json: null, pin: true, quick: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--duration') o.duration = Number(argv[++i]);
    else if (a === '--rounds') o.rounds = Number(argv[++i]);
    else if (a === '--json') o.json = argv[++i];
    else if (a === '--no-pin') o.pin = false;
    else if (a === '--quick') o.quick = true;
    else if (a === '--ops') o.ops = argv[++i].split(',');
    else throw new Error(`cache bench: unknown argument ${a}`);
  }
  if (o.quick) {
    o.duration = Math.min(o.duration, 300);
    o.rounds = 1;
  }
  return o;
}

const haveTaskset = spawnSync('taskset', ['-c', '0', 'true']).status === 0;
function pinned(cpu, cmd, args, pin) {
  return pin && haveTaskset ? ['taskset', ['-c', String(cpu), cmd, ...args]] : [cmd, args];
}

function runWorker(cfg, cpu, fd, pin) {
  const [cmd, args] = pinned(cpu, process.execPath, [__filename, 'worker', JSON.stringify(cfg)], pin);
  const stdio = ['ignore', 'pipe', 'pipe'];
  if (fd !== undefined) stdio.push(fd);
  const child = spawn(cmd, args, { stdio });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { err += d; });
  return new Promise((resolve, reject) => child.on('exit', (code) => {
    if (code !== 0) return reject(new Error(`worker ${cfg.candidate} ${cfg.op} exited ${code}: ${err.trim().slice(-500)}`));
    resolve(JSON.parse(out.trim().split('\n').pop()));
  }));
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
    s.on('error', reject);
  });
}

function findRedis() {
  return ['redis-server', '/usr/bin/redis-server', '/usr/sbin/redis-server'].find((b) => spawnSync(b, ['--version']).status === 0);
}

// Finds redis-server, or installs the Debian package (apt-get, as root).
function ensureRedis() {
  let bin = findRedis();
  if (bin) return bin;
  if (typeof process.getuid !== 'function' || process.getuid() !== 0 ||
      spawnSync('apt-get', ['--version'], { stdio: 'ignore' }).status !== 0) return null;
  process.stderr.write('cache: installing redis-server (apt-get install redis-server)\n');
  const install = () => spawnSync('apt-get', ['install', '-y', '-q', 'redis-server'],
    { stdio: 'ignore', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } }).status === 0;
  if (!install()) {
    spawnSync('apt-get', ['update', '-q'], { stdio: 'ignore' });
    install();
  }
  bin = findRedis();
  return bin || null;
}

async function startRedis(dir, pin) {
  const bin = ensureRedis();
  if (!bin) return { error: 'redis-server is not installed (apt-get install redis-server)' };
  const port = await freePort();
  const [cmd, args] = pinned(1, bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--dir', dir, '--daemonize', 'no', '--protected-mode', 'yes'], pin);
  const child = spawn(cmd, args, { stdio: 'ignore' });
  process.on('exit', () => { if (child.exitCode === null) child.kill('SIGKILL'); }); // also when the bench fails
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => { s.end(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (ok) return { port, child };
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill('SIGKILL');
  return { error: 'redis-server did not start' };
}

const median = (xs) => { const a = [...xs].sort((x, y) => x - y); return a.length ? a[(a.length - 1) >> 1] : NaN; };

async function main(o = parse(process.argv.slice(2))) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iomux-cache-bench-'));
  const notes = [];
  const { SharedCache } = require(path.join(ROOT, 'dist'));
  const shm = SharedCache.create({ size: 128 << 20, maxEntries: 65536 });
  let lmdb = null;
  try {
    lmdb = require('lmdb');
  } catch (e) {
    notes.push(`lmdb not installed (npm install): ${e.message.split('\n')[0]}`);
  }
  let ioredis = null;
  try {
    ioredis = require('ioredis');
  } catch (e) {
    notes.push(`ioredis not installed (npm install): ${e.message.split('\n')[0]}`);
  }
  const redis = ioredis ? await startRedis(dir, o.pin) : { error: 'no ioredis' };
  if (redis.error) notes.push(`Redis skipped: ${redis.error}`);
  const lmdbPath = path.join(dir, 'lmdb');
  let redisClient = null;
  if (!redis.error) redisClient = new ioredis({ port: redis.port, host: '127.0.0.1' });

  // prefill every store with NKEYS keys of the row's value size
  async function prefill(size) {
    const v = Buffer.alloc(size, 0x61);
    shm.clear();
    for (let i = 0; i < NKEYS; i++) shm.set(key(i), v);
    if (lmdb) { // a fresh database per row
      fs.rmSync(lmdbPath, { recursive: true, force: true });
      const db = lmdb.open({ path: lmdbPath, compression: false, encoding: 'binary' });
      await db.transaction(() => { for (let i = 0; i < NKEYS; i++) db.put(key(i), v); });
      await db.close();
    }
    if (redisClient) {
      await redisClient.flushall();
      const p = redisClient.pipeline();
      for (let i = 0; i < NKEYS; i++) p.set(key(i), v);
      await p.exec();
    }
  }

  const rows = [];
  const spec = [
    { op: 'get', size: 100, hit: 100, procs: 1 },
    { op: 'get', size: 100, hit: 90, procs: 1 },
    { op: 'get', size: 4096, hit: 100, procs: 1 },
    { op: 'get', size: 4096, hit: 90, procs: 1 },
    { op: 'set', size: 100, hit: 100, procs: 1 },
    { op: 'set', size: 4096, hit: 100, procs: 1 },
    { op: 'mix', size: 100, hit: 90, procs: 1 },
    { op: 'mix', size: 100, hit: 90, procs: 2 },
    { op: 'get', size: 100, hit: 100, procs: 2 },
  ];
  const candidates = ['iomux', 'map', 'lmdb', 'lmdb-batched', 'redis'].filter((c) => {
    if (c.startsWith('lmdb') && !lmdb) return false;
    if (c === 'redis' && redis.error) return false;
    return true;
  });
  for (const row of spec) {
    if (o.ops && !o.ops.includes(row.op)) continue;
    await prefill(row.size);
    const cands = candidates.filter((c) => {
      if (c === 'map' && row.procs > 1) return false; // one process's Map
      if (c === 'lmdb-batched' && row.op !== 'set') return false;
      return true;
    });
    const results = Object.fromEntries(cands.map((c) => [c, []]));
    for (let round = 0; round < o.rounds; round++) {
      const shift = round % cands.length;
      for (const c of [...cands.slice(shift), ...cands.slice(0, shift)]) {
        const runs = [];
        for (let p = 0; p < row.procs; p++) {
          const cfg = { candidate: c, op: row.op, size: row.size, hit: row.hit, durationMs: o.duration, lmdbPath, redisPort: redis.port, index: p };
          runs.push(runWorker(cfg, p, c === 'iomux' ? shm.fd : undefined, o.pin));
        }
        const rs = await Promise.all(runs);
        const ops = rs.reduce((a, r) => a + r.ops, 0);
        const opsPerS = rs.reduce((a, r) => a + r.ops / (r.wallNs / 1e9), 0);
        const cpuNs = rs.reduce((a, r) => a + r.cpuNs, 0) / ops;
        const hitPct = row.op === 'set' ? null : (100 * rs.reduce((a, r) => a + r.hits, 0)) / (row.op === 'mix' ? ops * 0.9 : ops);
        results[c].push({ opsPerS, cpuNs, hitPct });
      }
    }
    for (const c of cands) {
      const rs = results[c];
      rows.push({ ...row, candidate: c, opsPerS: median(rs.map((r) => r.opsPerS)), cpuNs: median(rs.map((r) => r.cpuNs)),
        hitPct: rs[0].hitPct, rounds: rs.length });
    }
    const label = `${row.op} ${row.size} B${row.op === 'set' ? '' : `, ${row.hit}% hits`}, ${row.procs} proc`;
    process.stderr.write(`cache: ${label}: ` + cands.map((c) => {
      const r = rows.find((x) => x.candidate === c && x.op === row.op && x.size === row.size && x.hit === row.hit && x.procs === row.procs);
      return `${c} ${fmt(r.cpuNs)} ns/op ${fmt(r.opsPerS / 1e3)} kops/s`;
    }).join('; ') + '\n');
  }
  const st = shm.stats();
  const overhead = null;
  if (redisClient) redisClient.disconnect();
  if (redis.child) redis.child.kill('SIGTERM');
  shm.close();
  // per-entry overhead: a fresh region with 16-byte keys and 100-byte values
  const ov = SharedCache.create({ size: 16 << 20, maxEntries: 65536, evict: false });
  const v100 = Buffer.alloc(100);
  for (let i = 0; i < 50000; i++) ov.set(key(i), v100);
  const os1 = ov.stats();
  const perEntry = os1.bytesUsed / os1.entries - 116 + (4 * 65536) / os1.entries + os1.heapSize / 128 / os1.entries;
  ov.close();
  fs.rmSync(dir, { recursive: true, force: true });
  const out = { rows, notes, perEntryOverhead: perEntry, duration: o.duration, rounds: o.rounds, pinned: o.pin && haveTaskset, overhead, shmStats: st };
  if (o.json) fs.writeFileSync(o.json, JSON.stringify(out, null, 2) + '\n');
  return out;
}

function fmt(n, d) {
  if (n == null || !Number.isFinite(n)) return '-';
  if (d === undefined) d = n >= 100 ? 0 : n >= 10 ? 1 : 2;
  return n.toFixed(d).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

function find(out, c, op, size, hit, procs) {
  return out.rows.find((r) => r.candidate === c && r.op === op && r.size === size && (op === 'set' || r.hit === hit) && r.procs === procs);
}

function render(out) {
  const L = [];
  L.push('### cache: SharedCache against lmdb, Redis and a Map');
  L.push('');
  L.push(`CPU ns per operation of the worker process (median of ${out.rounds} round(s) of ${out.duration} ms), and operations per second ` +
    '(all processes together). 16-byte keys, 10,000 present.');
  L.push('');
  const cands = [...new Set(out.rows.map((r) => r.candidate))];
  L.push(`| row | ${cands.join(' | ')} |`);
  L.push(`| --- | ${cands.map(() => '---').join(' | ')} |`);
  const seen = new Set();
  for (const r of out.rows) {
    const id = `${r.op}|${r.size}|${r.hit}|${r.procs}`;
    if (seen.has(id)) continue;
    seen.add(id);
    const label = `${r.op} ${r.size} B${r.op === 'set' ? '' : `, ${r.hit}% hits`}, ${r.procs} proc`;
    L.push(`| ${label} | ${cands.map((c) => {
      const x = find(out, c, r.op, r.size, r.hit, r.procs);
      return x ? `${fmt(x.cpuNs)} ns, ${fmt(x.opsPerS / 1e3)} k/s` : '-';
    }).join(' | ')} |`);
  }
  L.push('');
  // targets
  const t = [];
  const g = (c) => find(out, c, 'get', 100, 100, 1);
  const s = (c, size) => find(out, c, 'set', size, 100, 1);
  if (g('iomux') && g('map')) t.push(`get 100 B: iomux ${fmt(g('iomux').cpuNs)} ns vs Map + copy ${fmt(g('map').cpuNs)} ns: ` +
    `${fmt(g('iomux').cpuNs / g('map').cpuNs, 2)}x (target <= 2x)`);
  if (g('iomux') && g('lmdb')) t.push(`get 100 B: lmdb getBinary ${fmt(g('lmdb').cpuNs)} ns: iomux ${fmt(g('lmdb').cpuNs / g('iomux').cpuNs, 2)}x faster (target > 1x)`);
  for (const size of [100, 4096]) {
    if (s('iomux', size) && s('lmdb', size)) t.push(`set ${size} B: lmdb putSync ${fmt(s('lmdb', size).cpuNs)} ns vs iomux ${fmt(s('iomux', size).cpuNs)} ns: ` +
      `${fmt(s('lmdb', size).cpuNs / s('iomux', size).cpuNs, 1)}x (target >= 5x)` +
      (s('lmdb-batched', size) ? `; batched put ${fmt(s('lmdb-batched', size).cpuNs)} ns` : ''));
    if (s('iomux', size) && s('redis', size)) {
      const wall = (x) => 1e9 / x.opsPerS;
      t.push(`set ${size} B: Redis ${fmt(wall(s('redis', size)))} ns per operation (wall, round trip) vs iomux ${fmt(wall(s('iomux', size)))} ns: ` +
        `${fmt(wall(s('redis', size)) / wall(s('iomux', size)), 1)}x (target >= 20x)`);
    }
  }
  const m1 = find(out, 'iomux', 'mix', 100, 90, 1);
  const m2 = find(out, 'iomux', 'mix', 100, 90, 2);
  if (m1 && m2) t.push(`read-heavy mix, 2 processes: ${fmt(m2.opsPerS / 1e3)} k/s vs 1 process ${fmt(m1.opsPerS / 1e3)} k/s: ${fmt(m2.opsPerS / m1.opsPerS, 2)}x (target >= 1.7x)`);
  const g1 = find(out, 'iomux', 'get', 100, 100, 1);
  const g2 = find(out, 'iomux', 'get', 100, 100, 2);
  if (g1 && g2) t.push(`get only, 2 processes: ${fmt(g2.opsPerS / g1.opsPerS, 2)}x the operations of 1`);
  t.push(`overhead per entry (16-byte keys, 100-byte values): ${fmt(out.perEntryOverhead, 1)} bytes (target <= 64)`);
  L.push('Targets:');
  L.push('');
  for (const x of t) L.push(`- ${x}`);
  for (const n of out.notes) L.push(`- note: ${n}`);
  return L.join('\n');
}

if (process.argv[2] === 'worker') {
  worker(JSON.parse(process.argv[3])).catch((e) => {
    process.stderr.write(String(e && e.stack || e) + '\n');
    process.exit(1);
  });
} else if (require.main === module) {
  main().then((out) => process.stdout.write(render(out) + '\n')).catch((e) => {
    process.stderr.write(String(e && e.stack || e) + '\n');
    process.exit(1);
  });
}

module.exports = { main, render, parse };
