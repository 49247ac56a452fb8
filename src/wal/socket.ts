// The one exchange of dbstash's local WAL sockets (the daemon's push server, a restore's get
// server): a connection carries one JSON request line and gets one JSON answer line back. Only the
// owner may connect (0600; the caller hands the socket to PostgreSQL's OS user where needed).

import { createServer, type Server } from 'node:net';
import { promises as fsp } from 'node:fs';

const MAX_REQUEST = 64 * 1024;

/**
 * Listens on `socketPath`; `answer` gets each connection's request, parsed (undefined when it is
 * not JSON), and returns the reply to send back.
 */
export async function listenForRequests(socketPath: string, answer: (request: unknown) => Promise<unknown>): Promise<Server> {
  const server = createServer((socket) => {
    let buffer = '';
    socket.setEncoding('utf8');
    socket.on('error', () => {});
    const onData = (chunk: string) => {
      buffer += chunk;
      const nl = buffer.indexOf('\n');
      if (nl < 0) {
        if (buffer.length > MAX_REQUEST) socket.destroy();
        return;
      }
      socket.off('data', onData);
      let request: unknown;
      try {
        request = JSON.parse(buffer.slice(0, nl));
      } catch {
        request = undefined;
      }
      void answer(request).then((reply) => socket.end(JSON.stringify(reply) + '\n'));
    };
    socket.on('data', onData);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  await fsp.chmod(socketPath, 0o600);
  return server;
}

export function closeServer(server: Server | undefined): Promise<void> {
  return new Promise((resolve) => (server ? server.close(() => resolve()) : resolve()));
}
