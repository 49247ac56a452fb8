// What must still happen when dbstash exits without waiting for its own clean-up, because a person
// asked twice (a second Ctrl-C while the first one's clean-up still runs): releasing the locks it
// holds, so that the next run does not find them. Only quick actions belong here; everything else
// is left to the next run (temporaries carry the owning pid, see core/scratch.ts) and to prune.

type Action = () => Promise<unknown> | unknown;

const actions = new Set<Action>();

/** Registers an action for a forced exit; returns what unregisters it (call it once done). */
export function onForcedExit(action: Action): () => void {
  actions.add(action);
  return () => actions.delete(action);
}

/** Runs every registered action at once, waiting at most `timeoutMs` for them together. */
export async function runForcedExitActions(timeoutMs: number): Promise<void> {
  const pending = [...actions].map(async (action) => {
    actions.delete(action);
    await action();
  });
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)));
  await Promise.race([Promise.allSettled(pending), deadline]);
  clearTimeout(timer);
}
