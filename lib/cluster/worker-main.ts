// worker-main.ts -- the entry point of a worker process: sets up the
// container from IOMUX_CLUSTER, loads the service's module, runs its hooks.
import { Container, _setContainer, type WorkerHooks, type WorkerSpec } from './container';
import { FrameType } from './protocol';

async function main(): Promise<void> {
  const raw = process.env.IOMUX_CLUSTER;
  if (!raw) {
    console.error('iomux-cluster worker: started without IOMUX_CLUSTER (run by a supervisor only)');
    process.exit(2);
  }
  const spec = JSON.parse(raw) as WorkerSpec;
  delete process.env.IOMUX_CLUSTER; // not for the module's own children
  const container = new Container(spec);
  _setContainer(container);
  process.on('uncaughtException', (err) => {
    let keep = false;
    try {
      keep = container._hooks.globalExceptionHandler?.(err) === true;
    } catch (e) {
      console.error(`iomux-cluster worker ${spec.id}: globalExceptionHandler threw`, e);
    }
    if (!keep) {
      console.error(`iomux-cluster worker ${spec.id}: uncaught exception, exiting:`, err);
      process.exit(1);
    }
  });
  process.on('unhandledRejection', (err) => {
    throw err;
  });
  // Signals are the master's business: a SIGINT from the terminal goes to
  // the whole process group, and the master stops us gracefully.
  process.on('SIGINT', () => {});
  process.on('SIGHUP', () => {});
  process.on('SIGTERM', () => void container.stop(10000, false));
  container._channel.send(FrameType.HELLO, { id: spec.id, pid: process.pid });
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  let mod = require(spec.module) as unknown;
  if (mod && typeof mod === 'object' && 'default' in mod && (mod as { default: unknown }).default) {
    mod = (mod as { default: unknown }).default;
  }
  if (typeof mod === 'function') mod = await (mod as (c: Container) => unknown)(container);
  const hooks = (mod && typeof mod === 'object' ? mod : {}) as WorkerHooks;
  container._hooks = hooks;
  if (hooks.postStart) await hooks.postStart(container);
  if (!container.isStopping) container._channel.send(FrameType.READY);
}

main().catch((err) => {
  console.error('iomux-cluster worker: start-up failed:', err);
  process.exit(1);
});
