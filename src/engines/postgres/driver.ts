// node-postgres, loaded for dbstash's own connections. At import, pg checks whether it runs in a
// Cloudflare Worker: it looks at `navigator.userAgent` and, where there is no navigator (Node 20),
// constructs a `Response`, which loads Node's whole fetch implementation: ~10 ms before the first
// connection of every run. Node ≥ 21 defines `navigator` itself; on older versions a navigator like
// it is defined for the duration of the import only, so the check answers from the user agent.

const lacksNavigator = !('navigator' in globalThis);
if (lacksNavigator) {
  Object.defineProperty(globalThis, 'navigator', {
    value: { userAgent: `Node.js/${process.versions.node.split('.')[0]}` },
    configurable: true,
  });
}
const { default: pg } = await import('pg').finally(() => {
  if (lacksNavigator) delete (globalThis as { navigator?: unknown }).navigator;
});

export default pg;
