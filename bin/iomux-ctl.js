#!/usr/bin/env node
'use strict';
// iomux-ctl [--run-dir DIR] [--json] list | restart SERVICE | send TARGET NAME [ARGS...] | shutdown
const { cluster } = require('../dist');

const USAGE = `usage: iomux-ctl [--run-dir DIR] [--json] COMMAND
  list                       services and their containers
  restart SERVICE            rolling restart of SERVICE
  send TARGET NAME [ARGS..]  admin message to a service, a container id or '*'
  shutdown                   graceful stop of the supervisor
The run directory defaults to $IOMUX_RUN_DIR, else <tmpdir>/iomux-cluster-<uid>.`;

function parse(argv) {
  const o = { json: false, runDir: undefined, rest: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--json') o.json = true;
    else if (a === '--run-dir') o.runDir = argv[++i];
    else if (a.startsWith('--run-dir=')) o.runDir = a.slice(10);
    else if (a === '-h' || a === '--help') o.help = true;
    else o.rest.push(a);
  }
  return o;
}

function fmtMs(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  return `${Math.floor(s / 3600)}h`;
}

function table(rows) {
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
  return rows.map((r) => r.map((c, i) => String(c).padEnd(w[i])).join('  ').trimEnd()).join('\n');
}

function arg(s) {
  // Admin message arguments: JSON where it parses (numbers, objects), else the string.
  try { return JSON.parse(s); } catch { return s; }
}

async function main() {
  const o = parse(process.argv.slice(2));
  const [cmd, ...rest] = o.rest;
  if (o.help || !cmd) {
    console.error(USAGE);
    process.exit(o.help ? 0 : 2);
  }
  let op; let args = {};
  if (cmd === 'list') op = 'list';
  else if (cmd === 'restart' && rest.length === 1) { op = 'restart'; args = { service: rest[0] }; }
  else if (cmd === 'send' && rest.length >= 2) { op = 'send'; args = { target: rest[0], name: rest[1], args: rest.slice(2).map(arg) }; }
  else if (cmd === 'shutdown') op = 'shutdown';
  else {
    console.error(USAGE);
    process.exit(2);
  }
  let r;
  try {
    r = await cluster.adminRequest(op, args, o.runDir || cluster.defaultRunDir());
  } catch (e) {
    if (o.json) console.log(JSON.stringify({ error: e.message, code: e.code }));
    else console.error(`iomux-ctl: ${e.code === 'ENOENT' || e.code === 'ECONNREFUSED' ? 'no supervisor: ' : ''}${e.message}`);
    process.exit(1);
  }
  if (o.json) {
    console.log(JSON.stringify(r));
  } else if (op === 'list') {
    const rows = [['SERVICE', 'CONTAINER', 'PID', 'STATE', 'UPTIME', 'RESTARTS', 'CONNS', 'RSS']];
    for (const s of r.services) {
      if (s.containers.length === 0) rows.push([s.name + (s.failed ? ' (FAILED)' : ''), '-', '-', '-', '-', s.restarts, '-', '-']);
      for (const c of s.containers) {
        rows.push([s.name + (s.failed ? ' (FAILED)' : ''), c.id, c.pid, c.state, fmtMs(c.uptime), c.restarts,
          c.connections ?? '?', c.rss ? `${(c.rss / 1048576).toFixed(1)}M` : '?']);
      }
    }
    console.log(`supervisor pid ${r.pid}, run dir ${r.runDir}`);
    console.log(table(rows));
  } else if (op === 'restart') {
    console.log(`restarted ${r.restarted}`);
  } else if (op === 'send') {
    console.log(`delivered to ${r.delivered} container(s)`);
  } else {
    console.log('supervisor stopping');
  }
}

main().catch((e) => {
  console.error('iomux-ctl:', e);
  process.exit(1);
});
