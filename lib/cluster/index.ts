// cluster: a supervisor (master) that runs services of worker processes on
// inherited listeners, restarts what crashes, and lets them talk. See
// docs/cluster.md.
import { getContainer, type Container } from './container';

export { Supervisor, createSupervisor } from './supervisor';
export type { ContainerInfo, ExitStatus, RequestHandler, ServiceInfo, WorkerState } from './supervisor';
export { Container } from './container';
export type { MessageFrom, WorkerHooks } from './container';
export { ConfigError, resolveConfig } from './config';
export type { ListenAddress, MasterHooks, RestartPolicy, ServiceConfig, SupervisorOptions } from './config';
export { loadConfig } from './load';
export { adminRequest } from './admin-client';
export { defaultRunDir, adminPath } from './rundir';
export { encodeFrame, FrameDecoder, FrameType, HEADER_SIZE, MAX_PAYLOAD, ProtocolError, VERSION } from './protocol';

/** This worker's container; null in a process that no supervisor started. */
export declare const container: Container | null;
Object.defineProperty(exports, 'container', { enumerable: true, get: getContainer });
