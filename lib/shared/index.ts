// lib/shared: the JavaScript face of iomux's shared memory.
export { SharedCache } from './cache';
export type {
  SharedCacheOptions, SharedCacheStats, WriteOptions, IncrOptions, SetResult, StaleValue, VersionedValue, CacheKey,
} from './cache';
export { SyncClient, SyncMaster, SyncRegion, Semaphore, Mutex, SharedVar, Counter, Config, MASTER_ID } from './sync';
export type { LockResult, SemaphoreCreateOptions, SharedVarCreateOptions, SyncRegionOptions, SyncPeer, SyncError } from './sync';
