'use strict';
// Summaries, the markdown report (results/latest.md) and the SVG chart of
// the ratios (results/latest.svg), built as plain strings.

const { median, summarize, fmt, fmtRange, fmtRatio } = require('./util');
const { GROUP_NAMES } = require('./strace');

// ---------------------------------------------------------------------------
// Summaries

const LOOP_COLUMNS = ['iterations', 'events', 'wait', 'ctl', 'accept', 'read', 'write+writev', 'batch', 'shutdown', 'close',
  'getpeername'];
// Counters that are not syscalls: loop iterations, kernel events,
// registrations that rode with a wait (io_uring SQEs, kqueue changelist), and
// reads and writes made inside a batched call (counted in 'batch'),
// listener wakeups, and io_uring listener re-arms (SQEs riding with a wait).
const LOOP_NOT_SYSCALLS = new Set(['iterations', 'events', 'changes', 'batch_read', 'batch_write', 'accept_wakeups', 'rearm']);
const LOOP_NAMED = new Set(['wait', 'ctl', 'accept', 'read', 'write', 'writev', 'batch', 'shutdown', 'close', 'getpeername']);

function loopValue(d, k) {
  if (!d) return null;
  if (k === 'write+writev') return (d.write || 0) + (d.writev || 0);
  if (k === 'batched') return (d.batch_read || 0) + (d.batch_write || 0);
  if (k === 'other') {
    let o = 0;
    for (const [name, v] of Object.entries(d)) {
      if (!LOOP_NOT_SYSCALLS.has(name) && !LOOP_NAMED.has(name)) o += v;
    }
    return o;
  }
  if (k === 'syscalls') {
    let s = 0;
    for (const [name, v] of Object.entries(d)) if (!LOOP_NOT_SYSCALLS.has(name)) s += v;
    return s;
  }
  return d[k] != null ? d[k] : null;
}

function summarizeScenario(sc) {
  const out = {};
  for (const c of sc.candidates) {
    const all = sc.runs.filter((r) => r.candidate === c.id && !r.strace);
    const ok = all.filter((r) => r.ok);
    const pick = (f) => summarize(ok.map(f));
    const s = { runs: all.length, okRuns: ok.length };
    if (sc.kind === 'load') {
      Object.assign(s, {
        rate: pick((r) => r.rate),
        cpuPerUnit: pick((r) => r.cpuPerUnit),
        serverCpuPct: pick((r) => r.serverCpuPct),
        genCpuPct: pick((r) => r.genCpuPct),
        genCpuPerUnit: pick((r) => r.genCpuPerUnit),
        otherCpuPct: pick((r) => r.otherCpuPct),
        rssKb: pick((r) => r.rssKb),
        p50Ms: pick((r) => r.latencyMs && r.latencyMs.p50),
        p99Ms: pick((r) => r.latencyMs && r.latencyMs.p99),
        genBound: ok.filter((r) => r.genBound).length,
        noisy: ok.filter((r) => r.otherCpuPct > 15).length,
      });
      const withLoop = ok.filter((r) => r.loopDelta && r.units);
      if (withLoop.length) {
        s.loopPerUnit = {};
        for (const k of [...LOOP_COLUMNS, 'other', 'syscalls', 'changes', 'batched']) {
          s.loopPerUnit[k] = median(withLoop.map((r) => loopValue(r.loopDelta, k) / (r.units / sc.unit.sysScale)));
        }
        s.loopTotals = {};
        for (const k of ['ctl', 'accept', 'getpeername', 'other']) s.loopTotals[k] = median(withLoop.map((r) => loopValue(r.loopDelta, k)));
      }
    } else if (sc.kind === 'idle') {
      Object.assign(s, {
        kibPerConn: pick((r) => r.kibPerConn),
        heapBytesPerConn: pick((r) => r.heapBytesPerConn),
        externalBytesPerConn: pick((r) => r.externalBytesPerConn),
        rssKb: pick((r) => r.rssKb),
        acceptCpuUsPerConn: pick((r) => r.acceptCpuUsPerConn),
        connectMs: pick((r) => r.connectMs),
      });
    } else if (sc.kind === 'micro') {
      Object.assign(s, {
        cpuNsPerPair: pick((r) => r.cpuNsPerPair),
        nsPerPair: pick((r) => r.nsPerPair),
        syscalls: pick((r) => r.syscalls),
        otherCpuPct: pick((r) => r.otherCpuPct),
      });
    }
    out[c.id] = s;
  }
  // Ratios against each baseline, from the medians.
  const headline = headlineOf(sc);
  for (const c of sc.candidates) {
    const s = out[c.id];
    s.vs = {};
    for (const b of sc.baselines) {
      const base = out[b];
      if (!base) continue;
      const r = {};
      for (const [key, m] of Object.entries(headline)) {
        const a = s[m.field] && s[m.field].median;
        const z = base[m.field] && base[m.field].median;
        r[key] = a != null && z ? a / z : null;
      }
      s.vs[b] = r;
    }
  }
  return out;
}

// The measures the summary and the chart show for a scenario: `rate`
// (higher is better) and `cost` (lower is better), each a summary field.
function headlineOf(sc) {
  if (sc.kind === 'load') {
    return {
      rate: { field: 'rate', label: sc.unit.rate },
      cost: { field: 'cpuPerUnit', label: `server CPU ${sc.unit.cpu}` },
    };
  }
  if (sc.kind === 'idle') return { cost: { field: 'kibPerConn', label: 'RSS KiB/conn' } };
  return { cost: { field: 'cpuNsPerPair', label: 'CPU ns/pair' } };
}

// ---------------------------------------------------------------------------
// Markdown

function esc(s) {
  return String(s).replace(/\|/g, '\\|');
}

function ratioCells(s, sc, key) {
  return sc.baselines.map((b) => (s.vs && s.vs[b] ? fmtRatio(s.vs[b][key]) : '–'));
}

function candLabel(sc, id) {
  const c = sc.candidates.find((x) => x.id === id);
  return c ? c.label : id;
}

function machineLine(report) {
  const m = report.machine;
  return `${m.cpu} · ${m.nproc} CPUs · ${m.memGiB} GiB · Linux ${m.kernel} · Node ${m.node} · ` +
    `iomux backends: ${Object.entries(m.backends).map(([k, v]) => `${k} ${v === true ? 'yes' : 'no'}`).join(', ')} · ` +
    `load average at start ${m.loadAvgStart ? m.loadAvgStart.join(' ') : '?'}`;
}

function renderLoadTable(sc, L) {
  const u = sc.unit;
  const bl = sc.baselines.map((b) => `vs ${candLabel(sc, b)}`);
  L.push(`| candidate | backend | ${u.rate} median (min–max) | ${bl.join(' | ')} | server CPU ${u.cpu} | ${bl.join(' | ')} | ` +
    `server CPU % | generator CPU % | generator CPU ${u.cpu} | other CPU % | RSS MiB | p50 ms | p99 ms | flags | runs ok |`);
  L.push(`| --- | --- | ---: | ${bl.map(() => '---:').join(' | ')} | ---: | ${bl.map(() => '---:').join(' | ')} | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |`);
  for (const c of sc.candidates) {
    const s = sc.summary[c.id];
    const rss = s.rssKb ? { ...s.rssKb, median: s.rssKb.median / 1024, min: s.rssKb.min / 1024, max: s.rssKb.max / 1024 } : null;
    const flags = [];
    if (s.genBound) flags.push(`generator-bound ${s.genBound}/${s.okRuns}`);
    if (s.noisy) flags.push(`noisy ${s.noisy}/${s.okRuns}`);
    L.push(`| ${c.label} | ${c.backend || '–'} | ${fmtRange(s.rate)} | ${ratioCells(s, sc, 'rate').join(' | ')} | ` +
      `${fmtRange(s.cpuPerUnit)} | ${ratioCells(s, sc, 'cost').join(' | ')} | ${fmt(s.serverCpuPct && s.serverCpuPct.median, 0)} | ` +
      `${fmt(s.genCpuPct && s.genCpuPct.median, 0)} | ${fmt(s.genCpuPerUnit && s.genCpuPerUnit.median)} | ` +
      `${fmt(s.otherCpuPct && s.otherCpuPct.median, 0)} | ${fmt(rss && rss.median, 1)} | ` +
      `${fmt(s.p50Ms && s.p50Ms.median, 2)} | ${fmt(s.p99Ms && s.p99Ms.median, 2)} | ${flags.join(', ') || '–'} | ${s.okRuns}/${s.runs} |`);
  }
}

function renderStraceTable(sc, L) {
  const st = sc.strace;
  if (!st) return;
  L.push('');
  L.push(`Syscalls per ${sc.unit.sys} (strace -c -f on the server, separate ${st.duration} s run, not timed; ` +
    `divided by the ${sc.unit.sysPlural} the server counted in that window):`);
  L.push('');
  if (st.skipped) {
    L.push(`Skipped: ${st.skipped}`);
    return;
  }
  const cols = GROUP_NAMES.filter((g) => g !== 'wait');
  L.push(`| candidate | ${sc.unit.sysPlural} traced | wait, io_uring_enter | ${cols.join(' | ')} | ` +
    'other (threads, mm) | socket syscalls excl. wait | all |');
  L.push(`| --- | ---: | ---: | ${cols.map(() => '---:').join(' | ')} | ---: | ---: | ---: |`);
  for (const r of st.runs) {
    const label = candLabel(sc, r.candidate);
    if (!r.ok) {
      L.push(`| ${label} | FAILED: ${esc(String(r.error).split('\n')[0])} |`);
      continue;
    }
    const per = (v) => fmt(v / r.sysUnits, 2);
    const g = r.groups;
    const sockets = cols.reduce((a, k) => a + g[k], 0);
    L.push(`| ${label} | ${fmt(r.sysUnits, 0)} | ${per(g.wait)} | ${cols.map((k) => per(g[k])).join(' | ')} | ${per(g.other)} | ` +
      `**${per(sockets)}** | ${per(g.total)} |`);
  }
}

function renderLoopTable(sc, L) {
  const rows = sc.candidates.filter((c) => sc.summary[c.id].loopPerUnit);
  if (!rows.length) return;
  L.push('');
  L.push(`iomux \`loop.stats()\` over the timed runs, per ${sc.unit.sys} (medians; the core counts every syscall it makes, ` +
    'without strace\'s overhead):');
  L.push('');
  L.push(`| candidate | ${LOOP_COLUMNS.join(' | ')} | other | all syscalls | changes (no syscall) | ` +
    'reads+writes batched (no syscall) |');
  L.push(`| --- | ${LOOP_COLUMNS.map(() => '---:').join(' | ')} | ---: | ---: | ---: | ---: |`);
  for (const c of rows) {
    const p = sc.summary[c.id].loopPerUnit;
    L.push(`| ${c.label} | ${LOOP_COLUMNS.map((k) => fmt(p[k], 3)).join(' | ')} | ${fmt(p.other, 3)} | **${fmt(p.syscalls, 3)}** | ` +
      `${fmt(p.changes, 3)} | ${fmt(p.batched, 3)} |`);
  }
  L.push('');
  L.push('iterations and events are not syscalls; "changes" are registrations that rode with a wait (io_uring submissions), ' +
    'not syscalls either; "batch" counts the io_uring_enter calls that made the reads or the writes of several sockets ' +
    'at once, and "reads+writes batched" those reads and writes, which cost no syscall of their own; accept counts the ' +
    'final accept4 that returns EAGAIN.');
}

function renderIdleTable(sc, L) {
  const n = (sc.runs.find((r) => r.ok && r.connections) || {}).connections;
  const vs = sc.baselines.map((b) => `vs ${candLabel(sc, b)}`);
  L.push(`| candidate | backend | RSS KiB/conn median (min–max) | ${vs.join(' | ')} | V8 heap B/conn | external B/conn | ` +
    `RSS MiB with ${fmt(n, 0)} | accept CPU µs/conn | client connect ms | runs ok |`);
  L.push(`| --- | --- | ---: | ${vs.map(() => '---:').join(' | ')} | ---: | ---: | ---: | ---: | ---: | ---: |`);
  for (const c of sc.candidates) {
    const s = sc.summary[c.id];
    L.push(`| ${c.label} | ${c.backend || '–'} | ${fmtRange(s.kibPerConn, 2)} | ${ratioCells(s, sc, 'cost').join(' | ')} | ` +
      `${fmt(s.heapBytesPerConn && s.heapBytesPerConn.median, 0)} | ${fmt(s.externalBytesPerConn && s.externalBytesPerConn.median, 0)} | ` +
      `${fmt(s.rssKb && s.rssKb.median / 1024, 1)} | ${fmt(s.acceptCpuUsPerConn && s.acceptCpuUsPerConn.median)} | ` +
      `${fmt(s.connectMs && s.connectMs.median, 0)} | ${s.okRuns}/${s.runs} |`);
  }
}

function renderMicroTable(sc, L) {
  L.push('| candidate | CPU ns/pair median (min–max) | vs node | wall ns/pair median (min–max) | syscalls during the pairs | other CPU % | runs ok |');
  L.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const c of sc.candidates) {
    const s = sc.summary[c.id];
    L.push(`| ${c.label} | ${fmtRange(s.cpuNsPerPair, 0)} | ${ratioCells(s, sc, 'cost').join(' | ')} | ${fmtRange(s.nsPerPair, 0)} | ` +
      `${c.id === 'iomux' ? fmt(s.syscalls && s.syscalls.max, 0) : 'n/a'} | ${fmt(s.otherCpuPct && s.otherCpuPct.median, 0)} | ${s.okRuns}/${s.runs} |`);
  }
}

// Scenario-specific conclusions drawn from the numbers.
function verdicts(sc) {
  const out = [];
  const strace = sc.strace && !sc.strace.skipped ? sc.strace.runs.filter((r) => r.ok) : [];
  const socketsPer = (r) => GROUP_NAMES.filter((g) => g !== 'wait').reduce((a, k) => a + r.groups[k], 0) / r.sysUnits;
  if (sc.id === 'churn') {
    for (const r of strace) {
      const g = r.groups;
      const per = (k) => g[k] / r.sysUnits;
      const parts = GROUP_NAMES.filter((k) => k !== 'wait' && per(k) >= 0.05).map((k) => `${k} ${fmt(per(k), 2)}`).join(', ');
      let line = `- ${candLabel(sc, r.candidate)}: ${fmt(socketsPer(r), 2)} socket syscalls per connection (${parts}), ` +
        `plus ${fmt(per('wait'), 2)} waits; getpeername ${fmt(per('getpeername'), 2)}.`;
      if (r.candidate.startsWith('iomux')) {
        const met = socketsPer(r) <= 5.05 && g.getpeername === 0;
        line += ` Target ≤ 5 per connection with zero getpeername: **${met ? 'met' : 'not met'}**.`;
      }
      out.push(line);
    }
  }
  if (sc.id === 'timeouts') {
    for (const c of sc.candidates) {
      const s = sc.summary[c.id];
      if (!s.loopPerUnit) continue;
      const p = s.loopPerUnit;
      const t = s.loopTotals;
      out.push(`- ${c.label}: per message ${fmt(p.read, 3)} read + ${fmt(p['write+writev'], 3)} write + ${fmt(p.wait, 3)} wait ` +
        `= ${fmt(p.syscalls, 3)} syscalls; during the timed runs ctl ${fmt(t.ctl, 0)}, accept ${fmt(t.accept, 0)}, ` +
        `other ${fmt(t.other, 0)}: **${t.ctl === 0 && t.other === 0 ? 'the timeout refreshes cost no syscalls' : 'syscalls beyond read/write/wait: check'}**.`);
    }
  }
  return out;
}

function renderScenario(report, sc, n, L) {
  L.push(`## ${n}. ${sc.title}`);
  L.push('');
  L.push(`Load: ${sc.description}.`);
  L.push('');
  if (sc.kind === 'load') renderLoadTable(sc, L);
  else if (sc.kind === 'idle') renderIdleTable(sc, L);
  else renderMicroTable(sc, L);
  for (const s of sc.skipped) L.push(`| ${s.label} | skipped: ${esc(s.reason)} |`);
  if (sc.kind === 'load') {
    renderLoopTable(sc, L);
    renderStraceTable(sc, L);
  }
  const v = verdicts(sc);
  if (v.length) {
    L.push('');
    L.push(...v);
  }
  const notes = [...sc.notes.map((x) => `- ${x}`)];
  for (const r of [...sc.runs, ...(sc.strace && sc.strace.runs ? sc.strace.runs : [])]) {
    const tag = `${candLabel(sc, r.candidate)}${r.strace ? ' (strace run)' : ` round ${r.round}`}`;
    if (r.error) notes.push(`- ${tag}: FAILED: ${esc(r.error.split('\n')[0])}`);
    // "other work used N%" and "generator saturated" are in the table
    // (other CPU %, generator CPU %, flags); latest.json keeps every note.
    for (const x of r.notes) {
      if (!x.startsWith('other work used') && !x.startsWith('generator saturated')) notes.push(`- ${tag}: ${x}`);
    }
  }
  if (notes.length) {
    L.push('');
    L.push('Notes:');
    L.push('');
    L.push(...notes);
  }
  L.push('');
}

function summaryCell(sc, s, key, m) {
  const val = s[m.field];
  if (!val) return '–';
  const d = sc.kind === 'idle' ? 2 : undefined;
  let cell = fmt(val.median, d);
  const rs = sc.baselines
    .filter((b) => s.vs[b] && s.vs[b][key] != null && b !== s.id)
    .map((b) => `${fmtRatio(s.vs[b][key])} ${RATIO_TAGS[b] ?? b}`.trim());
  if (rs.length) cell += ` (${rs.join(', ')})`;
  // Throughput caveats, as in the chart: most runs generator-bound or noisy.
  if (key === 'rate') {
    const most = (x) => x && s.okRuns && x * 2 > s.okRuns;
    const marks = [];
    if (most(s.genBound)) marks.push('gen-bound');
    if (most(s.noisy)) marks.push('noisy');
    if (marks.length) cell += ` *${marks.join(', ')}*`;
  }
  return cell;
}

// How a ratio names its baseline in the summary: the first baseline of a row
// goes unnamed.
const RATIO_TAGS = { net: '', node: '', 'proxy-net': '', 'proxy-haproxy': 'haproxy' };

const SUMMARY_COLUMNS = [
  ['http', 'node:http'],
  ['net', 'node:net / node timers / node:net proxy'],
  ['iomux', 'iomux / iomux proxy'],
  ['iomux-standalone', 'iomux standalone / iomux proxy standalone'],
  ['iomux-uring', 'iomux io_uring'],
  ['iomux-http', 'iomux http'],
  ['iomux-http-uring', 'iomux http io_uring'],
  ['haproxy', 'HAProxy'],
  ['c', 'C epoll (reference)'],
];

// Which candidate of a row a summary column shows.
function summaryColumnFor(sc, col) {
  if (sc.kind === 'micro') return col === 'net' ? 'node' : col === 'iomux' ? 'iomux' : null;
  // The framework rows: serveNode() stands in the iomux column.
  if (sc.candidates.some((c) => c.id === 'iomux-node')) return { http: 'http', iomux: 'iomux-node' }[col] || null;
  if (sc.candidates.some((c) => c.id.startsWith('proxy-'))) {
    return {
      net: 'proxy-net', iomux: 'proxy-iomux', 'iomux-standalone': 'proxy-iomux-standalone', haproxy: 'proxy-haproxy',
    }[col] || null;
  }
  return col;
}

function renderSummary(report, L) {
  const cols = SUMMARY_COLUMNS.filter(([col]) => report.scenarios.some((sc) => {
    const id = summaryColumnFor(sc, col);
    return id && sc.candidates.some((c) => c.id === id);
  }));
  L.push('Medians; in brackets the ratio to node:net (and to node:http for HTTP rows, marked "http"; for the proxy ' +
    'rows, to the node:net proxy and to HAProxy, marked "haproxy"). ' +
    'Throughput: higher is better; CPU, memory and time per unit: lower is better. *gen-bound*: in most runs the load ' +
    'generator, not the server, was the bottleneck; *noisy*: in most runs other work used more than 15% of a CPU. ' +
    'Either way compare CPU per unit, which drifts far less than throughput.' +
    (cols.some(([col]) => col === 'c') ? ' C epoll (reference): `benchmarks/servers/c_epoll.c`, the same application work ' +
      'in a minimal single-threaded C epoll loop: the floor that loopback TCP sets for any server on this machine.' : ''));
  L.push('');
  L.push(`| scenario | measure | ${cols.map(([, label]) => label).join(' | ')} |`);
  L.push(`| --- | --- | ${cols.map(() => '---:').join(' | ')} |`);
  report.scenarios.forEach((sc, i) => {
    for (const [key, m] of Object.entries(headlineOf(sc))) {
      const cells = cols.map(([col]) => {
        const id = summaryColumnFor(sc, col);
        const s = id && sc.summary[id];
        if (!s) return '';
        return summaryCell(sc, { ...s, id }, key, m);
      });
      L.push(`| ${i + 1}. ${sc.shortTitle} | ${m.label} | ${cells.join(' | ')} |`);
    }
  });
  L.push('');
}

// The targets iomux holds itself to: the ratio of an iomux candidate's cost
// (CPU per unit, RSS per connection, CPU per timer pair) to a baseline's in
// the same run. `max` is the highest ratio that meets the target.
const TARGETS = [
  { scenario: 'keepalive', baseline: 'net', max: 0.70 },
  { scenario: 'pipeline', baseline: 'net', max: 0.65 },
  { scenario: 'churn', baseline: 'net', max: 0.55 },
  { scenario: 'express', baseline: 'http', max: 0.65 },
  { scenario: 'fastify', baseline: 'http', max: 0.65 },
  { scenario: 'echo', baseline: 'net', max: 0.70 },
  { scenario: 'bulk', baseline: 'net', max: 0.50 },
  { scenario: 'idle', baseline: 'net', max: 0.30 },
  { scenario: 'idle-silent', baseline: 'net', max: 0.30 },
  { scenario: 'idle-http', baseline: 'http', max: 0.30 },
  { scenario: 'idle-proxy', baseline: 'proxy-haproxy', max: 1.00 },
  { scenario: 'timers', baseline: 'node', max: 1 / 3, text: '≥ 3× faster' },
  { scenario: 'proxy', baseline: 'proxy-net', max: 0.50 },
  { scenario: 'proxy', baseline: 'proxy-haproxy', max: 1.00 },
];

// The summary columns a target row shows: the default (integrated, epoll)
// first, whose median decides the verdict.
const TARGET_COLUMNS = ['iomux', 'iomux-standalone', 'iomux-uring', 'c'];

// The candidate's cost over the baseline's within each round: within a round
// the candidates take turns, so these pairs share the machine's state.
function roundRatios(sc, id, baseline, field) {
  const out = [];
  for (const r of sc.runs) {
    if (r.strace || !r.ok || r.candidate !== id || r[field] == null) continue;
    const b = sc.runs.find((x) => !x.strace && x.ok && x.candidate === baseline && x.round === r.round);
    if (b && b[field]) out.push(r[field] / b[field]);
  }
  return out;
}

// Which candidate of a row a target column shows: the iomux.http rows put
// iomux.http under "iomux".
function targetColumnFor(sc, col) {
  if (sc.candidates.some((c) => c.id === 'iomux-http') && !sc.candidates.some((c) => c.id === 'iomux')) {
    return { iomux: 'iomux-http', 'iomux-uring': 'iomux-http-uring' }[col] || null;
  }
  return summaryColumnFor(sc, col);
}

function renderTargets(report, L) {
  const rows = [];
  for (const t of TARGETS) {
    const sc = report.scenarios.find((x) => x.id === t.scenario);
    if (!sc || !sc.summary[t.baseline]) continue;
    const field = headlineOf(sc).cost.field;
    const cells = TARGET_COLUMNS.map((col) => {
      const id = targetColumnFor(sc, col);
      const s = id && sc.summary[id];
      if (!s || !s.vs[t.baseline] || s.vs[t.baseline].cost == null) return { text: '' };
      const ratio = s.vs[t.baseline].cost;
      const per = roundRatios(sc, id, t.baseline, field);
      const met = per.filter((x) => x <= t.max).length;
      const spread = per.length > 1 ? ` (${fmtRatio(Math.min(...per))}–${fmtRatio(Math.max(...per))}; ${met}/${per.length} rounds)` : '';
      return { text: fmtRatio(ratio) + spread, ratio };
    });
    const lead = cells[0];
    const verdict = lead.ratio == null ? '–' : lead.ratio <= t.max ? '**met**' : 'not met';
    rows.push(`| ${sc.shortTitle} | ${candLabel(sc, t.baseline)} | ${t.text || `≤ ${fmt(t.max, 2)}×`} | ` +
      `${cells.map((c) => c.text).join(' | ')} | ${verdict} |`);
  }
  if (!rows.length) return;
  L.push('## Targets');
  L.push('');
  L.push('Cost (CPU per unit; RSS per connection for idle; CPU per pair for timers) as a ratio to the baseline: the ratio ' +
    'of the medians, then in brackets the range of the per-round ratios (within a round the candidates take turns) ' +
    'and in how many rounds the target held. The verdict is the median of the default candidate, iomux integrated in ' +
    'Node\'s loop on epoll (the iomux proxy, for the proxy rows). The C reference shows what the same work costs with no ' +
    'JavaScript at all.');
  L.push('');
  L.push('| scenario | baseline | target | iomux | iomux standalone | iomux io_uring | C epoll (reference) | verdict |');
  L.push('| --- | --- | --- | ---: | ---: | ---: | ---: | --- |');
  L.push(...rows);
  L.push('');
}

// How a round of the load rows ran. Reports from before phases existed have
// no config.phases: each run then started its own server.
function loadRoundText(config) {
  const warm = config.warmup ? ` and warmed up for ${config.warmup} s` : '';
  if (config.phases == null) {
    return `Candidates alternating; each run starts a fresh server${warm}, then measures ${config.duration} s.`;
  }
  const turns = config.phases > 1
    ? `then the candidates take turns, ${config.phases} timed phases of ${config.phaseS} s each (A B C A B C ...)`
    : `then each is measured for ${config.phaseS} s in turn`;
  return `In each round of the load rows every candidate's server is started${warm}, ${turns}, so that a drift of ` +
    'the machine\'s speed weighs on all of them alike; the order rotates from round to round. The other rows run ' +
    'one candidate after the other.';
}

function renderMarkdown(report) {
  const { config } = report;
  const L = [];
  L.push('# iomux benchmarks');
  L.push('');
  L.push(`${report.finishedAt} · ${machineLine(report)}`);
  L.push('');
  L.push(`${config.quick ? '**Quick smoke run** (CI): numbers are indicative only. ' : ''}` +
    `${config.rounds} round(s) per candidate. ${loadRoundText(config)} ` +
    (config.pinned ? 'Server pinned to CPU 0, load generator to CPU 1 (taskset). ' : 'Processes not pinned. ') +
    `HTTP load: ${config.loadgenVersion || config.loadgen}, one thread. ` +
    `Took ${fmt(report.elapsedS, 0)} s.`);
  L.push('');
  L.push('## Summary');
  L.push('');
  renderSummary(report, L);
  L.push('![ratios to node:net](latest.svg)');
  L.push('');
  renderTargets(report, L);
  if (report.failures.length) {
    L.push(`**${report.failures.length} run(s) failed**: see the scenarios' notes.`);
    L.push('');
  }
  report.scenarios.forEach((sc, i) => renderScenario(report, sc, i + 1, L));
  L.push('## Method');
  L.push('');
  L.push(`Server CPU is utime+stime of the whole server process (all threads) from /proc/<pid>/stat, read just before and ` +
    `right after each timed phase (clock ticks of 1/${report.machine.clkTck} s: ±${(1000 / report.machine.clkTck).toFixed(0)} ms ` +
    'per reading, about 1% of a full-length run, coarser in quick mode), summed over the phases and divided by the units ' +
    'of work the generator counted in them. ' +
    'Generator CPU is wrk\'s, autocannon\'s or the checking client\'s (clients/http_check.c, the framework rows) user+system time ' +
    '(bash `times`), or the echo C client\'s own getrusage over the phases. ' +
    '"Other CPU" is the machine\'s busy time from /proc/stat (steal included) minus server and generator (and the backend, in the proxy rows), in % of one CPU: ' +
    'well above 0 means something else competed for the CPUs, and the run is marked noisy above 15%. ' +
    'A run is "generator-bound" when the generator used 90% or more of its core and the server at least 5 points less of its own: ' +
    'its throughput measures the generator; compare CPU per unit instead. RSS is VmRSS at the end of the timed phase. ' +
    'Syscall counts come from a separate, shorter run under `strace -c -f` (all threads of the server), divided by the ' +
    'units the server itself counted in that window; "socket syscalls" are everything but the waits and "other" ' +
    '(futex, mmap, madvise, ... of V8\'s and libuv\'s threads).');
  L.push('');
  return L.join('\n');
}

// ---------------------------------------------------------------------------
// SVG chart: ratio to node:net per scenario and candidate, two panels.

const COLORS = {
  http: '#8c8c8c',
  net: '#4d4d4d',
  node: '#4d4d4d',
  iomux: '#1f77b4',
  'iomux-standalone': '#ff7f0e',
  'proxy-iomux': '#1f77b4',
  'proxy-iomux-standalone': '#ff7f0e',
  'iomux-uring': '#2ca02c',
  c: '#9467bd',
};

function xmlEsc(s) {
  return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function renderSvg(report) {
  const panels = [
    { key: 'rate', title: 'Throughput ÷ node:net (higher is better)' },
    { key: 'cost', title: 'Cost per unit ÷ node:net (lower is better)' },
  ];
  // Rows: per scenario, the candidates other than the baseline.
  const groups = report.scenarios.map((sc, i) => {
    const base = sc.baselines[0];
    const head = headlineOf(sc);
    const b = sc.summary[base];
    const rows = sc.candidates.filter((c) => c.id !== base).map((c) => {
      const s = sc.summary[c.id];
      const v = s && s.vs && s.vs[base];
      // Throughput caveats: most runs of this row or of the baseline noisy,
      // or this row's generator the bottleneck.
      const most = (x, n) => x && n && x * 2 > n;
      const caveat = [];
      if (s && most(s.genBound, s.okRuns)) caveat.push('generator-bound');
      if (s && (most(s.noisy, s.okRuns) || (b && most(b.noisy, b.okRuns)))) caveat.push('noisy');
      return { id: c.id, label: c.label, rate: v && head.rate ? v.rate : null, cost: v ? v.cost : null, caveat: caveat.join(', ') };
    });
    return { title: `${i + 1}. ${sc.shortTitle}`, costLabel: head.cost.label, rows };
  });
  const rowH = 16;
  const groupGap = 26;
  const top = 86;
  const labelW = 160;
  const panelW = 330;
  const gap = 70;
  const width = labelW + 2 * panelW + gap + 60;
  let height = top;
  for (const g of groups) height += groupGap + g.rows.length * rowH;
  height += 40;
  // Linear axes from 0, cut at 3x: a longer bar ends in an arrow and
  // carries its value (node:http's pipelining cost would squash the rest).
  const maxOf = (key) => {
    let m = 1.5;
    for (const g of groups) for (const r of g.rows) if (r[key] != null) m = Math.max(m, r[key]);
    return Math.min(Math.ceil(m * 2) / 2, 3);
  };
  const out = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ` +
    'font-family="Helvetica, Arial, sans-serif" font-size="11">');
  out.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  out.push(`<text x="10" y="20" font-size="14" font-weight="bold">iomux vs node:net${report.config.quick ? ' (quick smoke run)' : ''}</text>`);
  out.push(`<text x="10" y="36" fill="#555">${xmlEsc(`${report.machine.cpu}, ${report.machine.nproc} CPUs, Linux ${report.machine.kernel}, ` +
    `Node ${report.machine.node}; medians of ${report.config.rounds} round(s); ${report.finishedAt.slice(0, 10)}`)}</text>`);
  out.push(`<text x="10" y="50" fill="#555">${xmlEsc('Cost: server CPU per unit of work, RSS per idle connection, CPU per timer pair. ' +
    'Shared machine: numbers drift between runs; "noisy": other work competed for the CPUs.')}</text>`);
  // Legend.
  const legend = [];
  for (const sc of report.scenarios) for (const c of sc.candidates) if (!legend.some((l) => l.id === c.id) && c.id !== sc.baselines[0]) legend.push(c);
  let lx = 10;
  out.push(`<line x1="${lx + 5}" y1="58" x2="${lx + 5}" y2="72" stroke="#000" stroke-width="1.2"/>`);
  out.push(`<text x="${lx + 14}" y="69">node:net = 1×</text>`);
  lx += 24 + 13 * 6.2;
  for (const c of legend) {
    out.push(`<rect x="${lx}" y="60" width="10" height="10" fill="${COLORS[c.id] || '#999'}"/>`);
    out.push(`<text x="${lx + 14}" y="69">${xmlEsc(c.label)}</text>`);
    lx += 24 + c.label.length * 6.2;
  }
  panels.forEach((p, pi) => {
    const x0 = labelW + pi * (panelW + gap);
    const max = maxOf(p.key);
    const sx = (v) => x0 + (Math.min(v, max) / max) * panelW;
    out.push(`<text x="${x0}" y="${top - 2}" font-weight="bold">${xmlEsc(p.title)}</text>`);
    let y = top;
    for (const g of groups) {
      y += groupGap;
      const gh = g.rows.length * rowH;
      // Reference line at 1.0 and a light grid.
      for (let t = 0; t <= max + 1e-9; t += max > 3 ? 1 : 0.5) {
        out.push(`<line x1="${sx(t)}" y1="${y - 4}" x2="${sx(t)}" y2="${y + gh}" stroke="${t === 1 ? '#000' : '#e5e5e5'}" ` +
          `stroke-width="${t === 1 ? 1.2 : 1}"/>`);
      }
      if (pi === 0) out.push(`<text x="10" y="${y - 8}" font-weight="bold">${xmlEsc(g.title)}</text>`);
      out.push(`<text x="${x0}" y="${y - 8}" fill="#777">${xmlEsc(p.key === 'cost' ? g.costLabel : '')}</text>`);
      g.rows.forEach((r, i) => {
        const yy = y + i * rowH;
        if (pi === 0) out.push(`<text x="14" y="${yy + 11}">${xmlEsc(r.label)}</text>`);
        const v = r[p.key];
        if (v == null) {
          out.push(`<text x="${x0 + 4}" y="${yy + 11}" fill="#999">${p.key === 'rate' && g.rows.every((q) => q.rate == null) ? 'n/a' : '–'}</text>`);
          return;
        }
        const w = Math.max(1, sx(v) - x0);
        const fill = COLORS[r.id] || '#999';
        out.push(`<rect x="${x0}" y="${yy + 2}" width="${w.toFixed(1)}" height="${rowH - 4}" fill="${fill}"/>`);
        if (v > max) {
          const xe = x0 + w;
          out.push(`<polygon points="${xe},${yy + 1} ${xe + 7},${yy + rowH / 2} ${xe},${yy + rowH - 1}" fill="${fill}"/>`);
        }
        const label = `${v >= 10 ? v.toFixed(1) : v.toFixed(2)}×`;
        const note = p.key === 'rate' && r.caveat ? `<tspan dx="5" fill="#999">${xmlEsc(r.caveat)}</tspan>` : '';
        out.push(`<text x="${(x0 + w + (v > max ? 10 : 3)).toFixed(1)}" y="${yy + 11}" stroke="#fff" stroke-width="3" ` +
          `paint-order="stroke">${label}${note}</text>`);
      });
      y += gh;
    }
    // Axis ticks at the bottom.
    for (let t = 0; t <= max + 1e-9; t += max > 3 ? 1 : 0.5) {
      out.push(`<text x="${sx(t)}" y="${y + 16}" text-anchor="middle" fill="#555">${t}×</text>`);
    }
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

module.exports = { summarizeScenario, headlineOf, renderMarkdown, renderSvg };
