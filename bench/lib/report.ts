// Writes one benchmark's results: bench/results/<name>.json (raw numbers), <name>.md (tables,
// also printed to stdout) and <name>.svg (a small grouped bar chart README can embed).
import fs from 'node:fs';
import path from 'node:path';

// ISOMESH_BENCH_RESULTS: run.ts sends quick and partial runs to bench/results/scratch/.
export const RESULTS_DIR = process.env.ISOMESH_BENCH_RESULTS ?? path.resolve(import.meta.dirname, '../results');

export interface Table {
  title: string;
  columns: string[];
  rows: string[][];
  /** Lines printed under the table (goals, caveats). */
  notes?: string[];
}

export interface BarGroup {
  label: string;
  bars: Array<{ series: string; value: number }>;
}

export interface BarChart {
  title: string;
  unit: string;
  groups: BarGroup[];
  /** Optional dashed line, e.g. a goal. */
  goal?: { value: number; label: string };
}

export function markdownTable(t: Table): string {
  const head = `| ${t.columns.join(' | ')} |`;
  const sep = `|${t.columns.map((c, i) => (i === 0 ? ' --- ' : ' ---: ')).join('|')}|`;
  const body = t.rows.map((r) => `| ${r.join(' | ')} |`);
  const notes = (t.notes ?? []).map((n) => `\n${n}`).join('\n');
  return `#### ${t.title}\n\n${[head, sep, ...body].join('\n')}\n${notes}\n`;
}

const PALETTE = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#9c755f'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const e = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * e >= v) return m * e;
  return 10 * e;
}

/** A hand-written SVG grouped bar chart: one group per label, one colour per series. */
export function barChartSvg(c: BarChart): string {
  const series = [...new Set(c.groups.flatMap((g) => g.bars.map((b) => b.series)))];
  const barW = 16;
  const gap = 28;
  const left = 64;
  const top = 40;
  const plotH = 220;
  const groupW = series.length * barW + gap;
  const width = Math.max(480, left + c.groups.length * groupW + 20);
  const legendRows = Math.ceil(series.length / 3);
  const height = top + plotH + 50 + legendRows * 18;
  const max = niceMax(Math.max(c.goal?.value ?? 0, ...c.groups.flatMap((g) => g.bars.map((b) => (Number.isFinite(b.value) ? b.value : 0)))));
  const y = (v: number): number => top + plotH - (Math.max(0, v) / max) * plotH;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`);
  out.push(`<rect width="100%" height="100%" fill="#fff"/>`);
  out.push(`<text x="${width / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">${esc(c.title)}</text>`);
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    const yy = y(v);
    out.push(`<line x1="${left}" x2="${width - 10}" y1="${yy}" y2="${yy}" stroke="#ddd"/>`);
    out.push(`<text x="${left - 4}" y="${yy + 4}" text-anchor="end">${esc(formatTick(v))}</text>`);
  }
  out.push(`<text transform="translate(14 ${top + plotH / 2}) rotate(-90)" text-anchor="middle">${esc(c.unit)}</text>`);
  c.groups.forEach((g, gi) => {
    const x0 = left + gap / 2 + gi * groupW;
    for (const b of g.bars) {
      const si = series.indexOf(b.series);
      const v = Number.isFinite(b.value) ? b.value : 0;
      const x = x0 + si * barW;
      out.push(`<rect x="${x}" y="${y(v)}" width="${barW - 2}" height="${top + plotH - y(v)}" fill="${PALETTE[si % PALETTE.length]}"><title>${esc(`${g.label} / ${b.series}: ${b.value}`)}</title></rect>`);
    }
    out.push(`<text x="${x0 + (series.length * barW) / 2}" y="${top + plotH + 14}" text-anchor="middle">${esc(g.label)}</text>`);
  });
  if (c.goal !== undefined) {
    const gy = y(c.goal.value);
    out.push(`<line x1="${left}" x2="${width - 10}" y1="${gy}" y2="${gy}" stroke="#c00" stroke-dasharray="5 3"/>`);
    out.push(`<text x="${width - 12}" y="${gy - 3}" text-anchor="end" fill="#c00">${esc(c.goal.label)}</text>`);
  }
  series.forEach((s, si) => {
    const lx = left + (si % 3) * 180;
    const ly = top + plotH + 34 + Math.floor(si / 3) * 18;
    out.push(`<rect x="${lx}" y="${ly - 9}" width="10" height="10" fill="${PALETTE[si % PALETTE.length]}"/>`);
    out.push(`<text x="${lx + 14}" y="${ly}">${esc(s)}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

function formatTick(v: number): string {
  if (v >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
  if (v >= 1e4) return `${+(v / 1e3).toFixed(1)}k`;
  return `${+v.toFixed(2)}`;
}

export interface BenchReport {
  name: string;
  json: unknown;
  tables: Table[];
  chart: BarChart;
  /** Extra charts written as <name>-<suffix>.svg. */
  extraCharts?: Record<string, BarChart>;
}

/** Writes json/md/svg and prints the markdown; returns the markdown. */
export function writeReport(r: BenchReport): string {
  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  fs.writeFileSync(path.join(RESULTS_DIR, `${r.name}.json`), `${JSON.stringify(r.json, null, 2)}\n`);
  const md = r.tables.map(markdownTable).join('\n');
  fs.writeFileSync(path.join(RESULTS_DIR, `${r.name}.md`), md);
  fs.writeFileSync(path.join(RESULTS_DIR, `${r.name}.svg`), barChartSvg(r.chart));
  for (const [suffix, chart] of Object.entries(r.extraCharts ?? {})) {
    fs.writeFileSync(path.join(RESULTS_DIR, `${r.name}-${suffix}.svg`), barChartSvg(chart));
  }
  process.stdout.write(`\n${md}\n`);
  return md;
}

export interface HBarRow {
  label: string;
  /** Stacked segments, drawn left to right (e.g. user, then kernel). */
  segments: Array<{ name: string; value: number }>;
  /** Range of the total over repetitions, drawn as a whisker. */
  min?: number;
  max?: number;
  /** Text after the bar (default: the total). */
  note?: string;
}

export interface HBarChart {
  title: string;
  unit: string;
  rows: HBarRow[];
  goal?: { value: number; label: string };
  /** Bars longer than this are cut (their note still gives the real value). */
  clip?: number;
}

/** A hand-written SVG horizontal stacked bar chart with min–max whiskers. */
export function hbarChartSvg(c: HBarChart): string {
  const names = [...new Set(c.rows.flatMap((r) => r.segments.map((s) => s.name)))];
  const left = 300;
  const barH = 14;
  const rowH = 20;
  const top = 44;
  const plotW = 420;
  const width = left + plotW + 150;
  const height = top + c.rows.length * rowH + 40;
  const totals = c.rows.map((r) => r.segments.reduce((a, s) => a + (Number.isFinite(s.value) ? s.value : 0), 0));
  const rawMax = Math.max(c.goal?.value ?? 0, ...totals, ...c.rows.map((r) => r.max ?? 0));
  const max = niceMax(c.clip !== undefined ? Math.min(rawMax, c.clip) : rawMax);
  const x = (v: number): number => left + (Math.min(Math.max(0, v), max) / max) * plotW;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`);
  out.push('<rect width="100%" height="100%" fill="#fff"/>');
  out.push(`<text x="${width / 2}" y="16" text-anchor="middle" font-size="14" font-weight="bold">${esc(c.title)}</text>`);
  names.forEach((n, i) => {
    const lx = left + i * 120;
    out.push(`<rect x="${lx}" y="24" width="10" height="10" fill="${PALETTE[i % PALETTE.length]}"/><text x="${lx + 14}" y="33">${esc(n)}</text>`);
  });
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    out.push(`<line x1="${x(v)}" x2="${x(v)}" y1="${top - 4}" y2="${top + c.rows.length * rowH}" stroke="#ddd"/>`);
    out.push(`<text x="${x(v)}" y="${top + c.rows.length * rowH + 14}" text-anchor="middle">${esc(formatTick(v))}</text>`);
  }
  out.push(`<text x="${left + plotW / 2}" y="${height - 6}" text-anchor="middle">${esc(c.unit)}</text>`);
  c.rows.forEach((r, ri) => {
    const y = top + ri * rowH;
    out.push(`<text x="${left - 6}" y="${y + barH - 3}" text-anchor="end">${esc(r.label)}</text>`);
    let acc = 0;
    for (const s of r.segments) {
      const v = Number.isFinite(s.value) ? s.value : 0;
      const x0 = x(acc);
      acc += v;
      out.push(`<rect x="${x0}" y="${y}" width="${Math.max(0, x(acc) - x0)}" height="${barH}" fill="${PALETTE[names.indexOf(s.name) % PALETTE.length]}"><title>${esc(`${r.label} ${s.name}: ${v}`)}</title></rect>`);
    }
    if (r.min !== undefined && r.max !== undefined && r.max > r.min) {
      const cy = y + barH / 2;
      out.push(`<line x1="${x(r.min)}" x2="${x(r.max)}" y1="${cy}" y2="${cy}" stroke="#333"/><line x1="${x(r.min)}" x2="${x(r.min)}" y1="${cy - 4}" y2="${cy + 4}" stroke="#333"/><line x1="${x(r.max)}" x2="${x(r.max)}" y1="${cy - 4}" y2="${cy + 4}" stroke="#333"/>`);
    }
    const clipped = totals[ri]! > max;
    out.push(`<text x="${Math.max(x(totals[ri]!), x(r.max ?? 0)) + 4}" y="${y + barH - 3}">${esc(`${clipped ? '» ' : ''}${r.note ?? formatTick(totals[ri]!)}`)}</text>`);
  });
  if (c.goal !== undefined) {
    const gx = x(c.goal.value);
    out.push(`<line x1="${gx}" x2="${gx}" y1="${top - 6}" y2="${top + c.rows.length * rowH}" stroke="#c00" stroke-dasharray="5 3"/>`);
    out.push(`<text x="${gx + 3}" y="${top - 8}" fill="#c00">${esc(c.goal.label)}</text>`);
  }
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
