// Engine registry: each engine is loaded on first use, so a missing optional native module
// only matters to the engine that needs it.

import { registerEngine } from './engine.js';

registerEngine('postgres', async () => (await import('./postgres/index.js')).postgresEngine);
registerEngine('mysql', async () => (await import('./mysql/index.js')).mysqlEngine);
registerEngine('sqlite', async () => (await import('./sqlite/index.js')).sqliteEngine);

export { loadEngine } from './engine.js';
