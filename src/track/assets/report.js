/* report.js — draws the dspy.c run report from the JSON embedded in the page
 * (<script id="dspy-report-data">, built by src/track/report_model.c) as inline SVG.
 * No network access: the page's Content-Security-Policy allows nothing but this script and its
 * style. Every chart is an <svg data-chart="NAME"> whose data points are elements of class
 * "pt" (line charts), "bar" (bar charts) or "cell" (the confusion matrix, data-count = count),
 * so that a test can count what was drawn.
 */
'use strict';
(function () {
  const SVGNS = 'http://www.w3.org/2000/svg';
  const RAW = ['#2563eb', '#ea580c']; /* run A, run B (as --run0 and --run1 in the style) */
  const data = JSON.parse(document.getElementById('dspy-report-data').textContent);
  const runs = data.runs;
  const app = document.getElementById('app');

  function h(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined) continue;
      if (k === 'class') e.className = v; else if (k === 'text') e.textContent = v; else e.setAttribute(k, v);
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k);
    return e;
  }
  function s(tag, attrs, ...kids) {
    const e = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined) continue;
      if (k === 'text') e.textContent = v; else e.setAttribute(k, v);
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k);
    return e;
  }
  function tip(text) { return s('title', { text: text }); }
  function fmt(x, digits) {
    if (x === null || x === undefined || Number.isNaN(x)) return '–';
    if (typeof x !== 'number') return String(x);
    const a = Math.abs(x);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return x.toExponential(2);
    return String(Number(x.toFixed(digits === undefined ? (a >= 100 ? 1 : a >= 1 ? 3 : 4) : digits)));
  }
  function when(ms) { return ms ? new Date(ms).toLocaleString() : '–'; }
  function dur(r) {
    if (!r.start_time || !r.end_time) return '–';
    const t = (r.end_time - r.start_time) / 1000;
    return t < 120 ? t.toFixed(1) + ' s' : (t / 60).toFixed(1) + ' min';
  }
  function runLabel(r, i) { return (runs.length > 1 ? (i === 0 ? 'A: ' : 'B: ') : '') + r.name; }
  function legend(parent) {
    if (runs.length < 2) return;
    const p = h('p', { class: 'note' });
    runs.forEach((r, i) => p.append(h('span', { class: 'swatch', style: 'background:' + RAW[i] }), runLabel(r, i), '  '));
    parent.append(p);
  }

  /* "nice" ticks covering [lo, hi] */
  function ticks(lo, hi, n, integer) {
    if (!(hi > lo)) { const d = integer ? 1 : Math.abs(lo) > 0 ? Math.abs(lo) * 0.1 : 1; lo -= d; hi += d; }
    const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    let step = [1, 2, 5, 10].map((m) => m * mag).find((st) => st >= raw) || raw;
    if (integer) step = Math.max(1, Math.round(step));
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    return { lo: Math.min(lo, out[0]), hi: Math.max(hi, out[out.length - 1]), ticks: out };
  }

  /* A line chart of series [{name, color, points: [[x, y|null], ...]}]. */
  function lineChart(name, title, xlabel, series) {
    const W = 560, H = 260, L = 64, R = 12, T = 12, B = 40;
    const pts = series.flatMap((se) => se.points.filter((p) => p[1] !== null));
    const xs = ticks(Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0])), 6, true);
    const ys = ticks(Math.min(...pts.map((p) => p[1])), Math.max(...pts.map((p) => p[1])), 5);
    const X = (x) => L + (x - xs.lo) / (xs.hi - xs.lo) * (W - L - R);
    const Y = (y) => T + (1 - (y - ys.lo) / (ys.hi - ys.lo)) * (H - T - B);
    const g = s('svg', { viewBox: `0 0 ${W} ${H}`, 'data-chart': name, role: 'img', 'aria-label': title });
    const grid = s('g', { class: 'grid' }), axis = s('g', { class: 'axis' });
    for (const v of ys.ticks) {
      grid.append(s('line', { x1: L, x2: W - R, y1: Y(v), y2: Y(v) }));
      axis.append(s('text', { class: 'tick', x: L - 6, y: Y(v) + 3, 'text-anchor': 'end', text: fmt(v) }));
    }
    for (const v of xs.ticks) axis.append(s('text', { class: 'tick', x: X(v), y: H - B + 14, 'text-anchor': 'middle', text: fmt(v, 0) }));
    axis.append(s('line', { x1: L, x2: W - R, y1: H - B, y2: H - B }), s('line', { x1: L, x2: L, y1: T, y2: H - B }));
    axis.append(s('text', { class: 'tick', x: (L + W - R) / 2, y: H - 6, 'text-anchor': 'middle', text: xlabel }));
    g.append(grid, axis);
    series.forEach((se) => {
      let d = '', pen = false;
      for (const [x, y] of se.points) {
        if (y === null) { pen = false; continue; }
        d += (pen ? 'L' : 'M') + X(x).toFixed(1) + ' ' + Y(y).toFixed(1);
        pen = true;
      }
      g.append(s('path', { d: d, fill: 'none', stroke: se.color, 'stroke-width': 1.5 }));
      const dots = s('g', { fill: se.color });
      for (const [x, y] of se.points) {
        if (y === null) continue;
        dots.append(s('circle', { class: 'pt', cx: X(x).toFixed(1), cy: Y(y).toFixed(1), r: se.points.length > 300 ? 1.2 : 2.4 },
          tip(`${se.name}: ${xlabel} ${x}: ${fmt(y)}`)));
      }
      g.append(dots);
    });
    return h('div', { class: 'chart' }, h('p', { class: 'title', text: title }), g);
  }

  /* Horizontal grouped bars: groups [{label, values: [v|null per run], notes: [text per run]}], max = 100. */
  function barChart(name, title, groups, unit) {
    const longest = Math.max(...groups.map((g) => g.label.length));
    const L = Math.min(330, Math.max(120, 14 + 6.4 * longest)), W = L + 380, R = 56, rowH = runs.length > 1 ? 24 : 18, T = 8, B = 26;
    const H = T + B + groups.length * rowH;
    const X = (v) => L + (v / 100) * (W - L - R);
    const g = s('svg', { viewBox: `0 0 ${W} ${H}`, 'data-chart': name, role: 'img', 'aria-label': title });
    const grid = s('g', { class: 'grid' }), axis = s('g', { class: 'axis' });
    for (const v of [0, 25, 50, 75, 100]) {
      grid.append(s('line', { x1: X(v), x2: X(v), y1: T, y2: H - B }));
      axis.append(s('text', { class: 'tick', x: X(v), y: H - B + 14, 'text-anchor': 'middle', text: v + unit }));
    }
    g.append(grid, axis);
    const bh = (rowH - 6) / runs.length;
    groups.forEach((gr, i) => {
      const y0 = T + i * rowH + 3;
      g.append(s('text', { x: L - 6, y: y0 + (rowH - 6) / 2 + 4, 'text-anchor': 'end', 'font-size': 11, text: gr.label },
        tip(gr.label)));
      gr.values.forEach((v, k) => {
        const y = y0 + k * bh;
        if (v === null || v === undefined) {
          g.append(s('text', { x: L + 4, y: y + bh - 2, 'font-size': 10, class: 'tick', text: gr.missing || 'not measured' }));
          return;
        }
        g.append(s('rect', { class: 'bar', x: L, y: y, width: Math.max(0.5, X(v) - L), height: bh - 1, fill: RAW[k] },
          tip(`${runs.length > 1 ? runLabel(runs[k], k) + ': ' : ''}${gr.label}: ${fmt(v, 1)}${unit}${gr.notes && gr.notes[k] ? ' (' + gr.notes[k] + ')' : ''}`)));
        g.append(s('text', { x: X(v) + 4, y: y + bh - 2, 'font-size': 10, text: fmt(v, 1) + unit }));
      });
    });
    return h('div', { class: 'chart wide' }, h('p', { class: 'title', text: title }), g);
  }

  function header() {
    const r0 = runs[0];
    app.append(h('h1', { text: 'dspy report: ' + runs.map((r) => r.name).join('  vs  ') }));
    runs.forEach((r, i) => {
      const p = h('p', { class: 'sub' });
      if (runs.length > 1) p.append(h('span', { class: 'swatch', style: 'background:' + RAW[i] }));
      p.append(`${runLabel(r, i)} — dspy ${r.kind}, ${r.status === 'RUNNING' && r.alive === false ? 'DIED' : r.status}, ` +
        `started ${when(r.start_time)}, ${dur(r)}${r.id ? ', id ' + r.id : ''}`);
      app.append(p);
      if (r.error) app.append(h('p', { class: 'warn', text: 'error: ' + r.error }));
      const t = r.tags || {};
      if (t['dspy.teacher_is_stand_in'] === 'true')
        app.append(h('p', { class: 'note', text: `teacher ${t['dspy.teacher'] || ''} is a stand-in (it answers with the gold label); it is not a language model.` }));
    });
    app.append(h('p', { class: 'note', text: 'Run directory: ' + runs.map((r) => r.dir).join('  |  ') + (r0.mlflow && r0.mlflow.run_id ? `  ·  MLflow run ${r0.mlflow.run_id} at ${r0.mlflow.tracking_uri}` : '') }));
  }

  function summary() {
    app.append(h('h2', { id: 'summary', text: 'Summary' }));
    const wrap = h('div', { class: 'runs', style: '--n:' + runs.length });
    runs.forEach((r, i) => {
      const m = r.metrics || {};
      const cards = h('div', { class: 'cards' });
      const card = (k, v) => cards.append(h('div', { class: 'card' }, h('div', { class: 'v', text: v }), h('div', { class: 'k', text: k })));
      if (m.eval_score !== undefined) card('accuracy (devset)', fmt(m.eval_score, 1) + ' %');
      if (r.eval) card('examples evaluated', String(r.eval.n));
      if (m.train_first_loss !== undefined && m.train_final_loss !== undefined) card('train loss', fmt(m.train_first_loss) + ' → ' + fmt(m.train_final_loss));
      else if (m.train_final_loss !== undefined) card('final train loss', fmt(m.train_final_loss));
      if (m.train_steps !== undefined) card('optimizer steps', fmt(m.train_steps, 0));
      if (m.train_tokens_per_s !== undefined) card('tokens/s (mean)', fmt(m.train_tokens_per_s, 0));
      else if (m.train_tokens !== undefined && m.train_seconds) card('tokens/s', fmt(m.train_tokens / m.train_seconds, 0));
      if (m.bootstrap_traces !== undefined) card('teacher traces', fmt(m.bootstrap_traces, 0));
      card('wall time', dur(r));
      wrap.append(h('div', {}, runs.length > 1 ? h('h3', {}, h('span', { class: 'swatch', style: 'background:' + RAW[i] }), runLabel(r, i)) : null, cards));
    });
    app.append(wrap);
  }

  function accuracy() {
    app.append(h('h2', { id: 'accuracy', text: 'Accuracy: untrained student, teacher, fine-tuned student' }));
    legend(app);
    const names = [];
    runs.forEach((r) => (r.accuracy || []).forEach((a) => { if (!names.includes(a.name)) names.push(a.name); }));
    const groups = names.map((n) => ({
      label: n,
      values: runs.map((r) => { const a = (r.accuracy || []).find((x) => x.name === n); return a && a.score !== null ? a.score : null; }),
      notes: runs.map((r) => { const a = (r.accuracy || []).find((x) => x.name === n); return a && a.n ? a.n + ' examples' : ''; }),
      missing: n === 'fine-tuned student' || n === 'evaluated program' ? 'not evaluated' : 'not measured (dspy compile --baselines)',
    }));
    app.append(h('div', {}, barChart('accuracy', 'Exact-match accuracy on the devset', groups, '%')));
  }

  function curves() {
    app.append(h('h2', { id: 'training', text: 'Training' }));
    const defs = [['loss', 'Loss (assistant tokens)'], ['learning_rate', 'Learning rate'], ['grad_norm', 'Gradient norm (before clipping)'], ['tokens_per_s', 'Throughput (tokens/s)']];
    const box = h('div', { class: 'charts' });
    let any = false;
    for (const [key, title] of defs) {
      const series = runs.map((r, i) => ({ name: runLabel(r, i), color: RAW[i], points: (r.curves && r.curves[key]) || [] }))
        .filter((se) => se.points.some((p) => p[1] !== null));
      if (!series.length) continue;
      any = true;
      box.append(lineChart(key, title, 'step', series));
    }
    if (!any) { app.append(h('p', { class: 'note', text: 'No training steps in ' + (runs.length > 1 ? 'these runs.' : 'this run.') })); return; }
    legend(app);
    app.append(box);
  }

  function perClass() {
    const evals = runs.map((r) => r.eval);
    if (!evals.some((e) => e)) return;
    app.append(h('h2', { id: 'per-class', text: 'Per-class accuracy (worst first)' }));
    legend(app);
    const first = evals.find((e) => e);
    const labels = first.per_class.map((c) => c.label);
    evals.forEach((e) => e && e.per_class.forEach((c) => { if (!labels.includes(c.label)) labels.push(c.label); }));
    const groups = labels.map((l) => ({
      label: l,
      values: evals.map((e) => { const c = e && e.per_class.find((x) => x.label === l); return c ? 100 * c.correct / c.n : null; }),
      notes: evals.map((e) => { const c = e && e.per_class.find((x) => x.label === l); return c ? `${c.correct}/${c.n}` : ''; }),
      missing: 'not in this devset',
    }));
    app.append(h('div', {}, barChart('per_class', `Accuracy per gold label (${labels.length} classes)`, groups, '%')));
  }

  function matrix(r, i) {
    const e = r.eval, cm = e.confusion, R = cm.rows.length, C = cm.cols.length;
    /* cells of at least 11 px (77 classes: an 850 px square, to scroll and zoom); margins that fit
     * the longest label at the label size */
    const cs = Math.max(11, Math.min(28, Math.floor(860 / Math.max(R, C))));
    const fs0 = Math.max(5, Math.min(11, cs - 2)), chars = Math.max(...cm.rows.concat(cm.cols).map((l) => l.length));
    const L = 12 + 0.62 * fs0 * chars, T = 12 + 0.62 * fs0 * chars * 0.87 + fs0;
    const W = L + C * cs + 0.55 * (T - 12) + 8, H = T + R * cs + 8; /* room for the last rotated labels */
    const colIndex = new Map(cm.cols.map((c, k) => [c, k]));
    let max = 1;
    for (const [, , n] of cm.cells) max = Math.max(max, n);
    const g = s('svg', { viewBox: `0 0 ${W} ${H}`, 'data-chart': 'confusion-' + i, width: W, height: H, role: 'img', 'aria-label': 'confusion matrix' });
    const fs = fs0;
    cm.rows.forEach((lab, k) => g.append(s('text', { x: L - 4, y: T + k * cs + cs / 2 + fs / 3, 'text-anchor': 'end', 'font-size': fs, text: lab }, tip('gold: ' + lab))));
    cm.cols.forEach((lab, k) => {
      const x = L + k * cs + cs / 2 + fs / 3;
      g.append(s('text', { x: x, y: T - 4, transform: `rotate(-60 ${x} ${T - 4})`, 'font-size': fs, text: lab }, tip('predicted: ' + lab)));
    });
    g.append(s('rect', { x: L, y: T, width: C * cs, height: R * cs, fill: 'none', stroke: '#d0d7de' }));
    for (let k = 0; k < Math.min(R, C); k++) {
      const c = colIndex.get(cm.rows[k]);
      if (c !== undefined) g.append(s('rect', { x: L + c * cs, y: T + k * cs, width: cs, height: cs, fill: '#f6f8fa' }));
    }
    for (const [row, col, n] of cm.cells) {
      const gold = cm.rows[row], pred = cm.cols[col], diag = gold === pred, none = pred === '(no answer)';
      const a = 0.25 + 0.75 * n / max;
      const fill = diag ? `rgba(26,127,55,${a})` : none ? `rgba(101,109,118,${a})` : `rgba(207,34,46,${a})`;
      g.append(s('rect', { class: 'cell', x: L + col * cs, y: T + row * cs, width: cs, height: cs, fill: fill, 'data-count': n, 'data-row': row, 'data-col': col },
        tip(`${gold} → ${pred}: ${n}`)));
      if (cs >= 10) g.append(s('text', { x: L + col * cs + cs / 2, y: T + row * cs + cs / 2 + fs / 3, 'text-anchor': 'middle', 'font-size': fs, 'pointer-events': 'none', text: n }));
    }
    const wrap = h('div', { class: 'cm-wrap' }, g);
    let zoom = 1;
    const apply = () => { g.setAttribute('width', Math.round(W * zoom)); g.setAttribute('height', Math.round(H * zoom)); zl.textContent = Math.round(zoom * 100) + ' %'; };
    const zl = h('span', { class: 'note' });
    const btn = (label, id, f) => { const b = h('button', { type: 'button', id: id, text: label }); b.addEventListener('click', () => { zoom = f(zoom); apply(); }); return b; };
    const tools = h('div', { class: 'cm-tools' }, btn('−', `cm${i}-zoom-out`, (z) => Math.max(0.5, z / 1.5)), btn('+', `cm${i}-zoom-in`, (z) => Math.min(8, z * 1.5)),
      btn('fit', `cm${i}-zoom-fit`, () => 1), zl, h('span', { class: 'note', text: `${R} gold × ${C} predicted labels; hover a cell for its count` }));
    apply();
    const top = h('table', {}, h('tr', {}, h('th', { text: 'gold' }), h('th', { text: 'predicted' }), h('th', { text: 'count' })));
    for (const t of e.top_confusions) top.append(h('tr', {}, h('td', { text: t.gold }), h('td', { text: t.pred }), h('td', { class: 'num', text: String(t.count) })));
    return h('div', {}, runs.length > 1 ? h('h3', {}, h('span', { class: 'swatch', style: 'background:' + RAW[i] }), runLabel(r, i)) : null,
      h('p', { class: 'note', text: `${e.n} examples: ${e.correct} correct, ${e.n - e.correct - e.no_answer} wrong label, ${e.no_answer} without an answer` }),
      tools, wrap, h('h3', { text: 'Top confusions' }), e.top_confusions.length ? top : h('p', { class: 'note', text: 'none' }));
  }

  function confusion() {
    if (!runs.some((r) => r.eval)) return;
    app.append(h('h2', { id: 'confusion', text: 'Confusion matrix (rows: gold label, columns: predicted label)' }));
    const wrap = h('div', { class: 'runs', style: '--n:' + runs.length });
    runs.forEach((r, i) => wrap.append(r.eval ? matrix(r, i) : h('p', { class: 'note', text: runLabel(r, i) + ': no evaluation' })));
    app.append(wrap);
  }

  function failed() {
    if (!runs.some((r) => r.eval)) return;
    app.append(h('h2', { id: 'failed', text: 'Failed examples (prompt and answer, as inspect_history shows them)' }));
    const wrap = h('div', { class: 'runs', style: '--n:' + runs.length });
    runs.forEach((r, i) => {
      const box = h('div', {}, runs.length > 1 ? h('h3', {}, h('span', { class: 'swatch', style: 'background:' + RAW[i] }), runLabel(r, i)) : null);
      const e = r.eval;
      if (!e) { box.append(h('p', { class: 'note', text: 'no evaluation' })); wrap.append(box); return; }
      if (!e.failed_examples.length) box.append(h('p', { class: 'note', text: 'every example was answered correctly' }));
      for (const f of e.failed_examples) {
        const d = h('details', { class: 'failed' }, h('summary', { text: `#${f.index}: gold ${f.gold}, answer ${f.pred === null ? '(no answer: the output did not parse or the call failed)' : f.pred}` }));
        d.append(h('p', {}, h('b', { text: 'input: ' }), f.input));
        d.append(h('p', { class: 'note', text: 'result row: ' + JSON.stringify(f.row) }));
        d.append(f.history ? h('pre', { text: f.history }) : h('p', { class: 'note', text: 'no recorded LM call for this example (history.jsonl)' }));
        box.append(d);
      }
      if (e.failed_total > e.failed_examples.length) box.append(h('p', { class: 'note', text: `… and ${e.failed_total - e.failed_examples.length} more in results.json` }));
      wrap.append(box);
    });
    app.append(wrap);
  }

  function kvTable(title, pick) {
    const keys = [];
    runs.forEach((r) => Object.keys(pick(r) || {}).forEach((k) => { if (!keys.includes(k)) keys.push(k); }));
    if (!keys.length) return;
    keys.sort();
    app.append(h('h3', { text: title }));
    const t = h('table', {}, h('tr', {}, h('th', { text: 'name' }), ...runs.map((r, i) => h('th', { text: runLabel(r, i) }))));
    for (const k of keys) {
      const vals = runs.map((r) => { const v = (pick(r) || {})[k]; return v === undefined ? '' : typeof v === 'number' ? fmt(v) : typeof v === 'object' ? JSON.stringify(v) : String(v); });
      t.append(h('tr', { class: runs.length > 1 && vals.some((v) => v !== vals[0]) ? 'diff' : null }, h('td', { text: k }),
        ...vals.map((v) => h('td', { class: /^-?[\d.]+(e[-+]?\d+)?$/.test(v) ? 'num' : null, text: v }))));
    }
    app.append(t);
  }

  function details() {
    app.append(h('h2', { id: 'details', text: runs.length > 1 ? 'Parameters, metrics and environment (differences highlighted)' : 'Parameters, metrics and environment' }));
    kvTable('Parameters', (r) => r.params);
    kvTable('Final metrics', (r) => r.metrics);
    kvTable('Tags', (r) => r.tags);
    kvTable('Environment', (r) => r.env);
    app.append(h('p', { class: 'note', text: 'Command: ' + runs.map((r) => (r.command || []).join(' ')).join('  |  ') }));
  }

  header();
  summary();
  accuracy();
  curves();
  perClass();
  confusion();
  failed();
  details();
  document.body.setAttribute('data-rendered', 'true');
})();
