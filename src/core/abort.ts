// Hooking an action to an abort signal for the span of one operation (a connection, a query).

/** Runs `action` once when `signal` aborts (not when it already has); returns what unhooks it. */
export function onAbort(signal: AbortSignal | undefined, action: () => void): () => void {
  if (!signal) return () => {};
  signal.addEventListener('abort', action, { once: true });
  return () => signal.removeEventListener('abort', action);
}
