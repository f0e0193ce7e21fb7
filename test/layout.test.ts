// The dependency directions of DESIGN.md, checked on the source text:
//   sdk/ imports nothing from the repo; bpf/ never imports runtime/; a runtime component reaches
//   another only through its index.ts (plus the shared model, errors and host contract).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { ROOT } from './support/daemon.ts';

function* tsFiles(dir: string): Generator<string> {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (e.name === 'node_modules' || e.name.startsWith('.')) continue;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) yield* tsFiles(p);
    else if (e.name.endsWith('.ts')) yield p;
  }
}

function relativeImports(file: string): string[] {
  const src = fs.readFileSync(file, 'utf8');
  const out: string[] = [];
  for (const m of src.matchAll(/(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g)) {
    const spec = m[1] ?? m[2]!;
    if (spec.startsWith('.')) out.push(path.resolve(path.dirname(file), spec));
  }
  return out;
}

test('sdk/ imports nothing from the rest of the repo', () => {
  const sdk = path.join(ROOT, 'sdk');
  let files = 0;
  for (const f of tsFiles(sdk)) {
    files++;
    for (const target of relativeImports(f)) {
      assert.ok(target.startsWith(sdk + path.sep), `${path.relative(ROOT, f)} imports ${path.relative(ROOT, target)}`);
    }
  }
  assert.ok(files > 10, 'the sdk sources were scanned');
});

test('bpf/ never imports runtime/', () => {
  const runtime = path.join(ROOT, 'runtime');
  let files = 0;
  for (const f of tsFiles(path.join(ROOT, 'bpf'))) {
    files++;
    for (const target of relativeImports(f)) assert.ok(!target.startsWith(runtime + path.sep), `${path.relative(ROOT, f)} imports ${path.relative(ROOT, target)}`);
  }
  assert.ok(files > 2);
});

test('runtime components reach each other only through index.ts and the shared contracts', () => {
  const src = path.join(ROOT, 'runtime/src');
  const shared = new Set(['store/model.ts', 'host/contract.ts']);
  const components = fs.readdirSync(src, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
  assert.deepEqual(['admin', 'datapath', 'host', 'proxy', 'store'].filter((c) => !components.includes(c)), []);
  for (const f of tsFiles(src)) {
    const rel = path.relative(src, f);
    const own = rel.includes(path.sep) ? rel.split(path.sep)[0] : undefined;
    for (const target of relativeImports(f)) {
      const t = path.relative(src, target);
      if (t.startsWith('..') || !t.includes(path.sep)) continue; // top-level runtime files (errors.ts, config.ts)
      const comp = t.split(path.sep)[0];
      if (comp === own) continue;
      const inner = t.slice(comp!.length + 1);
      assert.ok(inner === 'index.ts' || shared.has(t), `${rel} reaches into ${t}; import ${comp}/index.ts instead`);
    }
  }
});
