// iomux's load-balancing reverse proxy (TCP and HTTP modes), and the PROXY
// protocol codec it speaks: `import { proxy } from 'iomux'`.
export * from './protocol';
export { Proxy, createProxy } from './proxy';
export type { ProxyStats, CloseOptions } from './proxy';
export { ProxyConfigError, parseHostPort, resolveOptions } from './config';
export type { ProxyOptions, ProxyMode, LogEntry, ResolvedOptions } from './config';
export { Upstream } from './upstream';
export type { UpstreamOptions, UpstreamStats, HealthState, ProxyProtocolVersion } from './upstream';
export type { BalanceStrategy } from './balancer';
export type { HealthCheckOptions } from './health';
export { relay } from './relay';
export type { RelayOptions, RelayResult, RelayEndReason } from './relay';
export { ResponseParser, DEFAULT_RESPONSE_LIMITS } from './response';
export type { ResponseHead, ResponseHandler, ResponseLimits, ResponseBodyKind } from './response';
