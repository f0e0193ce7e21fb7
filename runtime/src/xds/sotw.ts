// StreamAggregatedResources: the state-of-the-world protocol. Per type: a request whose nonce is not
// the latest one sent is stale and ignored; with the latest nonce it is an ACK, or a NACK when it
// carries error_detail (never judged by version_info — clients NACK with the rejected version there).
// The server answers only an open request (one response in flight per type), and answers the first
// request of every stream. LDS and CDS responses carry the full state (omission deletes); RDS and EDS
// carry what was asked: everything subscribed after a subscription change, else what changed.

import type { SotwRequest } from './ads-types.ts';
import { TYPE_URLS, type ResourceKind } from './protos.ts';
import type { Resource, Snapshot } from './snapshot.ts';
import { AdsStream, KIND_OF_TYPE, WILDCARD_KINDS, type KindState } from './stream.ts';
import { encodeDiscoveryResponse, type RequestNames } from './wire.ts';

export class SotwStream extends AdsStream {
  readonly protocol = 'sotw' as const;
  /** Latest nonce per type URL (unknown types included). */
  readonly #latest = new Map<string, string>();

  /** Per type: the key of the resource_names last applied (an identical list is not read again). */
  readonly #namesKey = new Map<ResourceKind, string>();

  protected handle(req: SotwRequest): void {
    const typeUrl = req.type_url ?? '';
    const nonce = req.response_nonce ?? '';
    this.trace('request', { type: typeUrl, nonce, version: req.version_info, names: req.resource_names.count, nack: req.error_detail?.message });
    if (nonce !== '' && nonce !== this.#latest.get(typeUrl)) return this.trace('stale nonce ignored', { type: typeUrl, nonce }); // superseded by a newer response
    const kind = KIND_OF_TYPE.get(typeUrl);
    if (kind === undefined) {
      // A type isomesh does not serve: answer its subscription with nothing so the client need not wait.
      if (nonce === '' && typeUrl !== '') this.#write(typeUrl, encodeDiscoveryResponse({ versionInfo: '0', resources: [], typeUrl, nonce: this.#nonce(typeUrl) }));
      return;
    }
    const st = this.state(kind);
    st.requests++;
    if (nonce !== '' && st.inFlight?.nonce === nonce) {
      const flight = st.inFlight;
      st.inFlight = undefined;
      const err = req.error_detail;
      if (err && (err.code || err.message)) {
        const changed = [...flight.sent.values()].filter((r) => st.held.get(r.name)?.version !== r.version).map((r) => r.name);
        for (const name of this.blame(changed, err.message ?? '')) st.rejected.set(name, flight.sent.get(name)!.version);
        this.recordNack(kind, st, req.version_info ?? '', err.message ?? `code ${err.code}`);
        st.dirty = true; // what the NACK did not blame is offered again (the blamed resources are not)
        st.rescan = true;
      } else {
        if (WILDCARD_KINDS.has(kind)) st.held = new Map(flight.sent);
        else for (const [name, r] of flight.sent) st.held.set(name, r);
        st.ackedVersion = flight.version;
        st.nacked = undefined;
        this.released(kind);
      }
    } else if (nonce === '') {
      st.mustAnswer = true; // a new stream's (or a re-sent) first request is always answered
    }
    this.#subscribe(kind, st, req.resource_names);
  }

  #subscribe(kind: ResourceKind, st: KindState, requested: RequestNames): void {
    if (this.#namesKey.get(kind) === requested.key) return; // the same list as last time (the usual ACK)
    this.#namesKey.set(kind, requested.key);
    const names = requested.list();
    const wildcardKind = WILDCARD_KINDS.has(kind);
    const star = names.includes('*');
    if (names.length > (star ? 1 : 0)) st.explicit = true;
    const wildcard = wildcardKind && (star || (names.length === 0 && !st.explicit));
    const next = new Set(star ? names.filter((n) => n !== '*') : names);
    // Only a subscription that grows needs an answer: the client drops what it unsubscribed by itself.
    const grew = (wildcard && !st.wildcard) || [...next].some((n) => !st.names.has(n));
    st.wildcard = wildcard;
    st.names = next;
    if (grew) st.mustAnswer = true;
    if (!wildcard) for (const n of [...st.held.keys()]) if (!next.has(n)) st.held.delete(n); // unsubscribed: forgotten
  }

  protected respond(kind: ResourceKind, st: KindState, snap: Snapshot): void {
    const full = WILDCARD_KINDS.has(kind);
    const out = new Map<string, Resource>();
    const add = (r: Resource): void => {
      if (st.rejected.size > 0) {
        const rejected = st.rejected.get(r.name);
        if (rejected === r.version) {
          // refused and unchanged: full state keeps the client's last good copy; RDS/EDS send nothing
          const held = st.held.get(r.name);
          if (full && held && 'any' in held) out.set(r.name, held);
          return;
        }
        if (rejected !== undefined) st.rejected.delete(r.name); // changed since the client refused it: offer it
      }
      out.set(r.name, r);
    };
    // RDS/EDS after a change: only the names the change touched (the client holds the rest)
    const touched = !full && !st.mustAnswer && !st.rescan ? st.changed : undefined;
    if (st.wildcard) for (const r of snap.resources(kind)) add(r);
    for (const name of touched ?? st.names) {
      if (touched && !st.names.has(name)) continue;
      if (st.wildcard && out.has(name)) continue;
      const r = snap.get(kind, name);
      if (r) add(r);
    }
    st.changed = new Set();
    st.rescan = false;
    if (kind === 'cluster') {
      const gone = new Set<string>();
      for (const name of st.held.keys()) if (!out.has(name)) gone.add(name);
      for (const [name, r] of this.stillReferenced(gone)) out.set(name, r);
    }
    let changed = 0;
    for (const r of out.values()) if (st.held.get(r.name)?.version !== r.version) changed++;
    const answer = st.mustAnswer;
    st.dirty = false;
    st.mustAnswer = false;
    // full state: also a removal is news; RDS/EDS: only what changed is sent (all of it when answering)
    if (!answer && changed === 0 && (!full || out.size === st.held.size)) return;
    let resources = [...out.values()];
    if (!full && !answer) resources = resources.filter((r) => st.held.get(r.name)?.version !== r.version);
    const nonce = this.#nonce(TYPE_URLS[kind]);
    const version = snap.version(kind);
    st.inFlight = { nonce, version, sent: full ? out : new Map(resources.map((r) => [r.name, r])), removed: [] };
    this.send(kind, encodeDiscoveryResponse({ versionInfo: version, resources: resources.map((r) => r.any), typeUrl: TYPE_URLS[kind], nonce }), { nonce, version, count: resources.length });
  }

  #nonce(typeUrl: string): string {
    const n = this.nonce();
    this.#latest.set(typeUrl, n);
    return n;
  }

  #write(typeUrl: string, bytes: Buffer): void {
    this.deps.metrics.response(typeUrl, this.protocol);
    this.call.write(bytes);
  }
}
