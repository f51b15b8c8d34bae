import t from 'tap';
import { collect, iomux, listen, closeServer } from './helpers';

t.test('echo round trip on 127.0.0.1', async (t) => {
  const server = iomux.createServer((s) => s.on('data', (d: Buffer) => s.write(d)).on('end', () => s.end()));
  const port = await listen(server);
  const c = iomux.connect(port, '127.0.0.1');
  const got = collect(c);
  c.end('hello iomux');
  t.equal((await got).toString(), 'hello iomux');
  await closeServer(server);
});
