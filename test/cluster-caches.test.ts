// The supervisor's caches option: one shared-memory cache for every worker of
// a service, made by the master (or handed to it), kept across restarts.
import t from 'tap';
import * as iomux from '../dist';
import { makeSupervisor } from './cluster-helpers';
import { waitFor } from './helpers';

type Result = [string, unknown];

function collect(sup: iomux.cluster.Supervisor): Result[] {
  const got: Result[] = [];
  sup.on('message', (name: string, args: unknown[]) => {
    if (name === 'cache-result') got.push([args[0] as string, args[1]]);
  });
  return got;
}

t.test('caches: every worker sees one cache, and it outlives a rolling restart', async (t) => {
  const h = makeSupervisor([{ count: 2, caches: [{ name: 'shared', size: 1 << 20, defaultTtl: 60_000 }] }]);
  t.teardown(() => h.sup.stop());
  await h.sup.start();
  const got = collect(h.sup);

  // Each of the two workers increments the same counter twice.
  for (let i = 0; i < 2; i++) t.equal(h.sup.send('web', 'cache', 'shared', 'incr', 'hits'), 2);
  t.ok(await waitFor(() => got.length === 4, 5000), 'four answers');
  t.same(got.map((g) => g[1]).sort(), [1, 2, 3, 4], 'one counter across the workers');
  t.same([...new Set(got.map((g) => g[0]))].sort(), ['web.1', 'web.2']);

  h.sup.send('web.1', 'cache', 'shared', 'set', 'greeting', 'set by web.1');
  t.ok(await waitFor(() => got.length === 5, 5000));
  got.length = 0;
  h.sup.send('web.2', 'cache', 'shared', 'get', 'greeting');
  t.ok(await waitFor(() => got.length === 1, 5000));
  t.same(got[0], ['web.2', 'set by web.1'], 'a value set in one worker is read in the other');

  // New workers replace the old ones: the master held the region throughout.
  await h.sup.restart('web');
  got.length = 0;
  t.equal(h.sup.send('web', 'cache', 'shared', 'get', 'greeting'), 2);
  t.ok(await waitFor(() => got.length === 2, 5000));
  t.ok(got.every((g) => g[1] === 'set by web.1'), 'the contents survived the restart');
  t.notOk(got.some((g) => g[0] === 'web.1' || g[0] === 'web.2'), 'answered by the new workers');

  got.length = 0;
  h.sup.send('web', 'cache', 'nope', 'get', 'greeting');
  t.ok(await waitFor(() => got.length === 2, 5000));
  t.ok(got.every((g) => (g[1] as { error: string }).error !== undefined), 'an unknown cache name is an error in the worker');
});

t.test('caches: a SharedCache made by the caller is handed down as it is', async (t) => {
  const cache = iomux.SharedCache.create({ size: 1 << 20 });
  t.teardown(() => cache.close());
  cache.set('from', 'the caller');
  const h = makeSupervisor([{ count: 1, caches: [cache as never] }]);
  t.teardown(() => h.sup.stop());
  await h.sup.start();
  const got = collect(h.sup);
  h.sup.send('web', 'cache', 0, 'get', 'from');
  t.ok(await waitFor(() => got.length === 1, 5000));
  t.same(got[0]![1], 'the caller', 'the worker reads what the caller stored');
  h.sup.send('web', 'cache', 0, 'set', 'back', 'from the worker');
  t.ok(await waitFor(() => got.length === 2, 5000));
  t.equal(cache.get('back'), 'from the worker', 'and the caller reads what the worker stored');
});

t.test('caches: bad entries name the field', async (t) => {
  const mk = (caches: unknown) => () => iomux.cluster.createSupervisor({
    services: [{ name: 'web', worker: __filename, caches: caches as never }], admin: false, signals: false,
  });
  t.throws(mk('x'), /services\[0\]\.caches/);
  t.throws(mk([{ name: 'a b' }]), /services\[0\]\.caches\[0\]\.name/);
  t.throws(mk([{ name: 'a' }, { name: 'a' }]), /used twice/);
  t.throws(mk([{ name: 'a', sise: 1 }]), /services\[0\]\.caches\[0\]\.sise/);
  const sup = iomux.cluster.createSupervisor({
    services: [{ name: 'web', worker: __filename, listen: [], caches: [{ name: 'a', size: 1 }] }], admin: false, signals: false,
  });
  await t.rejects(sup.start(), /caches\[a\].*options\.size/, 'a size the cache refuses fails start() and names it');
});
