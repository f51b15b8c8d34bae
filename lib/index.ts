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
