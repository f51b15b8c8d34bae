// lib/shared: the JavaScript face of iomux's shared memory.
export { SharedCache } from './cache';
export type {
  SharedCacheOptions, SharedCacheStats, WriteOptions, IncrOptions, SetResult, StaleValue, VersionedValue, CacheKey,
} from './cache';
