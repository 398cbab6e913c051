// Owns: a node's presence in the store: its heartbeat (id, version, configuration hash, pid) and
// the renewal of the leases of its deliveries in flight, every third of queue.leaseSeconds. So
// a live node's leases never expire, and a node that dies (kill -9, power loss) leaves leases
// that expire within queue.leaseSeconds: other nodes take that work over. A node that stops
// cleanly (its leases handed back) records that it stopped: `cluster status` shows it stopped at
// once rather than up until its heartbeat ages.
// Failure: a heartbeat or renewal that fails (the store unreachable) is logged and tried again
// at the next beat; it never stops the node.
import { emit } from '../events.ts';
import { errorMessage } from '../util/errors.ts';
import type { NodeBeat, Store } from '../store/types.ts';

/** The interval of heartbeats and lease renewals for a lease of `leaseSeconds`. */
export const heartbeatMs = (leaseSeconds: number): number => Math.max(1000, Math.floor((leaseSeconds * 1000) / 3));

export class NodePresence {
  private timer: NodeJS.Timeout | undefined;
  private beating: Promise<void> = Promise.resolve();

  constructor(
    private readonly store: Store,
    private readonly node: () => NodeBeat,
    private readonly leaseSeconds: () => number,
    private readonly renew: () => Promise<void>,
  ) {}

  /** The first heartbeat is written before this resolves. */
  async start(): Promise<void> {
    await this.store.heartbeat(this.node());
    this.schedule();
  }

  private schedule(): void {
    this.timer = setTimeout(() => {
      this.beating = this.beat().finally(() => {
        if (this.timer) this.schedule();
      });
    }, heartbeatMs(this.leaseSeconds()));
    this.timer.unref();
  }

  private async beat(): Promise<void> {
    try {
      await Promise.all([this.store.heartbeat(this.node()), this.renew()]);
    } catch (e) {
      emit({ event: 'internal.error', where: 'node heartbeat', error: errorMessage(e) });
    }
  }

  /** Stop beating; `stopped`: the node stops cleanly, and says so in the store. */
  async stop(stopped = false): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.beating;
    if (!stopped) return;
    try {
      const n = this.node();
      await this.store.nodeStopped(n.id, n.pid);
    } catch (e) {
      emit({ event: 'internal.error', where: 'node stopped', error: errorMessage(e) });
    }
  }
}
