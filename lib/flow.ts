// flow.ts -- the one stream rule that iomux's light readables (Socket,
// IncomingRequest) share with node's streams: adding a 'data' listener starts
// the flow unless the reader paused it.
import { EventEmitter } from 'node:events';

export abstract class FlowingEmitter extends EventEmitter {
  abstract resume(): this;
  abstract isPaused(): boolean;

  override on(event: string | symbol, listener: (...args: any[]) => void): this {
    super.on(event, listener);
    if (event === 'data' && !this.isPaused()) this.resume();
    return this;
  }

  override addListener(event: string | symbol, listener: (...args: any[]) => void): this {
    return this.on(event, listener);
  }

  override once(event: string | symbol, listener: (...args: any[]) => void): this {
    super.once(event, listener);
    if (event === 'data' && !this.isPaused()) this.resume();
    return this;
  }
}
