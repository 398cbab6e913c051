// Cleanup that must happen even when the proof run is interrupted (SIGINT / SIGTERM / SIGHUP):
// kill the gateway processes it started, unmount what it mounted. Normal failures are handled by
// `finally` blocks; this covers a signal, where Node would otherwise exit without running them.
// Handlers run synchronously, in reverse order of registration, then the process exits.
const actions = new Map<number, () => void>();
let nextId = 0;
const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

function onSignal(sig: NodeJS.Signals): void {
  for (const id of [...actions.keys()].reverse()) {
    try {
      actions.get(id)!();
    } catch {
      /* best effort: keep cleaning */
    }
  }
  actions.clear();
  process.exit(128 + ({ SIGHUP: 1, SIGINT: 2, SIGTERM: 15 } as Record<string, number>)[sig]);
}

/** Register a synchronous cleanup action; returns its disposer (call it once the resource is gone). */
export function onAbort(action: () => void): () => void {
  const id = nextId++;
  if (!actions.size) for (const s of SIGNALS) process.on(s, onSignal);
  actions.set(id, action);
  return () => {
    actions.delete(id);
    if (!actions.size) for (const s of SIGNALS) process.off(s, onSignal);
  };
}
