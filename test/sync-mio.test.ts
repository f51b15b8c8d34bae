// The mio.c setup (examples/mio-setup/cluster.js, the file npx iomux-cluster
// takes): 4 HTTP workers take their ports from the config counter, the
// proxy in front balances the upstreams they published in the config, and
// curl through the proxy reaches every worker.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import t from 'tap';
import { iomux, tempDir } from './helpers';

t.test('4 HTTP workers behind the proxy, all from the shared config', async (t) => {
  process.env.PROXY_PORT = '0';
  // ports are handed out from here up; a taken one is skipped
  process.env.HTTP_BASE_PORT = String(20000 + Math.floor(Math.random() * 30000));
  const file = join(__dirname, '..', 'examples', 'mio-setup', 'cluster.js');
  const { options, baseDir } = await iomux.cluster.loadConfig(file);
  const dir = tempDir('iomux-mio-');
  const logs: string[] = [];
  const sup = iomux.cluster.createSupervisor({ ...options, runDir: join(dir, 'run'), signals: false, log: (l: string) => logs.push(l) }, baseDir);
  t.teardown(() => sup.stop());
  await sup.start();
  const list = await sup.list();
  t.same(list.map((s) => [s.name, s.containers.filter((c) => c.state === 'ready').length]), [['http', 4], ['proxy', 1]], 'all ready');
  const upstreams = (await sup.sync.config.get('upstreams')) as string[];
  t.equal(upstreams.length, 4, `4 upstreams published: ${upstreams.join(' ')}`);
  const ports = upstreams.map((u) => Number(u.split(':')[1]));
  const base = Number(process.env.HTTP_BASE_PORT);
  t.ok(ports.every((p) => p >= base && p < base + 64), 'ports from the counter above the base');
  t.equal(new Set(ports).size, 4, 'all different');
  const proxyPort = Number(sup.addresses('proxy')[0]!.split(':').pop());
  const seen = new Set<string>();
  for (let i = 0; i < 16; i++) {
    const body = execFileSync('curl', ['-sS', '--max-time', '5', `http://127.0.0.1:${proxyPort}/`], { encoding: 'utf8' });
    const m = /worker (http\.\d+)/.exec(body);
    t.ok(m, `answer ${i}: ${body.trim()}`);
    if (m) seen.add(m[1]!);
  }
  t.same([...seen].sort(), ['http.1', 'http.2', 'http.3', 'http.4'], 'curl through the proxy reached every worker');
  t.same(logs.filter((l) => /exited/.test(l)), [], 'no worker died');
});
