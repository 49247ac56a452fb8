/** The part of s3rver 3.x (CommonJS, no bundled types) that the test harness uses. */
declare module 's3rver' {
  import type { Server } from 'node:http';
  import type { AddressInfo } from 'node:net';
  import type { Readable } from 'node:stream';

  interface S3rverOptions {
    address?: string;
    port?: number;
    silent?: boolean;
    directory?: string;
    resetOnClose?: boolean;
    allowMismatchedSignatures?: boolean;
    vhostBuckets?: boolean;
    configureBuckets?: { name: string; configs?: (string | Buffer)[] }[];
  }

  /** The slice of Koa's context that harness middleware touches. */
  interface Context {
    /** The request body stream s3rver stores; replaceable by middleware. */
    req: Readable;
    method: string;
    /** The URL path, still percent-encoded. */
    path: string;
    query: Record<string, string | string[] | undefined>;
    status: number;
    body: unknown;
    set(field: string, value: string): void;
    get(requestHeader: string): string;
    response: {
      get(field: string): string;
      set(field: string, value: string): void;
      remove(field: string): void;
    };
  }

  class S3rver {
    constructor(options?: S3rverOptions);
    /** Koa's middleware stack; composed when run() starts listening. */
    middleware: ((ctx: Context, next: () => Promise<void>) => Promise<void>)[];
    /** The filesystem store behind the server. */
    store: { existsObject(bucket: string, key: string): Promise<boolean> };
    /** Creates the configured buckets, then listens; resolves with the bound address. */
    run(): Promise<AddressInfo>;
    /** Set by run(). */
    httpServer: Server;
    close(): Promise<void>;
  }

  export = S3rver;
}
