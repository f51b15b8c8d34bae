// node-app.ts -- requests and responses made with their application's
// prototypes from the start, on serveNode()'s connections.
//
// Express (4 and 5) gives every request and response its own prototype when
// it starts handling them: Object.setPrototypeOf(req, app.request) and
// Object.setPrototypeOf(res, app.response), where app.request's prototype
// chain leads to http.IncomingMessage.prototype and app.response's to
// http.ServerResponse.prototype. V8 gives an object whose prototype changes
// after it was made a new hidden class, so every property access that node's
// http code and the application make on req and res sees objects of two
// shapes, and the inline caches of the framework's code go polymorphic. On
// node:http, an Express request costs about 1,080 k instructions of user
// space with the change and 620 k when the objects are made with those
// prototypes (benchmarks/micro/framework-instructions.js).
//
// Node's http.Server makes its requests and responses with the classes it was
// created with (http.createServer's IncomingMessage and ServerResponse
// options, kept on the server under the symbols node names so). When the
// node server serveNode() feeds has node's own classes and one 'request'
// listener that is such an application, each new connection's requests and
// responses are made by constructors whose prototype is app.request and
// app.response: Express's setPrototypeOf then finds the prototype already in
// place and changes nothing. The objects are node's own in every other way
// (node's constructors run on them, instanceof holds), and the application's
// code is not changed. A server created with its own classes, or with
// another listener, is left as it is; the classes node chose are put back
// when the application is no longer the only listener.
import { IncomingMessage, ServerResponse, type Server as HttpServer } from 'node:http';

/** An application that moves each request and response to its own prototypes (Express's app.request and app.response). */
interface PrototypedApp {
  request: object;
  response: object;
}

interface AppClasses {
  request: typeof IncomingMessage;
  response: typeof ServerResponse;
}

const classesByApp = new WeakMap<object, AppClasses>();
/** The constructors made here, told apart from classes the server was created with. */
const appClasses = new WeakSet<object>();

function isAppClass(f: unknown): boolean {
  return typeof f === 'function' && appClasses.has(f);
}

/** The symbols node keeps a server's request and response classes under. */
interface ClassSymbols {
  incoming: symbol;
  response: symbol;
}

/** Found on the first server; null when node keeps them some other way. */
let classSymbols: ClassSymbols | null | undefined;

function findSymbols(server: HttpServer): ClassSymbols | null {
  const own = Object.getOwnPropertySymbols(server);
  const incoming = own.find((s) => s.description === 'IncomingMessage');
  const response = own.find((s) => s.description === 'ServerResponse');
  const s = server as unknown as Record<symbol, unknown>;
  // Only node's own layout: both symbols, holding constructors.
  if (incoming === undefined || response === undefined ||
      typeof s[incoming] !== 'function' || typeof s[response] !== 'function') return null;
  return { incoming, response };
}

function prototypedApp(listener: unknown): PrototypedApp | null {
  if (typeof listener !== 'function') return null;
  const app = listener as unknown as Partial<PrototypedApp>;
  const { request, response } = app;
  if (request === null || typeof request !== 'object' || response === null || typeof response !== 'object') return null;
  // Objects whose prototype chains lead to node's (Express: app.request -> its request -> IncomingMessage.prototype).
  if (!Object.prototype.isPrototypeOf.call(IncomingMessage.prototype, request)) return null;
  if (!Object.prototype.isPrototypeOf.call(ServerResponse.prototype, response)) return null;
  return app as PrototypedApp;
}

function classesOf(app: PrototypedApp): AppClasses {
  let c = classesByApp.get(app);
  if (c === undefined) {
    // Node's constructors are plain functions (Node 20 to 24): called on an
    // object that already has the application's prototype, they set it up as
    // `new` would.
    const AppRequest = function AppRequest(this: IncomingMessage, ...args: unknown[]): void {
      (IncomingMessage as unknown as (...a: unknown[]) => void).apply(this, args);
    } as unknown as typeof IncomingMessage;
    AppRequest.prototype = app.request as IncomingMessage;
    const AppResponse = function AppResponse(this: ServerResponse, ...args: unknown[]): void {
      (ServerResponse as unknown as (...a: unknown[]) => void).apply(this, args);
    } as unknown as typeof ServerResponse;
    AppResponse.prototype = app.response as ServerResponse;
    c = { request: AppRequest, response: AppResponse };
    classesByApp.set(app, c);
    appClasses.add(AppRequest);
    appClasses.add(AppResponse);
  }
  return c;
}

/**
 * Before a connection is handed to the node server: its request and response
 * classes are the application's (see above) when the server has node's own
 * classes and one prototyped application as its 'request' listener, and
 * node's own otherwise.
 */
export function adoptAppPrototypes(server: HttpServer): void {
  if (classSymbols === undefined) classSymbols = findSymbols(server);
  if (classSymbols === null) return;
  const { incoming: kIncoming, response: kResponse } = classSymbols;
  const s = server as unknown as Record<symbol, unknown>;
  const current = s[kIncoming];
  const app = server.listenerCount('request') === 1 ? prototypedApp(server.listeners('request')[0]) : null;
  if (app !== null) {
    const c = classesOf(app);
    if (current === c.request) return;
    // Only in place of node's own classes, never of the server's own options.
    if (current !== IncomingMessage && !isAppClass(current)) return;
    if (s[kResponse] !== ServerResponse && !isAppClass(s[kResponse])) return;
    s[kIncoming] = c.request;
    s[kResponse] = c.response;
  } else if (isAppClass(current)) {
    s[kIncoming] = IncomingMessage;
    s[kResponse] = ServerResponse;
  }
}
