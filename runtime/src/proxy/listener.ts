// Binding and draining tenant listeners (node:http servers).

import http from 'node:http';
import { IsomeshError } from '../errors.ts';

/** How often a draining server re-closes connections that went idle after their last response. */
const DRAIN_POLL_MS = 50;

export function createListener(onRequest: http.RequestListener): http.Server {
  const server = http.createServer(
    {
      // A proxy streams arbitrarily long bodies; the upstream timeouts bound what the proxy waits for.
      requestTimeout: 0,
      keepAliveTimeout: 5000,
      noDelay: true,
    },
    onRequest,
  );
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const body = '{"error":{"code":"ISOMESH_ERR_PROXY_BAD_REQUEST","message":"malformed request"}}';
    socket.end(
      'HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-type: application/json\r\n' +
        `x-isomesh-error: ISOMESH_ERR_PROXY_BAD_REQUEST\r\ncontent-length: ${body.length}\r\n\r\n${body}`,
    );
  });
  return server;
}

/** Listen; resolves with the bound port, rejects IsomeshError (PORT_IN_USE or LISTEN_FAILED). */
export function listen(server: http.Server, port: number, address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      server.off('listening', onListening);
      if (err.code === 'EADDRINUSE') {
        reject(new IsomeshError('ISOMESH_ERR_TENANT_PORT_IN_USE', `listener port ${address}:${port} is already in use`));
      } else {
        reject(new IsomeshError('ISOMESH_ERR_PROXY_LISTEN_FAILED', `cannot listen on ${address}:${port}: ${err.code ?? err.message}`));
      }
    };
    const onListening = (): void => {
      server.off('error', onError);
      const bound = server.address();
      resolve(typeof bound === 'object' && bound !== null ? bound.port : port);
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen({ port, host: address, exclusive: true });
  });
}

/**
 * Stop accepting, let in-flight requests finish, close keep-alive connections as they go idle,
 * and after `timeoutMs` cut whatever is left.
 */
export function drain(server: http.Server, timeoutMs: number): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) {
      server.closeAllConnections();
      resolve();
      return;
    }
    const poll = setInterval(() => server.closeIdleConnections(), DRAIN_POLL_MS);
    const deadline = setTimeout(() => server.closeAllConnections(), timeoutMs);
    server.close(() => {
      clearInterval(poll);
      clearTimeout(deadline);
      resolve();
    });
    server.closeIdleConnections();
  });
}
