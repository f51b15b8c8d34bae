// iomux.pipeline: prime_server's butterfly (HTTP front end, load-balancing stage
// proxies, workers, a PULL loopback) on iomux.http and iomux.zmq.
export { createServer, PipelineServer } from './server';
export type { PipelineOptions, PipelineStats, StageConfig, StageStats } from './server';
export { runWorker, connectWorker } from './worker';
export type { JobContext, Outcome, WorkerFunction, WorkerHandle, WorkerOptions, WorkerEndpoints, Headers } from './worker';
