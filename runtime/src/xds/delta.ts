// DeltaAggregatedResources: the incremental protocol. The client's subscriptions arrive as diffs and
// are always applied (even on a request whose nonce is stale); a request carrying the nonce of the
// response in flight ACKs it, or NACKs it with error_detail. Each response carries only resources whose
// version differs from what the client holds (initial_resource_versions on reconnect count as held),
// plus removed_resources for subscribed names that are gone (or were asked for and do not exist).

import type { DeltaDiscoveryRequest } from './ads-types.ts';
import { TYPE_URLS, type ResourceKind } from './protos.ts';
import type { Resource, Snapshot } from './snapshot.ts';
import { AdsStream, KIND_OF_TYPE, WILDCARD_KINDS, type KindState } from './stream.ts';
import { encodeDeltaResponse } from './wire.ts';

export class DeltaStream extends AdsStream {
  readonly protocol = 'delta' as const;
  /** Subscribed names already reported as absent (so a removal is not repeated). */
  readonly #absent = new Map<ResourceKind, Set<string>>();
  readonly #unknownAnswered = new Set<string>();

  protected handle(req: DeltaDiscoveryRequest): void {
    const typeUrl = req.type_url ?? '';
    this.trace('request', { type: typeUrl, nonce: req.response_nonce, subscribe: req.resource_names_subscribe, unsubscribe: req.resource_names_unsubscribe, nack: req.error_detail?.message });
    const kind = KIND_OF_TYPE.get(typeUrl);
    if (kind === undefined) {
      if (typeUrl !== '' && !this.#unknownAnswered.has(typeUrl)) {
        this.#unknownAnswered.add(typeUrl);
        this.call.write(encodeDeltaResponse({ systemVersionInfo: '0', resources: [], typeUrl, removed: [], nonce: this.nonce() }));
      }
      return;
    }
    const st = this.state(kind);
    const first = st.requests === 0;
    st.requests++;
    if (first) {
      for (const [name, version] of Object.entries(req.initial_resource_versions ?? {})) st.held.set(name, { version });
      st.mustAnswer = true;
    }
    const nonce = req.response_nonce ?? '';
    if (nonce !== '' && st.inFlight?.nonce === nonce) {
      const flight = st.inFlight;
      st.inFlight = undefined;
      const err = req.error_detail;
      if (err && (err.code || err.message)) {
        for (const name of this.blame([...flight.sent.keys()], err.message ?? '')) st.rejected.set(name, flight.sent.get(name)!.version);
        this.recordNack(kind, st, flight.version, err.message ?? `code ${err.code}`);
        st.dirty = true;
        st.rescan = true;
      } else {
        for (const [name, r] of flight.sent) st.held.set(name, r);
        for (const name of flight.removed) st.held.delete(name);
        st.ackedVersion = flight.version;
        st.nacked = undefined;
        this.released(kind);
      }
    }
    this.#subscribe(kind, st, req, first);
  }

  #subscribe(kind: ResourceKind, st: KindState, req: DeltaDiscoveryRequest, first: boolean): void {
    const subs = req.resource_names_subscribe ?? [];
    const unsubs = req.resource_names_unsubscribe ?? [];
    const wildcardKind = WILDCARD_KINDS.has(kind);
    if (first && wildcardKind && subs.length === 0) st.wildcard = true; // legacy wildcard
    const absent = this.#absent.get(kind);
    for (const n of subs) {
      if (n === '*') {
        if (wildcardKind) st.wildcard = true;
        continue;
      }
      st.explicit = true;
      st.names.add(n);
      absent?.delete(n);
      st.dirty = true;
    }
    for (const n of unsubs) {
      if (n === '*') st.wildcard = false;
      else st.names.delete(n);
      st.dirty = true;
    }
    if (unsubs.length > 0 && !st.wildcard) for (const n of [...st.held.keys()]) if (!st.names.has(n)) st.held.delete(n);
    if (subs.length > 0 || unsubs.length > 0) st.rescan = true;
  }

  protected respond(kind: ResourceKind, st: KindState, snap: Snapshot): void {
    const updates = new Map<string, Resource>();
    const removed: string[] = [];
    const consider = (r: Resource): void => {
      if (updates.has(r.name) || st.held.get(r.name)?.version === r.version) return;
      const rejected = st.rejected.get(r.name);
      if (rejected === r.version) return; // refused, and unchanged since
      if (rejected !== undefined) st.rejected.delete(r.name);
      updates.set(r.name, r);
    };
    const subscribed = (name: string) => st.wildcard || st.names.has(name);
    const gone = new Set<string>();
    for (const name of st.rescan || st.mustAnswer ? st.held.keys() : st.changed) if (st.held.has(name) && subscribed(name) && !snap.get(kind, name)) gone.add(name);
    const keep = kind === 'cluster' ? this.stillReferenced(gone) : new Map<string, Resource>();
    let absent = this.#absent.get(kind);
    if (st.rescan || st.mustAnswer) {
      if (st.wildcard) for (const r of snap.resources(kind)) consider(r);
      for (const name of st.names) {
        const r = snap.get(kind, name);
        if (r) consider(r);
        else if (!st.held.has(name) && !absent?.has(name)) {
          removed.push(name); // asked for, does not exist (yet): say so instead of letting the client time out
          if (!absent) this.#absent.set(kind, (absent = new Set()));
          absent.add(name);
        }
      }
      for (const name of gone) if (!keep.has(name)) removed.push(name);
    } else {
      // only what the changes since the last response touched
      for (const name of st.changed) {
        if (!subscribed(name)) continue;
        const r = snap.get(kind, name);
        if (r) consider(r);
        else if (gone.has(name) && !keep.has(name)) removed.push(name);
      }
    }
    st.changed = new Set();
    st.rescan = false;
    const answer = st.mustAnswer;
    st.dirty = false;
    st.mustAnswer = false;
    if (!answer && updates.size === 0 && removed.length === 0) return;
    const nonce = this.nonce();
    const version = snap.version(kind);
    st.inFlight = { nonce, version, sent: updates, removed };
    this.send(
      kind,
      encodeDeltaResponse({
        systemVersionInfo: version,
        resources: [...updates.values()].map((r) => ({ name: r.name, version: r.version, any: r.any })),
        typeUrl: TYPE_URLS[kind],
        removed,
        nonce,
      }),
      { nonce, version, count: updates.size, removed: removed.length },
    );
  }
}
