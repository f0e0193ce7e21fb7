// The stage the hostile corpus plays on: one real daemon, an echo upstream and three tenants.
//   good  — a well-behaved tenant whose chain is the probe plugin; it also owns a secret the evil
//           tenant tries to read.
//   evil  — small quota (memoryMb 16, cpuMsPerRequest 50); its chain is [hostile case, probe].
// The probe plugin reports, through a request header the echo upstream hands back, whether its
// own context sees any pollution, so leaks across contexts and tenants are asserted, not assumed.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { startDaemon, type TestDaemon } from '../support/daemon.ts';
import { request, startEcho, type EchoUpstream, type SimpleResponse } from '../support/http.ts';
import type { HostileCase } from './corpus.ts';

export const GOOD_SECRET = { name: 'good-only', value: 'good-secret-5b1f0c' };
export const EVIL_SECRET = { name: 'evil-own', value: 'evil-secret-77aa21' };
export const EVIL_QUOTA = { memoryMb: 16, cpuMsPerRequest: 50, cpuMsPerSecond: 1_000_000, maxPlugins: 200 };

/** Runs in its own plugin context: reports pollution of its globals and what secret it can read. */
export const PROBE_SOURCE = `
const nativePush = Array.prototype.push;
export default {
  onRequest(req, ctx) {
    const dirty = [];
    if (({}).polluted !== undefined || Object.getOwnPropertyNames(Object.prototype).includes('polluted')) dirty.push('object-prototype');
    if (!String(Array.prototype.push).includes('[native code]') || Array.prototype.push !== nativePush) dirty.push('array-push');
    if (!String(JSON.stringify).includes('[native code]')) dirty.push('json');
    for (const k of Object.getOwnPropertyNames(globalThis)) if (/^(hostile|stash)/i.test(k)) dirty.push('global:' + k);
    req.headers.set('x-probe', dirty.length === 0 ? 'clean' : dirty.join(','));
    req.headers.set('x-probe-tenant', ctx.tenant);
    req.headers.set('x-probe-secret', String(ctx.secrets.get('${GOOD_SECRET.name}')));
  },
};`;

export interface EvilOutcome {
  res: SimpleResponse;
  /** The upstream's echo of the request, when the request reached it. */
  echo?: { headers: Record<string, string>; url: string };
}

export class HostileBench {
  d!: TestDaemon;
  echo!: EchoUpstream;
  ports: Record<'good' | 'evil', number> = { good: 0, evil: 0 };
  #published = new Set<string>();

  async start(): Promise<void> {
    this.echo = await startEcho();
    this.d = await startDaemon();
    for (const t of ['good', 'evil'] as const) {
      const r = await this.d.api('PUT', `/v1/tenants/${t}`, {});
      assert.equal(r.status, 201, JSON.stringify(r.body));
      this.ports[t] = r.body.listenerPort;
      await this.ok('PUT', `/v1/tenants/${t}/services/echo`, { endpoints: [{ address: '127.0.0.1', port: this.echo.port }] });
      await this.ok('PUT', `/v1/tenants/${t}/routes/all`, { match: { pathPrefix: '/' }, to: { service: 'echo' } });
      await this.publish(t, 'probe', PROBE_SOURCE);
    }
    await this.ok('PUT', '/v1/tenants/evil/quota', EVIL_QUOTA);
    await this.ok('PUT', `/v1/tenants/good/secrets/${GOOD_SECRET.name}`, { value: GOOD_SECRET.value });
    await this.ok('PUT', `/v1/tenants/evil/secrets/${EVIL_SECRET.name}`, { value: EVIL_SECRET.value });
    await this.ok('PUT', '/v1/tenants/good/chain', [{ plugin: 'probe', failurePolicy: 'closed' }]);
  }

  async stop(): Promise<void> {
    const stateDir = this.d?.stateDir;
    await this.d?.stop();
    await this.echo?.close();
    if (stateDir !== undefined) fs.rmSync(stateDir, { recursive: true, force: true });
  }

  async ok(method: string, p: string, body?: unknown): Promise<void> {
    const r = await this.d.api(method, p, body);
    assert.ok(r.status >= 200 && r.status < 300, `${method} ${p} → ${r.status} ${JSON.stringify(r.body)}`);
  }

  /** Publishes `source` as a new version of `plugin` and activates it. */
  async publish(tenant: string, plugin: string, source: string): Promise<void> {
    const r = await this.d.api('POST', `/v1/tenants/${tenant}/plugins/${plugin}/versions`, { source, language: 'javascript' });
    assert.equal(r.status, 201, `publish ${plugin}: ${JSON.stringify(r.body)}`);
    await this.ok('PUT', `/v1/tenants/${tenant}/plugins/${plugin}/active`, { version: r.body.version });
    this.#published.add(`${tenant}/${plugin}`);
  }

  async ensurePublished(tenant: string, plugin: string, source: string): Promise<void> {
    if (!this.#published.has(`${tenant}/${plugin}`)) await this.publish(tenant, plugin, source);
  }

  /**
   * PUTs the evil chain with a raw JSON body (hostile configs are sent byte-for-byte) and returns
   * the status; waits out the 100 ms activation promise on success.
   */
  async evilChain(rawJson: string): Promise<{ status: number; body: string }> {
    const res = await fetch(`${this.d.url}/v1/tenants/evil/chain`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${this.d.token}`, 'content-type': 'application/json' },
      body: rawJson,
    });
    const body = await res.text();
    if (res.ok) await sleep(150);
    return { status: res.status, body };
  }

  /** A transport failure (reset, hang) becomes status 0 with the error as body, so rows judge it. */
  /** Points the evil tenant's service at `port` (the shared echo when omitted). */
  async evilUpstream(port?: number): Promise<void> {
    await this.ok('PUT', '/v1/tenants/evil/services/echo', { endpoints: [{ address: '127.0.0.1', port: port ?? this.echo.port }] });
    await sleep(150);
  }

  async evilRequest(path: string, timeoutMs = 20_000): Promise<EvilOutcome> {
    let res: SimpleResponse;
    try {
      res = await request(this.ports.evil, path, { timeoutMs });
    } catch (e) {
      res = { status: 0, headers: {}, body: `transport error: ${(e as Error).message}` };
    }
    const out: EvilOutcome = { res };
    if (res.status === 200 && res.headers['x-upstream'] === 'echo') out.echo = JSON.parse(res.body);
    return out;
  }

  /** One good-tenant request; true when it reached the upstream with a clean probe of tenant good. */
  async goodRequest(path: string): Promise<boolean> {
    const res = await request(this.ports.good, path, { timeoutMs: 20_000 });
    if (res.status !== 200) return false;
    const h = (JSON.parse(res.body) as { headers: Record<string, string> }).headers;
    return h['x-probe'] === 'clean' && h['x-probe-tenant'] === 'good' && h['x-probe-secret'] === GOOD_SECRET.value;
  }

  async healthy(): Promise<boolean> {
    try {
      return (await fetch(`${this.d.url}/healthz`)).status === 200;
    } catch {
      return false;
    }
  }

  daemonAlive(): boolean {
    return this.d.proc.exitCode === null && this.d.proc.signalCode === null;
  }

  /** Plugin names are per case: "h-" + the case name. */
  static pluginName(c: HostileCase): string {
    return `h-${c.name}`.slice(0, 63).replace(/-+$/, '');
  }
}
