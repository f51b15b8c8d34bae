// load.ts -- a supervisor's config from a file: .json, or .js/.cjs exporting
// the options (or a function, possibly async, returning them).
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { ConfigError, resolveConfig, type SupervisorOptions } from './config';

/** Reads and checks a config file; throws ConfigError naming the bad field. Relative paths are relative to the file. */
export async function loadConfig(file: string): Promise<{ options: SupervisorOptions; baseDir: string }> {
  const abs = path.resolve(file);
  const baseDir = path.dirname(abs);
  let options: unknown;
  const ext = path.extname(abs);
  if (ext === '.json') {
    let text: string;
    try {
      text = readFileSync(abs, 'utf8');
    } catch (e) {
      throw new ConfigError('file', `cannot read ${abs}: ${(e as Error).message}`);
    }
    try {
      options = JSON.parse(text);
    } catch (e) {
      throw new ConfigError('file', `${abs} is not valid JSON: ${(e as Error).message}`);
    }
  } else if (ext === '.js' || ext === '.cjs') {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    let mod = require(abs) as unknown;
    if (mod && typeof mod === 'object' && 'default' in mod) mod = (mod as { default: unknown }).default;
    options = typeof mod === 'function' ? await (mod as () => unknown)() : mod;
  } else {
    throw new ConfigError('file', `${abs}: expected a .json or .js file`);
  }
  resolveConfig(options, baseDir); // throws on the first bad field
  return { options: options as SupervisorOptions, baseDir };
}
