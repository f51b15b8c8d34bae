// rundir.ts -- the run directory of a supervisor and its admin socket path.
import { lstatSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

export function defaultRunDir(): string {
  if (process.env.IOMUX_RUN_DIR) return path.resolve(process.env.IOMUX_RUN_DIR);
  const uid = typeof process.getuid === 'function' ? process.getuid() : 0;
  return path.join(tmpdir(), `iomux-cluster-${uid}`);
}

export function adminPath(runDir: string): string {
  return path.join(runDir, 'admin.sock');
}

/** Creates runDir 0700 if needed; refuses one that is not ours or is open to others. */
export function ensureRunDir(runDir: string): void {
  mkdirSync(runDir, { recursive: true, mode: 0o700 });
  const st = lstatSync(runDir);
  if (!st.isDirectory()) throw new Error(`runDir ${runDir} is not a directory`);
  if (typeof process.getuid === 'function' && st.uid !== process.getuid()) {
    throw new Error(`runDir ${runDir} belongs to uid ${st.uid}, not to us (${process.getuid()})`);
  }
  if ((st.mode & 0o077) !== 0) {
    throw new Error(`runDir ${runDir} has mode ${(st.mode & 0o777).toString(8)}: others may enter it (want 700)`);
  }
}
