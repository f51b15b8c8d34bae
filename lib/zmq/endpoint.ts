// endpoint.ts -- ZeroMQ endpoint strings: tcp://host:port and ipc:///path.

export type Endpoint =
  | { transport: 'tcp'; host: string; port: number; text: string }
  | { transport: 'ipc'; path: string; text: string };

function endpointError(ep: unknown, why: string): TypeError & { code: string } {
  const err = new TypeError(`Invalid ZeroMQ endpoint ${JSON.stringify(ep)}: ${why}`) as TypeError & { code: string };
  err.code = 'ERR_ZMQ_ENDPOINT';
  return err;
}

/**
 * Parses an endpoint. For bind, host '*' is every IPv4 interface (0.0.0.0)
 * and port '*' (or 0) an ephemeral port; connect wants a real host and port.
 */
export function parseEndpoint(ep: unknown, forBind: boolean): Endpoint {
  if (typeof ep !== 'string') throw endpointError(ep, 'must be a string');
  const m = /^([a-z]+):\/\/(.+)$/.exec(ep);
  if (m === null) throw endpointError(ep, 'must look like tcp://host:port or ipc:///path');
  const [, transport, rest] = m as unknown as [string, string, string];
  if (transport === 'ipc') {
    if (rest.includes('\0')) throw endpointError(ep, 'the path must not contain NUL');
    if (Buffer.byteLength(rest) > 107) throw endpointError(ep, 'the path is longer than a unix socket path can be (107 bytes)');
    return { transport: 'ipc', path: rest, text: ep };
  }
  if (transport !== 'tcp') throw endpointError(ep, `transport ${JSON.stringify(transport)} is not supported (tcp, ipc)`);
  const colon = rest.lastIndexOf(':');
  if (colon <= 0) throw endpointError(ep, 'needs host:port');
  let host = rest.slice(0, colon);
  const portText = rest.slice(colon + 1);
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  // A connect endpoint may name a source address first ("src;host"): not supported.
  if (host.includes(';')) throw endpointError(ep, 'source addresses are not supported');
  if (host === '*') {
    if (!forBind) throw endpointError(ep, "host '*' is for bind only");
    host = '0.0.0.0';
  }
  if (host.length === 0 || /[\s/\\]/.test(host)) throw endpointError(ep, 'bad host');
  let port: number;
  if (portText === '*') {
    if (!forBind) throw endpointError(ep, "port '*' is for bind only");
    port = 0;
  } else if (/^\d{1,5}$/.test(portText) && Number(portText) <= 65535) {
    port = Number(portText);
    if (port === 0 && !forBind) throw endpointError(ep, 'port 0 is for bind only');
  } else {
    throw endpointError(ep, 'bad port');
  }
  return { transport: 'tcp', host, port, text: ep };
}

export function formatTcp(host: string, port: number): string {
  return `tcp://${host.includes(':') ? `[${host}]` : host}:${port}`;
}
