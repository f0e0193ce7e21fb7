// A private little network for datapath tests: a "node" and a "pod" network namespace joined by
// a veth pair, with addresses that exist only inside them (neither has a route to the host), a
// test cgroup tree, and helpers to run processes inside (nsenter --net, never `ip netns exec`,
// which remounts /sys and hides bpffs and cgroup2). Everything is torn down by PID and name.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { cgroup2Mount } from '../../bpf/loader/index.ts';

const FIXTURES = path.join(import.meta.dirname, 'fixtures');

export const NODE_IP = '10.231.0.1';
export const POD_IP = '10.231.0.2';
export const NODE_IP6 = 'fd00:231::1';
export const POD_IP6 = 'fd00:231::2';
/** The upstream netns (addUpstream) hangs off the node by its own veth. */
export const NODE_UP_IP = '10.232.0.1';
export const UP_IP = '10.232.0.2';

/** Why these tests cannot run here, or false. Under CI=true a skip is a failure. */
export function privileged(): string | false {
  let reason: string | false = false;
  if (process.getuid?.() !== 0) reason = 'needs root for netns, cgroups and eBPF';
  else if (!cgroup2Mount()) reason = 'cgroup v2 is not mounted';
  else {
    try {
      execFileSync('ip', ['-V'], { stdio: 'ignore' });
      execFileSync('nsenter', ['--version'], { stdio: 'ignore' });
    } catch {
      reason = 'needs iproute2 and nsenter';
    }
  }
  if (reason && process.env.CI === 'true') throw new Error(`CI=true but datapath tests cannot run: ${reason}`);
  return reason;
}

export interface Spawned {
  child: ChildProcess;
  /** Next JSON line from stdout (rejects after timeoutMs). */
  next(timeoutMs?: number): Promise<Record<string, unknown>>;
}

export class TestNet {
  readonly id = randomBytes(3).toString('hex');
  readonly nodeNs = `imt-${this.id}-node`;
  readonly podNs = `imt-${this.id}-pod`;
  readonly upNs = `imt-${this.id}-up`;
  readonly cgroupRoot: string;
  readonly pinDir = `/sys/fs/bpf/isomesh-test-${this.id}`;
  readonly #children = new Set<ChildProcess>();
  readonly #cgroups: string[] = [];

  constructor() {
    this.cgroupRoot = path.join(cgroup2Mount()!, `isomesh-test-${this.id}`);
  }

  setup(): void {
    const ip = (...a: string[]) => execFileSync('ip', a, { stdio: 'pipe' });
    const inNs = (ns: string, ...a: string[]) => execFileSync('nsenter', [`--net=/run/netns/${ns}`, 'ip', ...a], { stdio: 'pipe' });
    addNetns(this.nodeNs);
    addNetns(this.podNs);
    ip('link', 'add', `imn${this.id}`, 'netns', this.nodeNs, 'type', 'veth', 'peer', 'name', `imp${this.id}`, 'netns', this.podNs);
    for (const [ns, dev, v4, v6] of [[this.nodeNs, `imn${this.id}`, NODE_IP, NODE_IP6], [this.podNs, `imp${this.id}`, POD_IP, POD_IP6]] as const) {
      inNs(ns, 'link', 'set', 'lo', 'up');
      inNs(ns, 'addr', 'add', `${v4}/24`, 'dev', dev);
      inNs(ns, '-6', 'addr', 'add', `${v6}/64`, 'dev', dev, 'nodad');
      inNs(ns, 'link', 'set', dev, 'up');
    }
    // VIP ranges are routed to the node netns, where nothing owns them: an unredirected connect
    // sends a SYN that dies there instead of failing locally (and never leaves these namespaces)
    inNs(this.podNs, 'route', 'add', '10.96.0.0/16', 'via', NODE_IP);
    inNs(this.podNs, '-6', 'route', 'add', 'fd00:96::/64', 'via', NODE_IP6);
    fs.mkdirSync(this.cgroupRoot);
  }

  /** A third netns for upstream services, reachable from the node netns only. */
  addUpstream(): void {
    const inNs = (ns: string, ...a: string[]) => execFileSync('nsenter', [`--net=/run/netns/${ns}`, 'ip', ...a], { stdio: 'pipe' });
    addNetns(this.upNs);
    execFileSync('ip', ['link', 'add', `imu${this.id}`, 'netns', this.nodeNs, 'type', 'veth', 'peer', 'name', `imx${this.id}`, 'netns', this.upNs], { stdio: 'pipe' });
    for (const [ns, dev, v4] of [[this.nodeNs, `imu${this.id}`, NODE_UP_IP], [this.upNs, `imx${this.id}`, UP_IP]] as const) {
      inNs(ns, 'link', 'set', 'lo', 'up');
      inNs(ns, 'addr', 'add', `${v4}/24`, 'dev', dev);
      inNs(ns, 'link', 'set', dev, 'up');
    }
  }

  /** Runs a command in a namespace (optionally inside a cgroup) to completion, bounded in time. */
  exec(ns: string, argv: string[], opts: { cgroup?: string; input?: string; timeoutMs?: number } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const join = opts.cgroup ? `echo $$ > '${opts.cgroup}/cgroup.procs' && ` : '';
    // stdin is a pipe only when there is input to give. A command that exits before reading it (curl
    // failing fast while the daemon starts) closes the pipe: the write then fails with EPIPE, which is
    // the command's business (its exit code tells), not an uncaught error of the test process
    // (regression: issue 7 #10, "write EPIPE" from TestNet.exec under NodeDaemon.start).
    const withInput = opts.input !== undefined;
    const child = spawn('nsenter', [`--net=/run/netns/${ns}`, '--', 'sh', '-c', `${join}exec "$0" "$@"`, ...argv], {
      stdio: [withInput ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    });
    this.#children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    if (withInput) {
      child.stdin!.on('error', (err: NodeJS.ErrnoException) => {
        stderr += `[stdin: ${err.code ?? err.message}]`;
      });
      child.stdin!.end(opts.input);
    }
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    return new Promise((resolve) => child.once('exit', (code) => {
      clearTimeout(timer);
      this.#children.delete(child);
      resolve({ code, stdout, stderr });
    }));
  }

  /** Starts a long-running process in a namespace; killed by PID at teardown if still running. */
  spawnIn(ns: string, argv: string[], env: NodeJS.ProcessEnv): ChildProcess {
    const child = spawn('nsenter', [`--net=/run/netns/${ns}`, '--', ...argv], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.#children.add(child);
    child.on('exit', () => this.#children.delete(child));
    return child;
  }

  cgroup(name: string): string {
    const dir = path.join(this.cgroupRoot, name);
    fs.mkdirSync(dir);
    this.#cgroups.push(dir);
    return dir;
  }

  /** Runs a fixture script under node in a namespace, optionally moved into a cgroup first. */
  run(ns: string, script: 'server.ts' | 'client.ts' | 'echo.ts' | 'http-client.ts', args: string[], cgroup?: string): Spawned {
    const join = cgroup ? `echo $$ > '${cgroup}/cgroup.procs' && ` : '';
    const child = spawn('nsenter', [`--net=/run/netns/${ns}`, '--', 'sh', '-c', `${join}exec "$0" "$@"`,
      process.execPath, path.join(FIXTURES, script), ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
    // Its stdin is how the test releases it; a fixture that already exited makes that write EPIPE,
    // which must not become an uncaught error of the test process (issue 7 #10).
    child.stdin!.on('error', () => {});
    this.#children.add(child);
    child.on('exit', () => this.#children.delete(child));
    const rl = readline.createInterface({ input: child.stdout! });
    const queue: string[] = [];
    const waiting: Array<(l: string) => void> = [];
    rl.on('line', (l) => { const w = waiting.shift(); if (w) w(l); else queue.push(l); });
    const next = (timeoutMs = 10_000) => new Promise<Record<string, unknown>>((resolve, reject) => {
      const got = (l: string) => { clearTimeout(timer); resolve(JSON.parse(l)); };
      const timer = setTimeout(() => { waiting.splice(waiting.indexOf(got), 1); reject(new Error(`${script} said nothing in ${timeoutMs} ms`)); }, timeoutMs);
      if (queue.length) got(queue.shift()!); else waiting.push(got);
    });
    return { child, next };
  }

  async server(tenant: string, cgroup?: string): Promise<{ port: number }> {
    const s = this.run(this.nodeNs, 'server.ts', [tenant], cgroup);
    return { port: (await s.next()).port as number };
  }

  /** Runs a client to completion (whoami clients are released right after their report). */
  async client(args: { host: string; port: number; mode: string; count?: number; timeoutMs?: number }, opts: { cgroup?: string; ns?: string; onWhoami?: (r: Record<string, unknown>) => void } = {}): Promise<Array<Record<string, unknown>>> {
    const c = this.run(opts.ns ?? this.podNs, 'client.ts', [JSON.stringify(args)], opts.cgroup);
    const events: Array<Record<string, unknown>> = [];
    const exited = new Promise((r) => c.child.once('exit', r));
    for (let i = 0; i < 3; i++) {
      const e = await c.next(30_000);
      events.push(e);
      if (e.event === 'whoami') {
        opts.onWhoami?.(e);
        c.child.stdin!.end('bye\n');
      }
      if (e.event !== 'connected' && e.event !== undefined) break;
    }
    await exited;
    return events;
  }

  /** Kills our processes by PID, then removes cgroups and namespaces. Never throws. */
  async teardown(): Promise<void> {
    const exits = [...this.#children].map((c) => new Promise((r) => { c.once('exit', r); c.kill('SIGKILL'); }));
    await Promise.race([Promise.all(exits), new Promise((r) => setTimeout(r, 3000))]);
    for (const dir of [...this.#cgroups].reverse()) tryRun(() => fs.rmdirSync(dir));
    tryRun(() => fs.rmdirSync(this.cgroupRoot));
    for (const ns of [this.podNs, this.upNs, this.nodeNs]) tryRun(() => execFileSync('ip', ['netns', 'del', ns], { stdio: 'pipe' }));
    tryRun(() => fs.rmSync(this.pinDir, { recursive: true, force: true }));
  }
}

/**
 * `ip netns add` serialised across processes: the first one on a machine bind-mounts /run/netns over
 * itself, and two racing test files can hide each other's namespace file under that mount
 * ("nsenter: cannot open /run/netns/…"). flock (util-linux) makes the calls take turns.
 */
function addNetns(name: string): void {
  fs.mkdirSync('/run/lock', { recursive: true });
  execFileSync('flock', ['/run/lock/isomesh-test-netns.lock', 'ip', 'netns', 'add', name], { stdio: 'pipe' });
  if (!fs.existsSync(`/run/netns/${name}`)) throw new Error(`netns ${name} was created but /run/netns/${name} is not visible`);
}

function tryRun(fn: () => void): void {
  try { fn(); } catch { /* best effort: keep cleaning */ }
}

/** Program names attached to a cgroup, as bpftool sees them. */
export function bpftoolCgroup(dir: string): Array<{ id: number; attach_type: string; name: string }> {
  return JSON.parse(execFileSync('bpftool', ['-j', 'cgroup', 'show', dir], { encoding: 'utf8' }).trim() || '[]');
}

export function programExists(id: number): boolean {
  try {
    execFileSync('bpftool', ['prog', 'show', 'id', String(id)], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
