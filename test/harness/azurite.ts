/**
 * Throwaway Azure Blob endpoints for tests: Azurite's blob service (the `azurite` package, run
 * with this Node as a child process, so its memory is not the test process's) on a free port of
 * 127.0.0.1, keeping its data in its own temp dir. It uses the emulator's documented account,
 * devstoreaccount1, with its well-known key; the endpoint is path-style
 * (http://127.0.0.1:<port>/devstoreaccount1). Telemetry is off, API versions are not checked
 * (the SDK may be newer than the emulator), and unsupported headers are ignored (--loose).
 *
 * Azurite keeps the semantics the driver relies on: Put Block / Put Block List, conditional
 * commits (If-None-Match: * answered with 409 BlobAlreadyExists), listing with uncommitted blobs,
 * access tiers (reads of an archived blob fail with 409 BlobArchived) and SAS checks. Where it
 * differs from Azure: a Put Blob with If-None-Match: * is refused while the name has only
 * uncommitted blocks (Azure accepts it), and a Put Blob does not drop those blocks.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createRequire } from 'node:module';
import path from 'node:path';
import { BlobServiceClient, StorageSharedKeyCredential, type ContainerClient } from '@azure/storage-blob';
import { freePort } from './proc.js';
import { atExit, removeTempDir, tempDir } from './tmp.js';

const ACCOUNT = 'devstoreaccount1';
/** Azurite's documented key for devstoreaccount1: public, not a secret. */
const KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';
const STARTUP_TIMEOUT_MS = 20_000;
const PORT_ATTEMPTS = 3;

export interface AzuriteServer {
  /** http://127.0.0.1:<port>/devstoreaccount1 */
  endpoint: string;
  accountName: typeof ACCOUNT;
  accountKey: string;
  /** A connection string with the key and this endpoint. */
  connectionString: string;
  /** Azurite's process id. */
  pid: number;
  /** Where Azurite keeps its database and blob contents. */
  directory: string;
  /** A plain SDK client with the account key, independent of the driver under test. */
  service: BlobServiceClient;
  container(name: string): ContainerClient;
  createContainer(name: string): Promise<void>;
  /** Kills Azurite and removes its directory. Idempotent. */
  stop(): Promise<void>;
}

/** The blob service's entry point in the installed package (its `azurite-blob` bin). */
function azuriteBlobMain(): string {
  const pkg = createRequire(import.meta.url).resolve('azurite/package.json');
  return path.join(path.dirname(pkg), 'dist', 'src', 'blob', 'main.js');
}

export async function startAzurite(opts: { containers?: string[] } = {}): Promise<AzuriteServer> {
  const directory = tempDir('dbstash-azurite');
  const main = azuriteBlobMain();
  let child: ChildProcess | undefined;
  const unregister = atExit(() => child?.kill('SIGKILL'));
  let port = 0;
  try {
    for (let attempt = 1; ; attempt++) {
      port = await freePort();
      child = spawn(
        process.execPath,
        [main, '--blobHost', '127.0.0.1', '--blobPort', String(port), '--location', directory, '--silent', '--skipApiVersionCheck', '--loose', '--disableTelemetry'],
        { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, AZURITE_ACCOUNTS: undefined } },
      );
      const output = await untilListening(child);
      if (output === undefined) break;
      await killAndWait(child);
      if (attempt < PORT_ATTEMPTS && /EADDRINUSE/.test(output)) continue;
      throw new Error(`[harness/azurite] Azurite did not start:\n${output.trim().split('\n').slice(-15).join('\n')}`);
    }
    // A forgotten stop() must not keep the test process alive; the exit hook kills Azurite.
    child.unref();
    (child.stdout as unknown as { unref?: () => void }).unref?.();
    (child.stderr as unknown as { unref?: () => void }).unref?.();
  } catch (err) {
    unregister();
    await killAndWait(child);
    await removeTempDir(directory);
    throw err;
  }

  const endpoint = `http://127.0.0.1:${port}/${ACCOUNT}`;
  const service = new BlobServiceClient(endpoint, new StorageSharedKeyCredential(ACCOUNT, KEY));
  let stopped = false;
  const server: AzuriteServer = {
    endpoint,
    accountName: ACCOUNT,
    accountKey: KEY,
    connectionString: `DefaultEndpointsProtocol=http;AccountName=${ACCOUNT};AccountKey=${KEY};BlobEndpoint=${endpoint};`,
    pid: child.pid!,
    directory,
    service,
    container: (name) => service.getContainerClient(name),
    async createContainer(name) {
      await service.getContainerClient(name).create();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      unregister();
      await killAndWait(child);
      await removeTempDir(directory);
    },
  };
  for (const name of opts.containers ?? []) await server.createContainer(name);
  return server;
}

/** Resolves undefined once Azurite says it listens, or its output when it exits or hangs first. */
function untilListening(child: ChildProcess): Promise<string | undefined> {
  return new Promise((resolve) => {
    let output = '';
    const done = (result: string | undefined) => {
      clearTimeout(timer);
      child.stdout!.removeAllListeners('data');
      child.stderr!.removeAllListeners('data');
      // Azurite keeps writing nothing with --silent, but a full pipe must never block it.
      child.stdout!.resume();
      child.stderr!.resume();
      child.removeListener('exit', onExit);
      resolve(result);
    };
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      if (/successfully listens on/.test(output)) done(undefined);
    };
    const onExit = (code: number | null, signal: string | null) => done(`${output}\n(exited: ${signal ?? `code ${code}`})`);
    const timer = setTimeout(() => done(`${output}\n(not listening after ${STARTUP_TIMEOUT_MS} ms)`), STARTUP_TIMEOUT_MS);
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', onExit);
    child.once('error', (err) => done(`cannot start ${process.execPath}: ${err.message}`));
  });
}

async function killAndWait(child: ChildProcess | undefined): Promise<void> {
  if (!child?.pid || child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.ref();
  child.kill('SIGKILL');
  await exited;
}
