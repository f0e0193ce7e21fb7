// FairScheduler: weighted fair queuing of isolate calls inside one cordon, by measured CPU.
// Each tenant has a FIFO queue and a virtual time; serving a call advances the tenant's virtual time
// by cpuMs / weight, and the next call always comes from the backlogged, idle tenant with the
// smallest virtual time. A tenant that floods its queue only lengthens its own queue (bounded): the
// others keep getting their weighted share. At most one call per tenant runs at a time (an isolate is
// single-threaded), so a busy tenant is skipped until its call completes — or until the call is
// released to wait for a host capability (complete() then, charge() when it settles).
// Pure bookkeeping (no isolates, no clock), so it is unit-testable with made-up costs.

interface TenantQueue<T> {
  tasks: T[];
  head: number;
  weight: number;
  /** Virtual finish time of the tenant's last served call. */
  vt: number;
  busy: boolean;
  /** Tie-break: the order of last service (round robin among equals). */
  servedAt: number;
}

/** CPU charged for a call that measured ~0 so a tenant of free calls still takes turns. */
const MIN_CHARGE_MS = 0.001;

export class FairScheduler<T> {
  readonly #queueLimit: number;
  readonly #tenants = new Map<string, TenantQueue<T>>();
  /** Tenants with queued work (busy or not). */
  readonly #backlogged = new Set<string>();
  #systemVt = 0;
  #served = 0;

  constructor(opts: { queueLimit: number }) {
    this.#queueLimit = opts.queueLimit;
  }

  setWeight(tenant: string, weight: number): void {
    this.#tenant(tenant).weight = weight > 0 ? weight : 1;
  }

  /** False when the tenant's queue is full (the caller sheds the call). */
  enqueue(tenant: string, task: T): boolean {
    const q = this.#tenant(tenant);
    if (q.tasks.length - q.head >= this.#queueLimit) return false;
    if (q.tasks.length === q.head && !q.busy) {
      // Becoming active: no credit for the time the tenant was idle.
      q.vt = Math.max(q.vt, this.#systemVt);
    }
    q.tasks.push(task);
    this.#backlogged.add(tenant);
    return true;
  }

  /**
   * Work of a call already admitted (it resumes after waiting for a capability): ahead of the
   * tenant's queue and never shed. False when the tenant is unknown (dropped).
   */
  enqueueFront(tenant: string, task: T): boolean {
    const q = this.#tenants.get(tenant);
    if (q === undefined) return false;
    if (q.tasks.length === q.head && !q.busy) q.vt = Math.max(q.vt, this.#systemVt);
    if (q.head > 0) q.tasks[--q.head] = task;
    else q.tasks.unshift(task);
    this.#backlogged.add(tenant);
    return true;
  }

  /** The next call to run, or undefined when every backlogged tenant is busy (or none is). */
  next(): { tenant: string; task: T } | undefined {
    let best: string | undefined;
    let bestQ: TenantQueue<T> | undefined;
    for (const name of this.#backlogged) {
      const q = this.#tenants.get(name) as TenantQueue<T>;
      if (q.busy) continue;
      if (bestQ === undefined || q.vt < bestQ.vt || (q.vt === bestQ.vt && q.servedAt < bestQ.servedAt)) {
        best = name;
        bestQ = q;
      }
    }
    if (best === undefined || bestQ === undefined) return undefined;
    const task = bestQ.tasks[bestQ.head] as T;
    bestQ.tasks[bestQ.head++] = undefined as T;
    if (bestQ.head === bestQ.tasks.length) {
      bestQ.tasks = [];
      bestQ.head = 0;
      this.#backlogged.delete(best);
    } else if (bestQ.head > 1024) {
      bestQ.tasks = bestQ.tasks.slice(bestQ.head);
      bestQ.head = 0;
    }
    bestQ.busy = true;
    bestQ.servedAt = ++this.#served;
    this.#systemVt = Math.max(this.#systemVt, bestQ.vt);
    return { tenant: best, task };
  }

  /** The tenant's running call finished having used `cpuMs` of CPU. */
  complete(tenant: string, cpuMs: number): void {
    const q = this.#tenants.get(tenant);
    if (q === undefined) return;
    q.busy = false;
    q.vt += Math.max(MIN_CHARGE_MS, cpuMs) / q.weight;
  }

  /** CPU of a call that finished after its tenant was released (complete() was called already). */
  charge(tenant: string, cpuMs: number): void {
    const q = this.#tenants.get(tenant);
    if (q !== undefined && cpuMs > 0) q.vt += cpuMs / q.weight;
  }

  queued(tenant: string): number {
    const q = this.#tenants.get(tenant);
    return q === undefined ? 0 : q.tasks.length - q.head;
  }

  virtualTime(tenant: string): number {
    return this.#tenants.get(tenant)?.vt ?? 0;
  }

  /** Forgets a tenant; returns the calls still queued so the caller can fail them. */
  drop(tenant: string): T[] {
    const q = this.#tenants.get(tenant);
    if (q === undefined) return [];
    this.#tenants.delete(tenant);
    this.#backlogged.delete(tenant);
    return q.tasks.slice(q.head);
  }

  #tenant(name: string): TenantQueue<T> {
    let q = this.#tenants.get(name);
    if (q === undefined) {
      q = { tasks: [], head: 0, weight: 1, vt: this.#systemVt, busy: false, servedAt: 0 };
      this.#tenants.set(name, q);
    }
    return q;
  }
}
