/** Where test/fixtures lives, found from the compiled harness (dist/test/harness → test/fixtures). */
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const FIXTURES_DIR = fileURLToPath(new URL('../../../test/fixtures/', import.meta.url));

export function fixturePath(name: string): string {
  return path.join(FIXTURES_DIR, name);
}
