// The libbpf.so.1 (and libc) functions the loader uses, bound with koffi. libbpf 1.x reports
// failure as a negative errno or as NULL with errno set; `BpfError` carries the errno name.
import koffi from 'koffi';

const ERRNO_NAMES: Map<number, string> = new Map(
  Object.entries(koffi.os.errno as Record<string, number>).map(([name, n]) => [n, name]),
);

export class BpfError extends Error {
  /** Positive errno (EPERM = 1, ...); 0 when the failure is not an errno (library missing). */
  readonly errno: number;
  /** Errno name (ENOENT, EPERM, ...) or ELIBBPF when libbpf.so.1 could not be loaded. */
  readonly code: string;
  /** The libbpf call that failed. */
  readonly op: string;
  /** libbpf's warnings printed while the call ran (verifier log, reasons). */
  readonly log: string[];

  constructor(op: string, errno: number, detail?: string, log: string[] = []) {
    const code = errno === 0 ? 'ELIBBPF' : (ERRNO_NAMES.get(errno) ?? `E${errno}`);
    super(`${op} failed: ${code}${detail ? ` (${detail})` : ''}`);
    this.name = 'BpfError';
    this.errno = errno;
    this.code = code;
    this.op = op;
    this.log = log;
  }
}

export type Ptr = bigint;
export type LogLevel = 'warn' | 'info' | 'debug';
export type LogSink = (level: LogLevel, message: string) => void;

function bind() {
  const bpf = koffi.load('libbpf.so.1');
  const libc = koffi.load('libc.so.6');
  const printFn = koffi.proto('int isomesh_libbpf_print_fn(int level, const char *fmt, void *ap)');
  return {
    printFn,
    vsnprintf: libc.func('int vsnprintf(_Out_ uint8_t *buf, size_t n, const char *fmt, void *ap)'),
    close: libc.func('int close(int fd)'),
    mount: libc.func('int mount(const char *src, const char *target, const char *fstype, unsigned long flags, const void *data)'),
    setPrint: bpf.func('void *libbpf_set_print(isomesh_libbpf_print_fn *fn)'),
    numPossibleCpus: bpf.func('int libbpf_num_possible_cpus()'),
    objectOpenFile: bpf.func('void *bpf_object__open_file(const char *path, void *opts)'),
    objectLoad: bpf.func('int bpf_object__load(void *obj)'),
    objectClose: bpf.func('void bpf_object__close(void *obj)'),
    findProgram: bpf.func('void *bpf_object__find_program_by_name(void *obj, const char *name)'),
    findMap: bpf.func('void *bpf_object__find_map_by_name(void *obj, const char *name)'),
    programFd: bpf.func('int bpf_program__fd(void *prog)'),
    attachCgroup: bpf.func('void *bpf_program__attach_cgroup(void *prog, int cgroup_fd)'),
    mapFd: bpf.func('int bpf_map__fd(void *map)'),
    mapReuseFd: bpf.func('int bpf_map__reuse_fd(void *map, int fd)'),
    mapPin: bpf.func('int bpf_map__pin(void *map, const char *path)'),
    mapUnpin: bpf.func('int bpf_map__unpin(void *map, const char *path)'),
    mapKeySize: bpf.func('uint32_t bpf_map__key_size(void *map)'),
    mapValueSize: bpf.func('uint32_t bpf_map__value_size(void *map)'),
    linkOpen: bpf.func('void *bpf_link__open(const char *path)'),
    linkFd: bpf.func('int bpf_link__fd(void *link)'),
    linkPin: bpf.func('int bpf_link__pin(void *link, const char *path)'),
    linkUnpin: bpf.func('int bpf_link__unpin(void *link)'),
    linkDetach: bpf.func('int bpf_link__detach(void *link)'),
    linkDestroy: bpf.func('int bpf_link__destroy(void *link)'),
    linkUpdateProgram: bpf.func('int bpf_link__update_program(void *link, void *prog)'),
    objGet: bpf.func('int bpf_obj_get(const char *path)'),
    objGetInfoByFd: bpf.func('int bpf_obj_get_info_by_fd(int fd, _Inout_ uint8_t *info, _Inout_ uint32_t *len)'),
    progAttach: bpf.func('int bpf_prog_attach(int prog_fd, int target_fd, int type, unsigned int flags)'),
    progDetach2: bpf.func('int bpf_prog_detach2(int prog_fd, int target_fd, int type)'),
    progQuery: bpf.func(
      'int bpf_prog_query(int target_fd, int type, uint32_t query_flags, _Out_ uint32_t *attach_flags, _Out_ uint32_t *prog_ids, _Inout_ uint32_t *prog_cnt)',
    ),
    mapLookup: bpf.func('int bpf_map_lookup_elem(int fd, const uint8_t *key, _Out_ uint8_t *value)'),
    mapUpdate: bpf.func('int bpf_map_update_elem(int fd, const uint8_t *key, const uint8_t *value, uint64_t flags)'),
    mapDelete: bpf.func('int bpf_map_delete_elem(int fd, const uint8_t *key)'),
    mapNextKey: bpf.func('int bpf_map_get_next_key(int fd, const uint8_t *key, _Out_ uint8_t *next)'),
  };
}

type Libbpf = ReturnType<typeof bind>;
let bound: Libbpf | undefined;
let sink: LogSink | undefined;
/** Warnings libbpf printed during the current call, attached to a BpfError if it fails. */
let captured: string[] = [];

/** The bound library; throws BpfError ELIBBPF when libbpf.so.1 is not installed. */
export function libbpf(): Libbpf {
  if (bound) return bound;
  let lib: Libbpf;
  try {
    lib = bind();
  } catch (err) {
    throw new BpfError('load libbpf.so.1', 0, (err as Error).message);
  }
  // Route libbpf's printf-style log through vsnprintf into JS; debug chatter is dropped unless asked for.
  const levels: LogLevel[] = ['warn', 'info', 'debug'];
  const cb = koffi.register((level: number, fmt: string, ap: Ptr) => {
    const lvl = levels[level] ?? 'debug';
    if (lvl === 'debug' && !sink) return 0;
    const buf = Buffer.alloc(1024);
    const n = lib.vsnprintf(buf, buf.length, fmt, ap) as number;
    const msg = buf.toString('utf8', 0, Math.max(0, Math.min(n, buf.length - 1))).trimEnd();
    if (lvl === 'warn') captured.push(msg);
    sink?.(lvl, msg);
    return 0;
  }, koffi.pointer(lib.printFn));
  lib.setPrint(cb);
  bound = lib;
  return lib;
}

/** Sends libbpf's log to `fn` (undefined: keep warnings only for BpfError.log). */
export function setLibbpfLog(fn: LogSink | undefined): void {
  sink = fn;
}

/** Runs one libbpf call; a negative result (or NULL) becomes a BpfError with the errno name. */
export function call<T>(op: string, fn: () => T, detail?: string): NonNullable<T> {
  captured = [];
  const res = fn();
  if (res === null || (typeof res === 'number' && res < 0)) {
    // libbpf 1.x sets errno as well as returning -errno; libc returns -1 with errno set
    const errno = koffi.errno() || (typeof res === 'number' ? -res : 0);
    throw new BpfError(op, errno, detail, captured);
  }
  return res as NonNullable<T>;
}

export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `E${errno}`;
}

export function lastErrno(): number {
  return koffi.errno();
}
