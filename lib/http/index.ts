// iomux's HTTP/1.1 server: `import { http } from 'iomux'`.
export { createServer, HttpServer, HttpServer as Server } from './server';
export type { DrainOptions, HttpServerOptions, RequestListener } from './server';
export { IncomingRequest } from './request';
export { ServerResponse, httpDate } from './response';
export type { OutgoingHeaders, OutgoingHeaderValue } from './response';
export { HttpError, RequestParser, DEFAULT_LIMITS } from './parser';
export type { ParserLimits, ParserHandler, RequestHead } from './parser';
export { serveNode, takeOverListen, NodeSocket } from './node';
export type { ServeNodeOptions, ServeNodeServer } from './node';
