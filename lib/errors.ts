// errors.ts -- errors shaped like node's: system errors carry code, errno
// (negative, as node reports it) and syscall; argument errors name the
// argument. One factory per kind.
import { getSystemErrorMap, getSystemErrorName, inspect } from 'node:util';

export interface SystemError extends Error {
  code: string;
  errno: number;
  syscall: string;
  address?: string;
  port?: number;
}

/**
 * A failed syscall; `errno` is the positive errno value from the core. With
 * `describe`, the message carries the system's description after the code,
 * as node's listen errors do ("listen EADDRINUSE: address already in use ...").
 */
export function errnoException(errno: number, syscall: string, address?: string, port?: number,
  describe = false): SystemError {
  let code: string;
  try {
    code = getSystemErrorName(-errno);
  } catch {
    code = `Unknown system error ${errno}`;
  }
  let where = '';
  if (address) where = port !== undefined && port > 0 ? ` ${address}:${port}` : ` ${address}`;
  let desc = '';
  if (describe) {
    const entry = getSystemErrorMap().get(-errno);
    if (entry !== undefined) desc = `: ${entry[1]}`;
  }
  const err = new Error(`${syscall} ${code}${desc}${where}`) as SystemError;
  err.code = code;
  err.errno = -errno;
  err.syscall = syscall;
  if (address) err.address = address;
  if (port !== undefined && port > 0) err.port = port;
  return err;
}

export interface CodedError extends Error {
  code: string;
}

function coded<E extends Error>(err: E, code: string): E & CodedError {
  (err as E & CodedError).code = code;
  return err as E & CodedError;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'string') return `type string ('${value.length > 28 ? value.slice(0, 25) + '...' : value}')`;
  if (typeof value === 'object') return `an instance of ${(value as object).constructor?.name ?? 'Object'}`;
  return `type ${typeof value} (${String(value)})`;
}

export function invalidArgType(name: string, expected: string, actual: unknown): TypeError & CodedError {
  return coded(new TypeError(`The "${name}" argument must be ${expected}. Received ${describe(actual)}`), 'ERR_INVALID_ARG_TYPE');
}

export function invalidArgValue(name: string, value: unknown, reason = 'is invalid'): TypeError & CodedError {
  const kind = name.includes('.') ? 'property' : 'argument';
  return coded(new TypeError(`The ${kind} '${name}' ${reason}. Received ${inspect(value)}`), 'ERR_INVALID_ARG_VALUE');
}

export function outOfRange(name: string, range: string, value: unknown): RangeError & CodedError {
  return coded(new RangeError(`The value of "${name}" is out of range. It must be ${range}. Received ${describe(value)}`), 'ERR_OUT_OF_RANGE');
}

export function badPort(name: string, value: unknown): RangeError & CodedError {
  return coded(new RangeError(`${name} should be >= 0 and < 65536. Received ${describe(value)}.`), 'ERR_SOCKET_BAD_PORT');
}

export function serverAlreadyListening(): Error & CodedError {
  return coded(new Error('Listen method has been called more than once without closing.'), 'ERR_SERVER_ALREADY_LISTEN');
}

export function serverNotRunning(): Error & CodedError {
  return coded(new Error('Server is not running.'), 'ERR_SERVER_NOT_RUNNING');
}

export function writeAfterEnd(): Error & CodedError {
  return coded(new Error('write after end'), 'ERR_STREAM_WRITE_AFTER_END');
}

export function streamDestroyed(method: string): Error & CodedError {
  return coded(new Error(`Cannot call ${method} after a stream was destroyed`), 'ERR_STREAM_DESTROYED');
}

export function socketClosed(): Error & CodedError {
  return coded(new Error('Socket is closed'), 'ERR_SOCKET_CLOSED');
}

export function closedBeforeConnection(): Error & CodedError {
  return coded(new Error('Socket closed before the connection was established'), 'ERR_SOCKET_CLOSED_BEFORE_CONNECTION');
}

/** A write after the peer's FIN ended the socket (node's writeAfterFIN). */
export function peerEnded(): Error & CodedError {
  return coded(new Error('This socket has been ended by the other party'), 'EPIPE');
}

export function missingArgs(what: string): TypeError & CodedError {
  return coded(new TypeError(`The ${what} argument must be specified`), 'ERR_MISSING_ARGS');
}
