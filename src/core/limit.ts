/**
 * Runs `fn` over the items with at most `limit` of them at once (a stash of 50,000 backups must
 * not open 50,000 files or requests at the same time).
 */
export async function eachLimited<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]);
    }),
  );
}
