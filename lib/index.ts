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
export * as pipeline from './pipeline';
export { forward, type ForwardOptions, type ForwardReason, type ForwardResult } from './forward';
export { SharedCache } from './shared';
export { SyncClient, SyncMaster, SyncRegion, Semaphore, Mutex, SharedVar, Counter, Config as SyncConfig } from './shared';
export type { LockResult, SemaphoreCreateOptions, SharedVarCreateOptions, SyncRegionOptions, SyncError } from './shared';
export type {
  SharedCacheOptions, SharedCacheStats, WriteOptions as SharedCacheWriteOptions, IncrOptions as SharedCacheIncrOptions,
  SetResult as SharedCacheSetResult, StaleValue as SharedCacheStaleValue, VersionedValue as SharedCacheVersionedValue,
} from './shared';
// The supervisor is loaded on first use: a plain server does not pay for
// child_process and the rest at start-up.
import type * as ClusterModule from './cluster';
export declare const cluster: typeof ClusterModule;
Object.defineProperty(exports, 'cluster', {
  enumerable: true,
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  get: () => require('./cluster') as typeof ClusterModule,
});
