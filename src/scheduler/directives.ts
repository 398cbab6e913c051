// Owns: what an operator asks of this node through the store, from any node's command line: the
// drain flag (`cluster drain NODE [--undo]`) and control requests (`config reload --node/--all`).
// The node polls the store for them every POLL_MS (one indexed read), applies the flag, handles
// each request and writes its answer next to it.
// Failure: a poll or an answer that fails (the store unreachable) is logged and tried again at the
// next poll; a handler that fails answers not ok; a request whose answer could not be written is
// handled again at the next poll (a reload may be repeated: it is idempotent).
import { emit } from '../events.ts';
import type { ControlKind, Store } from '../store/types.ts';
import { errorMessage } from '../util/errors.ts';

/** How often a node looks for its drain flag and requests. */
export const POLL_MS = 2000;

export interface DirectiveHandlers {
  draining(on: boolean): void;
  control(kind: ControlKind): Promise<{ ok: boolean; message: string }>;
}

export class NodeDirectives {
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> = Promise.resolve();
  private draining: boolean | undefined;
  private readonly handled = new Set<number>();

  constructor(
    private readonly store: Store,
    private readonly node: string,
    private readonly on: DirectiveHandlers,
    private readonly everyMs = POLL_MS,
  ) {}

  /** The first poll has been applied (a node drained before it started stays drained) before this resolves. */
  async start(): Promise<void> {
    await this.poll();
    this.schedule();
  }

  private schedule(): void {
    this.timer = setTimeout(() => {
      this.polling = this.poll().finally(() => {
        if (this.timer) this.schedule();
      });
    }, this.everyMs);
    this.timer.unref();
  }

  private async poll(): Promise<void> {
    try {
      const d = await this.store.nodeDirectives(this.node);
      if (d.draining !== this.draining) {
        if (this.draining !== undefined || d.draining)
          emit({ event: 'node.draining', node: this.node, draining: d.draining });
        this.draining = d.draining;
        this.on.draining(d.draining);
      }
      for (const r of d.requests) {
        if (this.handled.has(r.id)) continue;
        this.handled.add(r.id);
        const a = await this.on.control(r.kind).catch((e: unknown) => ({ ok: false, message: errorMessage(e) }));
        emit({ event: 'node.control', node: this.node, id: r.id, kind: r.kind, by: r.requestedBy, ...a });
        await this.store.answerControl(r.id, a.ok, a.message).catch((e: unknown) => {
          this.handled.delete(r.id);
          throw e;
        });
      }
    } catch (e) {
      emit({ event: 'internal.error', where: 'node directives', error: errorMessage(e) });
    }
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.polling;
  }
}
