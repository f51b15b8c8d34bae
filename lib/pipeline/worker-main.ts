// The worker module a supervisor service runs for one pipeline stage: it reads
// its stage from IOMUX_PIPELINE_WORKER (JSON) and runs one worker until shutdown.
import { runWorker, type WorkerFunction, type WorkerHandle } from './worker';

interface Spec {
  stage: string;
  stageIndex: number;
  module: string;
  export: string;
  concurrency: number;
  endpoints: { proxy: string; next?: string; loopback: string };
}

let handle: WorkerHandle | null = null;

export function loadStageFunction(modulePath: string, exportName: string): WorkerFunction {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const mod = require(modulePath) as Record<string, unknown>;
  const fn = exportName === 'default' ? (typeof mod === 'function' ? mod : mod.default) : mod[exportName];
  if (typeof fn !== 'function') throw new TypeError(`${modulePath} has no function export ${exportName}`);
  return fn as WorkerFunction;
}

export function postStart(): void {
  const raw = process.env.IOMUX_PIPELINE_WORKER;
  if (raw === undefined) throw new Error('iomux-pipeline worker: IOMUX_PIPELINE_WORKER is not set');
  const spec = JSON.parse(raw) as Spec;
  handle = runWorker({
    stage: spec.stage, stageIndex: spec.stageIndex, fn: loadStageFunction(spec.module, spec.export),
    endpoints: spec.endpoints, concurrency: spec.concurrency,
  });
}

export async function preFinish(): Promise<void> {
  if (handle !== null) await handle.close();
  handle = null;
}
