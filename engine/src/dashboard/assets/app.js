// Sluice dashboard: polls the server once a second and draws what it says.
// No library: the charts are SVG written here. The server sums figures up
// (time buckets, histogram bins, a page of the pipeline list), so the page
// stays light with a thousand pipelines or 10 ms batches.
'use strict';

const POLL_MS = 1000;
const $ = (id) => document.getElementById(id);
const state = { token: null, route: null, timer: null, selected: null, detail: null, list: { q: '', sort: 'name', offset: 0 } };

// ---------- formatting ----------
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
const int = (n) => (n == null ? '–' : Math.round(n).toLocaleString('en-US'));
function num(n) {
  if (n == null || !isFinite(n)) return '–';
  const a = Math.abs(n);
  if (a >= 1e6) return (n / 1e6).toFixed(a >= 1e7 ? 0 : 1) + 'M';
  if (a >= 1e4) return (n / 1e3).toFixed(a >= 1e5 ? 0 : 1) + 'k';
  if (a >= 100 || n === Math.round(n)) return String(Math.round(n));
  return n.toFixed(a >= 10 ? 1 : 2);
}
function dur(ms) {
  if (ms == null || !isFinite(ms)) return '–';
  if (ms >= 60000) return (ms / 60000).toFixed(1) + ' min';
  if (ms >= 1000) return (ms / 1000).toFixed(ms >= 10000 ? 0 : 1) + ' s';
  if (ms >= 100) return Math.round(ms) + ' ms';
  if (ms >= 1) return ms.toFixed(1) + ' ms';
  return ms.toFixed(2) + ' ms';
}
function bytes(n) {
  if (n == null) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + ' ' + units[i];
}
const clock = (ms) => new Date(ms).toISOString().slice(11, 23);
const clockShort = (ms) => new Date(ms).toISOString().slice(11, 19);
const pct = (f) => Math.round((f || 0) * 100) + '%';
const shortVersion = (v) => { const at = String(v || '').lastIndexOf('@'); return at < 0 ? String(v || '–') : v.slice(0, at).replace(/\.wasm$/, '') + '@' + v.slice(at + 1, at + 9); };

// ---------- the server ----------
async function api(path) {
  const response = await fetch('api/' + path, { headers: { Authorization: 'Bearer ' + state.token }, cache: 'no-store' });
  if (response.status === 401) { signIn('That token was not accepted.'); return null; }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

// ---------- routing ----------
function route() {
  const hash = location.hash.replace(/^#/, '');
  const m = hash.match(/^\/p\/([^/]*)\/(.+)$/);
  if (m) return { view: 'pipeline', tenant: decodeURIComponent(m[1]), name: decodeURIComponent(m[2]) };
  return { view: 'list' };
}
const pipelineHref = (tenant, name) => '#/p/' + encodeURIComponent(tenant || '') + '/' + encodeURIComponent(name);

// A token given in the address (`#token=…`, or `#/p/tenant/name?token=…`)
// is kept for the tab and taken out of the address at once.
function takeToken() {
  const hash = location.hash.replace(/^#/, '');
  const [path, query] = hash.startsWith('token=') ? ['/', hash] : hash.split('?');
  const given = new URLSearchParams(query || '').get('token');
  if (given) {
    sessionStorage.setItem('sluice-token', given);
    history.replaceState(null, '', location.pathname + '#' + (path || '/'));
  }
  state.token = sessionStorage.getItem('sluice-token');
}

function signIn(why) {
  clearTimeout(state.timer);
  sessionStorage.removeItem('sluice-token');
  state.token = null;
  $('main').replaceChildren();
  $('signin').hidden = false;
  $('signout').hidden = true;
  if (why) $('signin-why').textContent = why;
  $('token').focus();
}

function start() {
  $('signin').hidden = true;
  $('signout').hidden = false;
  state.route = route();
  state.detail = null;
  state.selected = null;
  $('main').replaceChildren();
  poll();
}

async function poll() {
  clearTimeout(state.timer);
  const began = performance.now();
  const r = state.route;
  try {
    if (r.view === 'list') await showList(r);
    else await showPipeline(r);
    $('updated').textContent = 'updated ' + clockShort(Date.now());
    $('updated').classList.remove('stale');
  } catch (e) {
    $('updated').textContent = 'not updated: ' + e.message;
    $('updated').classList.add('stale');
  }
  if (state.token && state.route === r) state.timer = setTimeout(poll, Math.max(50, POLL_MS - (performance.now() - began)));
}

// ---------- the list ----------
async function showList(r) {
  const l = state.list;
  const q = new URLSearchParams({ q: l.q, sort: l.sort, offset: l.offset, limit: 50 });
  const data = await api('pipelines?' + q);
  if (!data || state.route !== r) return;
  const drawing = performance.now();
  $('crumb').textContent = '';
  let root = $('list');
  if (!root) {
    root = document.createElement('section');
    root.id = 'list';
    root.innerHTML = `<div class="cards" id="aggregates"></div>
      <div class="tools"><input id="filter" type="search" placeholder="Filter by tenant/name" value="${esc(l.q)}">
      <label>Sort <select id="sort"><option value="name">name</option><option value="rate">input rate</option>
      <option value="delay">total delay</option><option value="problems">problems</option></select></label>
      <span id="pager"></span></div>
      <table class="grid" id="pipelines"><thead><tr><th>Tenant</th><th>Pipeline</th><th>State</th><th class="n">Input rate</th>
      <th class="n">Total delay</th><th class="n">Processing</th><th class="n">Interval</th><th class="n">Records in</th><th class="n">Out</th>
      <th class="n">Dead letters</th><th class="n">Problems</th></tr></thead><tbody></tbody></table>`;
    $('main').replaceChildren(root);
    $('sort').value = l.sort;
    $('filter').addEventListener('input', (e) => { l.q = e.target.value; l.offset = 0; poll(); });
    $('sort').addEventListener('change', (e) => { l.sort = e.target.value; l.offset = 0; poll(); });
    $('pager').addEventListener('click', (e) => {
      const step = e.target.dataset.step;
      if (step) { l.offset = Math.max(0, l.offset + Number(step)); poll(); }
    });
  }
  $('aggregates').innerHTML = card('Pipelines', int(data.total), 'pipelines-total') + card('Running', int(data.running)) +
    card('Failed', int(data.failed), '', data.failed ? 'bad' : '') + card('Behind', int(data.behind), '', data.behind ? 'warn' : '') +
    card('Input rate', num(data.input_rate) + '/s');
  const last = Math.min(data.offset + data.limit, data.matching);
  $('pager').innerHTML = `${data.matching ? int(data.offset + 1) : 0}–${int(last)} of ${int(data.matching)}
    <button type="button" data-step="-50" ${data.offset ? '' : 'disabled'}>‹</button>
    <button type="button" data-step="50" ${last < data.matching ? '' : 'disabled'}>›</button>`;
  $('pipelines').tBodies[0].innerHTML = data.pipelines.map((p) => {
    const late = p.last_total_delay_ms != null && p.last_total_delay_ms > p.interval_ms;
    return `<tr data-pipeline="${esc(p.name)}" data-tenant="${esc(p.tenant || '')}"><td>${esc(p.tenant || '–')}</td>
      <td><a href="${pipelineHref(p.tenant, p.name)}">${esc(p.name)}</a></td><td><span class="badge ${p.state}">${p.state}</span></td>
      <td class="n">${num(p.input_rate)}/s</td><td class="n ${late ? 'bad' : ''}">${dur(p.last_total_delay_ms)}</td>
      <td class="n">${dur(p.processing_avg_ms)}</td><td class="n">${dur(p.interval_ms)}</td><td class="n records-in">${int(p.records_in)}</td>
      <td class="n">${int(p.records_out)}</td><td class="n">${int(p.dead_letters)}</td><td class="n ${p.problems ? 'warn' : ''}">${int(p.problems)}</td></tr>`;
  }).join('') || '<tr><td colspan="11" class="muted">No pipelines.</td></tr>';
  drawn(drawing);
}

// How long the last redraw took, for the tests and benchmarks.
function drawn(since) {
  document.body.dataset.drawMs = (performance.now() - since).toFixed(2);
  document.body.dataset.draws = String(Number(document.body.dataset.draws || 0) + 1);
}

const card = (label, value, id, cls) => `<div class="card ${cls || ''}"><div class="label">${esc(label)}</div><div class="value"${id ? ` id="${id}"` : ''}>${value}</div></div>`;

// ---------- charts ----------
const W = 640, H = 150, PAD = { l: 52, r: 8, t: 10, b: 22 };
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// A timeline: `points` are [t, avg, max]; gaps (no bucket) break the line.
function timeline(points, { t0, t1, width, fmt, line, lineLabel, markers }) {
  const pw = W - PAD.l - PAD.r, ph = H - PAD.t - PAD.b;
  const top = niceMax(Math.max(line || 0, ...points.map((p) => p[2] ?? p[1]), 0) * 1.05);
  const x = (t) => PAD.l + ((t - t0) / (t1 - t0)) * pw;
  const y = (v) => PAD.t + ph - (v / top) * ph;
  let grid = '';
  for (const f of [0, 0.5, 1]) {
    const gy = y(top * f);
    grid += `<line class="gridline" x1="${PAD.l}" x2="${W - PAD.r}" y1="${gy}" y2="${gy}"/><text class="axis" x="${PAD.l - 6}" y="${gy + 4}" text-anchor="end">${esc(fmt(top * f))}</text>`;
  }
  for (const f of [0, 0.5, 1]) {
    const t = t0 + (t1 - t0) * f;
    grid += `<text class="axis" x="${x(t)}" y="${H - 6}" text-anchor="${f === 0 ? 'start' : f === 1 ? 'end' : 'middle'}">${clockShort(t)}</text>`;
  }
  const runs = [];
  let run = [];
  for (const p of points) {
    if (run.length && p[0] - run[run.length - 1][0] > width * 1.5) { runs.push(run); run = []; }
    run.push(p);
  }
  if (run.length) runs.push(run);
  let band = '', path = '';
  for (const r of runs) {
    const mid = (p) => x(p[0] + width / 2);
    if (r[0].length > 2) {
      band += `<path class="band" d="M${r.map((p) => `${mid(p)},${y(p[2])}`).join('L')}L${r.slice().reverse().map((p) => `${mid(p)},${y(p[1])}`).join('L')}Z"/>`;
    }
    path += `<path class="line" d="M${r.map((p) => `${mid(p)},${y(p[1])}`).join('L')}"/>`;
    if (r.length === 1) path += `<circle class="dot" cx="${mid(r[0])}" cy="${y(r[0][1])}" r="2.5"/>`;
  }
  let extra = '';
  if (line) extra += `<line class="limit" x1="${PAD.l}" x2="${W - PAD.r}" y1="${y(line)}" y2="${y(line)}"/><text class="limit-label" x="${W - PAD.r - 2}" y="${y(line) - 4}" text-anchor="end">${esc(lineLabel)}</text>`;
  for (const m of markers || []) {
    if (m.time_ms < t0 || m.time_ms > t1) continue;
    const mx = x(m.time_ms);
    extra += `<line class="marker ${m.kind}" x1="${mx}" x2="${mx}" y1="${PAD.t}" y2="${PAD.t + ph}"><title>${esc(clock(m.time_ms) + ' ' + (m.stage || '') + ': ' + m.text)}</title></line>`;
  }
  return `<svg viewBox="0 0 ${W} ${H}" class="chart" role="img">${grid}${band}${path}${extra}</svg>`;
}

// A histogram of equal-width bins from `min` to `max`.
function histogram(h, fmt, line) {
  const w = 260, pw = w - 36 - 8, ph = H - PAD.t - PAD.b;
  const counts = h.counts, top = Math.max(1, ...counts);
  const bw = pw / counts.length;
  let bars = '';
  counts.forEach((c, i) => {
    const bh = (c / top) * ph;
    const from = h.min + ((h.max - h.min) * i) / counts.length, to = h.min + ((h.max - h.min) * (i + 1)) / counts.length;
    bars += `<rect class="bar" x="${36 + i * bw + 1}" y="${PAD.t + ph - bh}" width="${Math.max(1, bw - 2)}" height="${bh}"><title>${esc(fmt(from))}–${esc(fmt(to))}: ${c} batches</title></rect>`;
  });
  let limit = '';
  if (line && h.max > h.min && line >= h.min && line <= h.max) {
    const lx = 36 + ((line - h.min) / (h.max - h.min)) * pw;
    limit = `<line class="limit" x1="${lx}" x2="${lx}" y1="${PAD.t}" y2="${PAD.t + ph}"/>`;
  }
  return `<svg viewBox="0 0 ${w} ${H}" class="chart hist" role="img"><text class="axis" x="30" y="${PAD.t + 8}" text-anchor="end">${top}</text>
    <text class="axis" x="30" y="${PAD.t + ph}" text-anchor="end">0</text>${bars}${limit}
    <text class="axis" x="36" y="${H - 6}">${esc(fmt(h.min))}</text><text class="axis" x="${w - 8}" y="${H - 6}" text-anchor="end">${esc(fmt(h.max))}</text></svg>`;
}

// ---------- one pipeline ----------
function skeleton() {
  const el = document.createElement('section');
  el.id = 'pipeline';
  el.innerHTML = `<div class="title"><h1 id="p-name"></h1><span id="p-state" class="badge"></span><span id="p-facts" class="muted"></span></div>
    <div id="p-error" class="error" hidden></div>
    <div class="cards" id="p-cards"></div>
    <h2>Stages</h2><div id="chain"></div>
    <h2>Batches <span class="muted" id="rows-note"></span></h2>
    <div id="rows" class="rows"></div>
    <div class="split wide"><div><h2>Recent batches</h2><table class="grid" id="batches"><thead><tr><th>Time</th><th class="n">Batch</th>
      <th class="n">Records</th><th class="n">Scheduling</th><th class="n">Processing</th><th class="n">Total delay</th><th class="n">Dead letters</th>
      <th>Plugin versions</th></tr></thead><tbody></tbody></table></div>
      <div><h2>Batch <span id="batch-id"></span></h2><div id="batch-detail" class="muted">Choose a batch in the table.</div></div></div>
    <div class="split"><div><h2>Plugin versions</h2><div id="versions"></div></div><div><h2>Errors and dead letters</h2><div id="problems"></div></div></div>
    <div class="split"><div><h2>Sources and sinks</h2><div id="io"></div></div><div><h2>Checkpoints</h2><div id="checkpoints"></div></div></div>`;
  el.querySelector('#batches').addEventListener('click', (e) => {
    const row = e.target.closest('tr[data-batch]');
    if (!row || !state.detail) return;
    state.selected = state.detail.batches.find((b) => String(b.id) === row.dataset.batch) || null;
    drawBatch();
    markSelected();
  });
  return el;
}

async function showPipeline(r) {
  const query = r.tenant ? '?tenant=' + encodeURIComponent(r.tenant) : '';
  const d = await api('pipelines/' + encodeURIComponent(r.name) + query);
  if (!d || state.route !== r) return;
  const drawing = performance.now();
  state.detail = d;
  if (!$('pipeline')) $('main').replaceChildren(skeleton());
  $('crumb').innerHTML = `› ${d.tenant ? esc(d.tenant) + ' / ' : ''}<b>${esc(d.name)}</b>`;
  $('p-name').textContent = d.name;
  $('p-state').textContent = d.state;
  $('p-state').className = 'badge ' + d.state;
  $('p-facts').textContent = `${d.tenant ? 'tenant ' + d.tenant + ' · ' : ''}batch interval ${dur(d.interval_ms)} · running since ${clockShort(d.started_ms)} UTC`;
  $('p-error').hidden = !d.error;
  $('p-error').textContent = d.error || '';
  const t = d.totals;
  $('p-cards').innerHTML = card('Batches', int(t.batches), 'total-batches') + card('Records in', int(t.records_in), 'total-records-in') +
    card('Records out', int(t.records_out), 'total-records-out') + card('Dead letters', int(t.dead_letters), 'total-dead-letters', t.dead_letters ? 'warn' : '') +
    card('Queue', `${int(d.queue.depth)} / ${int(d.queue.capacity)}`, 'queue', d.queue.depth >= d.queue.capacity ? 'bad' : '') +
    card('State', d.state_bytes == null ? 'none' : bytes(d.state_bytes));
  drawChain(d);
  drawRows(d);
  drawBatches(d);
  drawVersions(d);
  drawProblems(d);
  drawIo(d);
  drawCheckpoints(d);
  drawn(drawing);
}

function loadColour(busy) {
  // Green when idle, amber at half, red when always busy.
  const f = Math.min(1, busy || 0);
  const hue = 130 - 130 * f;
  return `hsl(${hue.toFixed(0)}, 62%, ${(88 - 30 * f).toFixed(0)}%)`;
}

function drawChain(d) {
  const nodes = [];
  for (const s of d.sources) nodes.push({ kind: 'source', title: s.name, lines: [int(s.records) + ' records'], busy: 0 });
  nodes.push({ kind: 'queue', title: 'queue', lines: [`${d.queue.depth} / ${d.queue.capacity} chunks`], busy: d.queue.capacity ? d.queue.depth / d.queue.capacity : 0, bp: d.queue.depth >= d.queue.capacity * 0.8 });
  for (const s of d.stages) {
    nodes.push({ kind: 'stage', title: s.name, lines: [shortVersion(s.version) + (s.probation ? ' (probation)' : ''), `busy ${pct(s.busy)} · backpressure ${pct(s.backpressure)}`, `${int(s.records_in)} in · ${int(s.records_out)} out`], busy: s.busy, bp: s.backpressure > 0.2, name: s.name });
  }
  for (const s of d.sinks) nodes.push({ kind: 'sink', title: s.name, lines: [int(s.records) + ' records', `delivery ${pct(d.delivery_load)}`], busy: d.delivery_load });
  const bw = 190, gap = 34, h = 74;
  const w = nodes.length * bw + (nodes.length - 1) * gap + 4;
  let svg = '';
  nodes.forEach((n, i) => {
    const x = 2 + i * (bw + gap);
    const fill = n.kind === 'source' ? '#eef2f7' : loadColour(n.busy);
    svg += `<g class="node ${n.kind}${n.bp ? ' backpressured' : ''}"${n.name ? ` data-stage="${esc(n.name)}"` : ''}><rect x="${x}" y="2" width="${bw}" height="${h}" rx="6" fill="${fill}"/>
      <text class="node-title" x="${x + 10}" y="20">${esc(n.title)}</text>${n.lines.map((l, k) => `<text class="node-line" x="${x + 10}" y="${38 + k * 15}">${esc(l)}</text>`).join('')}</g>`;
    if (i < nodes.length - 1) svg += `<path class="arrow" d="M${x + bw + 4},${2 + h / 2}h${gap - 10}m-6,-5l6,5l-6,5"/>`;
  });
  $('chain').innerHTML = `<svg viewBox="0 0 ${w} ${h + 4}" class="chain" role="img">${svg}</svg>
    <div class="legend muted">Colour: share of the last 10 s the stage spent in its plugin (green idle → red always busy); an orange outline: it waited for the next stage more than a fifth of the time (backpressure).</div>`;
}

function drawRows(d) {
  const tl = d.timeline, width = tl.width_ms;
  const t1 = Math.max(d.now_ms, ...tl.points.map((p) => p[0] + width));
  const t0 = t1 - width * 180;
  const col = (i, j) => tl.points.map((p) => [p[0], p[i], p[j]]);
  const markers = d.versions.filter((v) => v.kind !== 'trusted');
  const h = d.histograms;
  const busy = tl.points.filter((p) => p[1] > 0);
  const avg = (i) => { const v = busy.filter((p) => p[2] > 0).map((p) => p[i]); return v.length ? v.reduce((a, b) => a + b, 0) / v.length : null; };
  const max = (i) => Math.max(0, ...busy.map((p) => p[i]));
  const rate = (v) => num(v) + '/s';
  const rows = [
    { id: 'input-rate', title: 'Input rate', summary: `avg ${rate(avg(3))}`, points: col(3, 3).map((p) => [p[0], p[1]]), fmt: rate, hist: h.input_rate, hfmt: rate },
    { id: 'scheduling-delay', title: 'Scheduling delay', summary: `avg ${dur(avg(4))} · max ${dur(max(5))}`, points: col(4, 5), fmt: dur, hist: h.scheduling_ms, hfmt: dur },
    { id: 'processing-time', title: 'Processing time', summary: `avg ${dur(avg(6))} · max ${dur(max(7))}`, points: col(6, 7), fmt: dur, hist: h.processing_ms, hfmt: dur, line: d.interval_ms },
    { id: 'total-delay', title: 'Total delay', summary: `avg ${dur(avg(8))} · max ${dur(max(9))}`, points: col(8, 9), fmt: dur, hist: h.total_ms, hfmt: dur },
  ];
  $('rows-note').textContent = `(last ${Math.round((width * 180) / 60000)} min in ${dur(width)} buckets: line = average, band = maximum; histograms over the ${h.batches} batches with records shown)`;
  const root = $('rows');
  if (!root.children.length) {
    root.innerHTML = rows.map((r) => `<div class="row" id="row-${r.id}"><div class="row-label"><b>${r.title}</b><div class="muted summary"></div></div><div class="tl"></div><div class="hg"></div></div>`).join('');
  }
  for (const r of rows) {
    const el = $('row-' + r.id);
    el.querySelector('.summary').textContent = r.summary;
    el.querySelector('.tl').innerHTML = timeline(r.points, { t0, t1, width, fmt: r.fmt, line: r.line, lineLabel: 'batch interval ' + dur(r.line), markers });
    el.querySelector('.hg').innerHTML = histogram(r.hist, r.hfmt, r.line);
  }
}

function versionsOf(b) {
  return b.stages.map((s) => `<span class="version" title="${esc(s.name + ': ' + s.version)}">${esc(shortVersion(s.version))}</span>`).join(' ');
}

function drawBatches(d) {
  $('batches').tBodies[0].innerHTML = d.batches.map((b) => `<tr data-batch="${b.id}"><td>${clock(b.time_ms)}</td><td class="n">${b.id}</td>
    <td class="n records">${int(b.records_in)}</td><td class="n">${dur(b.scheduling_ms)}</td><td class="n">${dur(b.processing_ms)}</td>
    <td class="n ${b.total_ms > d.interval_ms ? 'bad' : ''}">${dur(b.total_ms)}</td><td class="n ${b.dead_letters ? 'warn' : ''}">${int(b.dead_letters)}</td>
    <td>${versionsOf(b)}</td></tr>`).join('') || '<tr><td colspan="8" class="muted">No batch with records yet.</td></tr>';
  markSelected();
}

function markSelected() {
  for (const row of $('batches').tBodies[0].rows) row.classList.toggle('selected', state.selected != null && row.dataset.batch === String(state.selected.id));
}

function drawBatch() {
  const b = state.selected;
  if (!b) return;
  $('batch-id').textContent = b.id;
  $('batch-detail').classList.remove('muted');
  $('batch-detail').innerHTML = `<p>${clock(b.time_ms)} UTC · ${int(b.records_in)} records in, ${int(b.records_out)} out · input rate ${num(b.input_rate)}/s ·
    scheduling ${dur(b.scheduling_ms)} · processing ${dur(b.processing_ms)} (delivery ${dur(b.delivery_ms)}) · total ${dur(b.total_ms)}${b.latency_ms != null ? ' · oldest record ' + dur(b.latency_ms) : ''}</p>
    <table class="grid" id="batch-stages"><thead><tr><th>Stage</th><th>Version</th><th class="n">In</th><th class="n">Out</th><th class="n">Dead letters</th><th class="n">Time</th></tr></thead><tbody>
    ${b.stages.map((s) => `<tr><td>${esc(s.name)}</td><td>${esc(s.version)}</td><td class="n">${int(s.records_in)}</td><td class="n">${int(s.records_out)}</td>
      <td class="n">${int(s.dead_letters)}</td><td class="n">${dur(s.busy_ms)}</td></tr>`).join('')}</tbody></table>`;
}

function notes(list, empty) {
  if (!list.length) return `<p class="muted">${empty}</p>`;
  return `<ul class="notes">${list.slice().reverse().map((n) => `<li class="${n.kind}"><span class="when">${clock(n.time_ms)}</span>
    <span class="kind">${n.kind.replace(/_/g, ' ')}</span>${n.stage ? ` <b>${esc(n.stage)}</b>` : ''}${n.batch != null ? ` batch ${n.batch}` : ''}${n.records != null ? ` · ${int(n.records)} records` : ''}
    <div class="text">${esc(n.text)}</div></li>`).join('')}</ul>`;
}

function drawVersions(d) {
  const live = d.stages.map((s) => `<tr><td>${esc(s.name)}</td><td>${esc(s.version)}${s.probation ? ' <span class="badge stopping">probation</span>' : ''}</td>
    <td>${(s.previous || []).map((v) => esc(shortVersion(v))).join(', ') || '–'}</td><td class="n">${int(s.reloads.live)} / ${int(s.reloads.rejected)} / ${int(s.reloads.rolled_back)}</td>
    <td class="n">${s.memory_bytes ? bytes(s.memory_bytes) : '–'}</td></tr>`).join('');
  $('versions').innerHTML = `<table class="grid"><thead><tr><th>Stage</th><th>Live</th><th>Earlier</th><th class="n">Live / rejected / rolled back</th><th class="n">Memory</th></tr></thead><tbody>${live}</tbody></table>
    ${notes(d.versions, 'No new version since the start.')}`;
}

function drawProblems(d) {
  const calls = d.stages.map((s) => `${esc(s.name)}: ${Object.entries(s.calls).filter(([k, v]) => k === 'ok' || v).map(([k, v]) => `${int(v)} ${k.replace(/_/g, ' ')}`).join(', ')}`).join(' · ');
  $('problems').innerHTML = `<p class="muted">Plugin calls — ${calls}</p>${notes(d.problems, 'Nothing went wrong.')}`;
}

function drawIo(d) {
  const lag = d.sources.flatMap((s) => s.lag.map((l) => `<tr><td>${esc(s.name)}</td><td>${esc(l.topic)}</td><td class="n">${l.partition}</td><td class="n">${int(l.lag)}</td></tr>`));
  $('io').innerHTML = `<table class="grid"><thead><tr><th>Source / sink</th><th class="n">Records</th></tr></thead><tbody>
    ${d.sources.map((s) => `<tr><td>${esc(s.name)}</td><td class="n">${int(s.records)}</td></tr>`).join('')}
    ${d.sinks.map((s) => `<tr><td>${esc(s.name)}</td><td class="n">${int(s.records)}</td></tr>`).join('')}</tbody></table>
    ${lag.length ? `<h3>Kafka consumer lag</h3><table class="grid" id="lag"><thead><tr><th>Source</th><th>Topic</th><th class="n">Partition</th><th class="n">Lag</th></tr></thead><tbody>${lag.join('')}</tbody></table>` : ''}`;
}

function drawCheckpoints(d) {
  const c = d.checkpoints;
  $('checkpoints').innerHTML = c.last
    ? `<p>${int(c.count)} written in this run; the last, number ${c.last.number}, covers batch ${c.last.batch}, at ${clock(c.last.time_ms)} UTC, written in ${dur(c.last.took_us / 1000)}.</p>`
    : '<p class="muted">None in this run (the pipeline keeps no state file, or has had nothing to checkpoint).</p>';
}

// ---------- start ----------
window.addEventListener('hashchange', () => { if (state.token) start(); });
$('signin').addEventListener('submit', (e) => {
  e.preventDefault();
  sessionStorage.setItem('sluice-token', $('token').value.trim());
  state.token = $('token').value.trim();
  $('token').value = '';
  start();
});
$('signout').addEventListener('click', () => signIn('Signed out.'));
takeToken();
if (state.token) start();
else signIn();
