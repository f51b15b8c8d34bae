// iomux: a network toolkit over a thin native I/O multiplexer.
export { loop, Loop, Timer } from './loop';
export type { LoopStats, TimerCallback } from './loop';
export { Socket, connect, createConnection } from './socket';
export type { SocketOptions, AddressInfo } from './socket';
export { Server, createServer } from './server';
export type { ServerOptions } from './server';
export type { ConnectOptions, ListenOptions } from './address';
export { errnoException } from './errors';
export type { SystemError } from './errors';
export * as http from './http';
export * as proxy from './proxy';
export * as zmq from './zmq';
export { forward, type ForwardOptions, type ForwardReason, type ForwardResult } from './forward';
export { SharedCache } from './shared';
export { SyncClient, SyncMaster, SyncRegion, Semaphore, Mutex, SharedVar, Counter, Config as SyncConfig } from './shared';
export type { LockResult, SemaphoreCreateOptions, SharedVarCreateOptions, SyncRegionOptions, SyncError } from './shared';
export type {
  SharedCacheOptions, SharedCacheStats, WriteOptions as SharedCacheWriteOptions, IncrOptions as SharedCacheIncrOptions,
  SetResult as SharedCacheSetResult, StaleValue as SharedCacheStaleValue, VersionedValue as SharedCacheVersionedValue,
} from './shared';
// The supervisor and the pipeline are loaded on first use: a plain server
// does not pay at start-up for child_process, the pipeline's histograms
// (hdr-histogram-js alone takes about 60 ms to load) and the rest.
import type * as ClusterModule from './cluster';
import type * as PipelineModule from './pipeline';
export declare const cluster: typeof ClusterModule;
export declare const pipeline: typeof PipelineModule;
function onFirstUse(name: string, load: () => unknown): void {
  Object.defineProperty(exports, name, { enumerable: true, get: load });
}
// eslint-disable-next-line @typescript-eslint/no-var-requires
onFirstUse('cluster', () => require('./cluster'));
// eslint-disable-next-line @typescript-eslint/no-var-requires
onFirstUse('pipeline', () => require('./pipeline'));
