// Warren management UI: one script, no framework, no build step. It uses the public
// HTTP API under ./api only (the same calls rabbitmqadmin makes) and builds the page
// with DOM calls (never innerHTML), so names and message bodies are shown as text.
'use strict';

// ---------- DOM helpers ----------

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k === 'value') el.value = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  add(el, kids);
  return el;
}

function add(el, kids) {
  for (const k of kids.flat(Infinity)) {
    if (k === null || k === undefined || k === false) continue;
    el.append(k instanceof Node ? k : String(k));
  }
  return el;
}

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;
const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  return el;
}

let uid = 0;
const nextId = (p) => `${p}-${++uid}`;

// ---------- formatting ----------

const intFmt = new Intl.NumberFormat('en-US');
const fmtInt = (n) => (n === undefined || n === null ? '' : intFmt.format(n));
function fmtRate(r) {
  if (r === undefined || r === null) return '';
  return (r >= 100 ? Math.round(r) : Math.round(r * 10) / 10).toLocaleString('en-US') + '/s';
}
function fmtBytes(n) {
  if (n === undefined || n === null) return '';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + ' ' + u[i];
}
function fmtUptime(ms) {
  let s = Math.floor((ms || 0) / 1000);
  const d = Math.floor(s / 86400); s -= d * 86400;
  const hh = Math.floor(s / 3600); s -= hh * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  return (d ? d + 'd ' : '') + (d || hh ? hh + 'h ' : '') + (d || hh || m ? m + 'm ' : '') + s + 's';
}
const rate = (o, k) => (o && o[k + '_details'] ? o[k + '_details'].rate : 0);
const stat = (o, k) => (o && o[k] !== undefined ? o[k] : 0);
const vhostLabel = (v) => v;
const exchangeLabel = (n) => (n === '' ? '(AMQP default)' : n);
function fmtValue(v) {
  if (v === null || v === undefined) return '';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}
function kvList(obj) {
  const keys = Object.keys(obj || {});
  if (!keys.length) return '';
  return keys.map((k) => h('div', {}, h('span', { class: 'mono' }, k), ': ', fmtValue(obj[k])));
}
function withoutHeaders(props) {
  const out = Object.assign({}, props || {});
  delete out.headers;
  return out;
}
function features(o) {
  const f = [];
  if (o.durable) f.push(h('span', { class: 'tag', title: 'Durable' }, 'D'));
  if (o.auto_delete) f.push(h('span', { class: 'tag', title: 'Auto-delete' }, 'AD'));
  if (o.exclusive) f.push(h('span', { class: 'tag', title: 'Exclusive' }, 'Excl'));
  if (o.internal) f.push(h('span', { class: 'tag', title: 'Internal' }, 'I'));
  for (const [k, v] of Object.entries(o.arguments || {})) {
    f.push(h('span', { class: 'tag', title: `${k}: ${fmtValue(v)}` }, abbrev(k)));
  }
  return f;
}
function abbrev(k) {
  const m = { 'x-message-ttl': 'TTL', 'x-expires': 'Exp', 'x-max-length': 'Lim', 'x-max-length-bytes': 'Lim B',
    'x-dead-letter-exchange': 'DLX', 'x-dead-letter-routing-key': 'DLK', 'x-max-priority': 'Pri',
    'x-queue-type': 'Type', 'x-overflow': 'Ovfl', 'x-single-active-consumer': 'SAC', 'alternate-exchange': 'AE' };
  return m[k] || k;
}

// Text form "key = value" per line → object; numbers and booleans are typed.
function parseKv(text) {
  const out = {};
  for (const raw of String(text || '').split('\n')) {
    const line = raw.trim();
    if (!line) continue;
    const i = line.indexOf('=');
    if (i <= 0) throw new Error(`"${line}" is not of the form name = value`);
    out[line.slice(0, i).trim()] = typed(line.slice(i + 1).trim());
  }
  return out;
}
function typed(v) {
  if (v === 'true') return true;
  if (v === 'false') return false;
  if (/^-?\d+(\.\d+)?$/.test(v)) return Number(v);
  if (/^[[{]/.test(v)) { try { return JSON.parse(v); } catch (_) { /* keep text */ } }
  return v;
}

// ---------- the API ----------

class ApiError extends Error {
  constructor(status, reason) { super(reason); this.status = status; this.reason = reason; }
}

const AUTH_KEY = 'warren.auth';
let auth = sessionStorage.getItem(AUTH_KEY);
let me = null;

function basic(user, password) {
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

// One call. The browser's own HTTP authentication is kept out of it twice over: the API
// leaves WWW-Authenticate out of a 401 to a call marked X-Requested-With (it sends it to
// curl and rabbitmqadmin, as RabbitMQ does), and with `credentials: 'omit'` the Fetch
// standard hands a 401 to the script instead of prompting. The Authorization header is
// ours.
async function api(method, path, body, headers) {
  const h2 = Object.assign({ Authorization: 'Basic ' + auth, 'X-Requested-With': 'XMLHttpRequest' }, headers || {});
  let payload;
  if (body !== undefined) {
    h2['Content-Type'] = 'application/json';
    payload = typeof body === 'string' ? body : JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch('api' + path, { method, headers: h2, body: payload, credentials: 'omit', cache: 'no-store' });
  } catch (e) {
    throw new ApiError(0, 'Cannot reach the broker (' + e.message + ')');
  }
  const text = await res.text();
  let data = null;
  if (text) { try { data = JSON.parse(text); } catch (_) { data = text; } }
  if (!res.ok) {
    const reason = (data && data.reason) || (typeof data === 'string' && data) || `${res.status} ${res.statusText}`;
    if (res.status === 401 && reason === 'Login failed' && me) {
      logout('Your session ended: the broker refused the credentials (Login failed).');
    }
    throw new ApiError(res.status, reason);
  }
  return data;
}
const GET = (p) => api('GET', p);

const isAdmin = () => me && me.tags.includes('administrator');
const isMonitor = () => me && (isAdmin() || me.tags.includes('monitoring'));
const isPolicymaker = () => me && (isAdmin() || me.tags.includes('policymaker'));

// ---------- confirmation, results ----------

function confirmAction(text) {
  return window.confirm(text);
}

function flash(text, bad) {
  const f = $('flash');
  f.className = 'flash' + (bad ? ' bad' : '');
  f.textContent = text;
}

// Runs a state-changing action after confirmation, reports success or the API's reason
// in `out` (an element with role=status).
async function act(out, question, fn, done) {
  if (question && !confirmAction(question)) return;
  out.className = 'result';
  out.textContent = 'Working…';
  try {
    const r = await fn();
    out.className = 'result ok';
    out.textContent = typeof done === 'function' ? done(r) : done || 'Done.';
    refreshNow();
  } catch (e) {
    out.className = 'result bad';
    out.textContent = 'Error: ' + (e.reason || e.message);
  }
}

function resultLine() {
  return h('p', { class: 'result', role: 'status', 'aria-live': 'polite' });
}

// ---------- forms ----------

function field(label, input, hint) {
  const id = input.id || (input.id = nextId('f'));
  return [h('label', { for: id }, label), input, hint ? h('div', { class: 'hint' }, hint) : null];
}
function select(name, options, value) {
  return h('select', { name }, options.map((o) => {
    const [v, t] = Array.isArray(o) ? o : [o, o];
    return h('option', { value: v, selected: v === value }, t);
  }));
}
function form(title, rows, submitText, onsubmit, opts) {
  const out = resultLine();
  const f = h('form', { class: 'form', 'aria-label': title },
    rows,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: opts && opts.danger ? 'danger' : '' }, submitText), out));
  f.addEventListener('submit', (ev) => { ev.preventDefault(); onsubmit(f, out); });
  return f;
}
function section(title, body, open) {
  return h('details', { class: 'section', open: open !== false }, h('summary', {}, title), body);
}
async function vhostOptions() {
  try { return (await GET('/vhosts')).map((v) => v.name); } catch (_) { return ['/']; }
}

// ---------- tables ----------

const cellClass = (c) => [c.num ? 'num' : '', c.opt ? 'opt' : ''].join(' ').trim();

// A table whose body is replaced on each refresh, unless the keyboard focus is in it
// (a person tabbing through rows is not pulled out of place).
function table(columns, opts) {
  opts = opts || {};
  const tbody = h('tbody');
  const head = h('tr', {}, columns.map((c) => {
    const th = h('th', { scope: 'col', class: cellClass(c) });
    if (c.sort && opts.onSort) {
      th.append(h('button', { type: 'button', class: 'link', onclick: () => opts.onSort(c.sort) }, c.title));
    } else th.append(c.title);
    return th;
  }));
  const t = h('table', { class: opts.class || '' }, h('thead', {}, head), tbody);
  const wrap = h('div', { class: 'scroll' }, t);
  return {
    el: wrap,
    setSort(key, reverse) {
      [...head.children].forEach((th, i) => {
        const c = columns[i];
        if (!c.sort) return;
        th.setAttribute('aria-sort', c.sort === key ? (reverse ? 'descending' : 'ascending') : 'none');
        const b = th.querySelector('button');
        if (b) b.textContent = c.title + (c.sort === key ? (reverse ? ' ▼' : ' ▲') : '');
      });
    },
    // Only cells whose content changed are replaced: a link or button that stays the
    // same stays the same element, so a click in the middle of a refresh is not lost.
    update(rows, empty) {
      if (tbody.contains(document.activeElement)) return;
      const fresh = rows.length ? rows.map((r) => h('tr', {}, columns.map((c) => h('td', { class: cellClass(c) }, c.render(r)))))
        : [h('tr', {}, h('td', { colspan: columns.length, class: 'empty' }, empty || 'Nothing here.'))];
      fresh.forEach((tr, i) => {
        const old = tbody.rows[i];
        if (!old || old.cells.length !== tr.cells.length) {
          if (old) old.replaceWith(tr); else tbody.append(tr);
          return;
        }
        [...tr.cells].forEach((td, j) => {
          const o = old.cells[j];
          if (o.innerHTML !== td.innerHTML || o.className !== td.className) o.replaceWith(td);
        });
      });
      while (tbody.rows.length > fresh.length) tbody.lastElementChild.remove();
    },
  };
}

const VHOST_KEY = 'warren.vhost';
const selectedVhost = () => sessionStorage.getItem(VHOST_KEY) || '';

// A paged, filtered, sorted list over one of the API's list endpoints (page, page_size,
// name, use_regex, sort, sort_reverse): only one page ever crosses the network, so it
// scales to tens of thousands of queues.
function listView(path, columns, opts) {
  const st = { page: 1, size: 100, name: '', regex: false, sort: opts.sort || 'name', reverse: false };
  const t = table(columns, {
    onSort: (k) => { st.reverse = st.sort === k ? !st.reverse : false; st.sort = k; t.setSort(st.sort, st.reverse); reload(); },
  });
  t.setSort(st.sort, st.reverse);
  const filter = h('input', { type: 'search', id: nextId('filter'), placeholder: 'name or regex' });
  const regex = h('input', { type: 'checkbox', id: nextId('regex') });
  const size = select('page_size', ['20', '100', '500'], '100');
  const info = h('span', { role: 'status', 'aria-live': 'polite' });
  const prev = h('button', { type: 'button', class: 'secondary small', onclick: () => { st.page--; reload(); } }, '‹ Previous');
  const next = h('button', { type: 'button', class: 'secondary small', onclick: () => { st.page++; reload(); } }, 'Next ›');
  const err = h('p', { class: 'error', role: 'alert' });
  // RabbitMQ's "Virtual host" selector: All, or one (kept for the tab's session).
  const vsel = h('select', { id: nextId('vhost'), name: 'vhost-filter' }, h('option', { value: '' }, 'All'));
  if (opts.byVhost) {
    vhostOptions().then((vs) => {
      for (const v of vs) vsel.append(h('option', { value: v, selected: v === selectedVhost() }, v));
    });
    vsel.addEventListener('change', () => { sessionStorage.setItem(VHOST_KEY, vsel.value); st.page = 1; reload(); });
  }
  let timer;
  filter.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(() => { st.name = filter.value; st.page = 1; reload(); }, 200);
  });
  regex.addEventListener('change', () => { st.regex = regex.checked; st.page = 1; reload(); });
  size.id = nextId('size');
  size.addEventListener('change', () => { st.size = Number(size.value); st.page = 1; reload(); });
  const bar = h('div', { class: 'toolbar' },
    opts.byVhost ? [h('label', { for: vsel.id }, 'Virtual host'), vsel] : null,
    h('label', { for: filter.id }, 'Filter'), filter,
    h('label', { class: 'check' }, regex, ' Regex'),
    h('label', { for: size.id }, 'Per page'), size,
    h('div', { class: 'pager' }, prev, info, next));
  const el = h('div', {}, bar, err, t.el);
  async function reload() {
    const q = `?page=${st.page}&page_size=${st.size}&name=${enc(st.name)}&use_regex=${st.regex}` +
      `&pagination=true&sort=${enc(st.sort)}&sort_reverse=${st.reverse}`;
    const vhost = opts.byVhost ? selectedVhost() : '';
    try {
      const r = await GET((vhost ? opts.byVhost(vhost) : path) + q);
      err.textContent = '';
      if (st.page > r.page_count) { st.page = r.page_count; return reload(); }
      t.update(r.items, opts.empty);
      info.textContent = `Page ${r.page} of ${r.page_count} · ${fmtInt(r.filtered_count)}` +
        (r.filtered_count !== r.total_count ? ` of ${fmtInt(r.total_count)}` : '') + ' ' + (opts.noun || 'items');
      prev.disabled = r.page <= 1;
      next.disabled = r.page >= r.page_count;
    } catch (e) {
      if (vhost && e.status === 404) { sessionStorage.removeItem(VHOST_KEY); vsel.value = ''; return reload(); }
      err.textContent = 'Error: ' + e.reason;
    }
  }
  return { el, reload };
}

// ---------- charts ----------

// A line chart of the last `keep` samples, drawn as SVG polylines; the legend shows the
// newest exact value of each series.
function chart(title, series, fmt, keep) {
  keep = keep || 60;
  const data = series.map(() => []);
  const W = 600, H = 150, L = 0;
  const plot = svg('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': title });
  const legend = h('div', { class: 'legend' });
  const values = series.map((s, i) => {
    const v = h('span', { class: 'v', 'data-series': s.key }, '–');
    legend.append(h('span', {}, h('span', { class: 'sw s' + i }), s.label + ' ', v));
    return v;
  });
  const maxLabel = h('span', { class: 'hint' });
  const el = h('figure', { class: 'chart', 'data-chart': title },
    h('h3', {}, title, ' ', h('small', { class: 'hint' }, maxLabel)), plot, legend);
  function draw() {
    let max = 0;
    for (const d of data) for (const v of d) max = Math.max(max, v);
    max = niceMax(max);
    maxLabel.textContent = `(scale 0 – ${fmt(max)}, last ${keep} s)`;
    plot.replaceChildren(
      svg('line', { class: 'axis', x1: L, y1: H - 1, x2: W, y2: H - 1 }),
      svg('line', { class: 'axis', x1: L, y1: H / 2, x2: W, y2: H / 2 }),
      svg('line', { class: 'axis', x1: L, y1: 1, x2: W, y2: 1 }),
      ...data.map((d, i) => svg('polyline', {
        class: 's' + i + (series[i].dash ? ' dash' : ''),
        points: d.map((v, j) => `${(W * (keep - d.length + j)) / (keep - 1)},${H - 2 - ((H - 4) * v) / max}`).join(' '),
      })));
  }
  return {
    el,
    push(sample) {
      series.forEach((s, i) => {
        const v = Number(sample[s.key]) || 0;
        data[i].push(v);
        if (data[i].length > keep) data[i].shift();
        values[i].textContent = fmt(v);
      });
      draw();
    },
  };
}
function niceMax(v) {
  if (v <= 1) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

// ---------- routing and refresh ----------

let page = null; // { refresh: async () => void }
let refreshing = false;
let lastOk = null;

// A refresh that took long (a sort over tens of thousands of queues) spaces the next
// ones out, so an open page never keeps the broker busy more than a fifth of the time.
let quietUntil = 0;

async function tick() {
  if (!page || !page.refresh || refreshing || document.hidden || Date.now() < quietUntil) return;
  refreshing = true;
  const p = page;
  const started = Date.now();
  try {
    await p.refresh();
    quietUntil = started + 5 * (Date.now() - started) - 1000;
    lastOk = new Date();
    setStatus();
  } catch (e) {
    if (p === page) setStatus('Error: ' + (e.reason || e.message));
  } finally {
    refreshing = false;
  }
}
function refreshNow() { quietUntil = 0; setTimeout(tick, 0); }

let overviewCache = null;
function setStatus(err) {
  const s = $('status');
  s.replaceChildren();
  if (overviewCache) {
    s.append(h('strong', {}, `${overviewCache.product_name} ${overviewCache.product_version}`),
      ` · node ${overviewCache.node} · cluster ${overviewCache.cluster_name}`);
  }
  if (err) s.append(h('span', { class: 'error' }, ' · ' + err));
  else if (lastOk) s.append(` · updated ${lastOk.toLocaleTimeString('en-GB')} (every 1 s)`);
}

const routes = [
  [/^$/, overviewPage, 'overview'],
  [/^connections$/, connectionsPage, 'connections'],
  [/^connections\/([^/]+)$/, connectionPage, 'connections'],
  [/^channels$/, channelsPage, 'channels'],
  [/^channels\/([^/]+)$/, channelPage, 'channels'],
  [/^exchanges$/, exchangesPage, 'exchanges'],
  [/^exchanges\/([^/]+)\/([^/]*)$/, exchangePage, 'exchanges'],
  [/^queues$/, queuesPage, 'queues'],
  [/^queues\/([^/]+)\/([^/]+)$/, queuePage, 'queues'],
  [/^users$/, usersPage, 'admin'],
  [/^users\/([^/]+)$/, userPage, 'admin'],
  [/^vhosts$/, vhostsPage, 'admin'],
  [/^vhosts\/([^/]+)$/, vhostPage, 'admin'],
  [/^policies$/, policiesPage, 'admin'],
  [/^definitions$/, definitionsPage, 'admin'],
];

async function route() {
  if (!me) return;
  const hash = location.hash.replace(/^#\/?/, '');
  const root = $('page');
  page = null;
  for (const [re, fn, tab] of routes) {
    const m = hash.match(re);
    if (!m) continue;
    document.querySelectorAll('#nav a').forEach((a) => {
      if (a.dataset.tab === tab) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    });
    let args;
    try { args = m.slice(1).map(decodeURIComponent); } catch (_) { break; }
    const p = { refresh: null };
    page = p;
    root.replaceChildren();
    if (pendingFlash) { flash(pendingFlash); pendingFlash = null; }
    try {
      await fn(root, p, ...args);
      if (page === p && p.refresh) {
        await p.refresh();
        lastOk = new Date();
        setStatus();
      }
    } catch (e) {
      root.append(h('p', { class: 'error', role: 'alert' }, 'Error: ' + (e.reason || e.message)));
    }
    return;
  }
  root.replaceChildren(h('h1', {}, 'Not found'), h('p', {}, 'No page at ', h('code', {}, location.hash), '. ', h('a', { href: '#/' }, 'Overview')));
}

function title(text, sub) {
  document.title = `${text} · Warren`;
  return h('h1', {}, text, sub ? h('small', { class: 'hint' }, ' ' + sub) : null);
}
let pendingFlash = null;
function go(hash, message) {
  pendingFlash = message || null;
  location.hash = hash;
}

// ---------- login ----------

async function login(user, password) {
  auth = basic(user, password);
  try {
    me = await GET('/whoami');
  } catch (e) {
    auth = null; me = null;
    sessionStorage.removeItem(AUTH_KEY);
    throw e;
  }
  sessionStorage.setItem(AUTH_KEY, auth);
  return me;
}

function showLogin(message) {
  $('login').hidden = false;
  $('nav').hidden = true;
  $('session').hidden = true;
  $('page').replaceChildren();
  $('flash').textContent = '';
  $('login-status').textContent = message || '';
  document.title = 'Login · Warren';
  $('username').focus();
}

function logout(message) {
  auth = null; me = null; page = null; overviewCache = null;
  sessionStorage.removeItem(AUTH_KEY);
  $('status').textContent = '';
  showLogin(message);
}

function showApp() {
  $('login').hidden = true;
  $('nav').hidden = false;
  $('session').hidden = false;
  $('who').textContent = me.name;
  $('nav-admin').hidden = !(isAdmin() || isPolicymaker());
  if (!isAdmin() && isPolicymaker()) $('nav-admin').setAttribute('href', '#/policies');
  route();
}

function loginMessage(e) {
  if (e.status === 401 && e.reason === 'Not management user') {
    return 'Login refused: this user has no management tag (management, policymaker, monitoring or administrator). The broker said: Not management user.';
  }
  if (e.status === 401) return 'Login failed';
  return 'Login failed: ' + e.reason;
}

// ---------- Overview ----------

async function overviewPage(root, p) {
  const tiles = h('div', { class: 'tiles' });
  const totals = [['connections', 'Connections', '#/connections'], ['channels', 'Channels', '#/channels'],
    ['exchanges', 'Exchanges', '#/exchanges'], ['queues', 'Queues', '#/queues'], ['consumers', 'Consumers', '#/queues']];
  const tileN = {};
  for (const [k, label, href] of totals) {
    tileN[k] = h('span', { class: 'n', id: 'total-' + k }, '–');
    tiles.append(h('a', { class: 'tile', href, 'data-total': k }, tileN[k], h('span', { class: 'l' }, label)));
  }
  const queued = chart('Queued messages', [
    { key: 'ready', label: 'Ready' }, { key: 'unacked', label: 'Unacked' }, { key: 'total', label: 'Total', dash: true }], fmtInt);
  const rates = chart('Message rates', [
    { key: 'publish', label: 'Publish' }, { key: 'deliver', label: 'Deliver / get' },
    { key: 'ack', label: 'Consumer ack' }, { key: 'confirm', label: 'Publisher confirm' }], fmtRate);
  const node = h('table', { class: 'kv' });
  const alarms = h('div', { id: 'alarms' });
  const listeners = table([
    { title: 'Protocol', render: (l) => l.protocol },
    { title: 'Bound to', render: (l) => l.ip_address },
    { title: 'Port', num: true, render: (l) => l.port },
  ]);
  root.append(title('Overview'), tiles,
    h('div', { class: 'grid2' }, queued.el, rates.el),
    h('div', { class: 'grid2' },
      h('section', {}, h('h2', {}, 'Node'), h('div', { class: 'scroll' }, node)),
      h('section', {}, h('h2', {}, 'Alarms'), alarms, h('h2', {}, 'Listeners'), listeners.el)));
  let nodeErr = null;
  p.refresh = async () => {
    const o = await GET('/overview');
    overviewCache = o;
    for (const [k] of totals) tileN[k].textContent = fmtInt(o.object_totals[k]);
    const qt = o.queue_totals || {};
    queued.push({ ready: qt.messages_ready, unacked: qt.messages_unacknowledged, total: qt.messages });
    const ms = o.message_stats || {};
    rates.push({ publish: rate(ms, 'publish'), deliver: rate(ms, 'deliver_get'), ack: rate(ms, 'ack'), confirm: rate(ms, 'confirm') });
    listeners.update(o.listeners || []);
    let n = null;
    if (isMonitor() && !nodeErr) {
      try { n = (await GET('/nodes/' + enc(o.node))); } catch (e) { nodeErr = e; }
    }
    const rows = [['Node', o.node], ['Product', `${o.product_name} ${o.product_version}`],
      ['RabbitMQ API', o.rabbitmq_version], ['Cluster', o.cluster_name]];
    if (n) {
      rows.push(['Uptime', fmtUptime(n.uptime)], ['Memory', `${fmtBytes(n.mem_used)} of ${fmtBytes(n.mem_limit)} high watermark`],
        ['Disk free', `${fmtBytes(n.disk_free)} (limit ${fmtBytes(n.disk_free_limit)})`],
        ['File descriptors', `${fmtInt(n.fd_used)} of ${fmtInt(n.fd_total)}`], ['Cores', n.processors]);
    }
    node.replaceChildren(h('tbody', {}, rows.map(([k, v]) => h('tr', {}, h('th', { scope: 'row' }, k), h('td', {}, v)))));
    const a = [];
    if (n && n.mem_alarm) a.push('Memory alarm: publishers are blocked until memory use falls below the high watermark.');
    if (n && n.disk_free_alarm) a.push('Disk alarm: publishers are blocked until free disk space rises above the limit.');
    alarms.replaceChildren(a.length ? h('ul', {}, a.map((x) => h('li', { class: 'state-alarm' }, x)))
      : h('p', { class: 'state-ok' }, n ? 'None: memory and disk are fine.' : 'Node details need the monitoring tag.'));
  };
}

// ---------- Connections and channels ----------

const stateCell = (s) => h('span', { class: 'state-' + s }, s);
function clientOf(c) {
  const cp = c.client_properties || {};
  return [cp.product, cp.version].filter(Boolean).join(' ') || cp.connection_name || '';
}

async function connectionsPage(root, p) {
  const list = listView('/connections', [
    { title: 'Name', sort: 'name', render: (c) => h('a', { href: '#/connections/' + enc(c.name) }, c.name) },
    { title: 'User', sort: 'user', render: (c) => c.user },
    { title: 'Virtual host', sort: 'vhost', render: (c) => vhostLabel(c.vhost) },
    { title: 'Client', render: clientOf },
    { opt: true, title: 'Connection name', render: (c) => (c.client_properties || {}).connection_name || '' },
    { opt: true, title: 'TLS', render: (c) => (c.ssl ? c.ssl_protocol || 'yes' : '') },
    { title: 'State', sort: 'state', render: (c) => stateCell(c.state) },
    { title: 'Channels', sort: 'channels', num: true, render: (c) => fmtInt(c.channels) },
    { title: 'From client', num: true, render: (c) => fmtBytes(rate(c, 'recv_oct')) + '/s' },
    { title: 'To client', num: true, render: (c) => fmtBytes(rate(c, 'send_oct')) + '/s' },
  ], { noun: 'connections', empty: 'No connections.', byVhost: (v) => `/vhosts/${enc(v)}/connections` });
  root.append(title('Connections'), list.el);
  p.refresh = list.reload;
}

async function connectionPage(root, p, name) {
  const details = h('table', { class: 'kv' });
  const props = h('div');
  const channels = table(channelColumns());
  const reason = h('input', { name: 'reason', value: 'Closed via management plugin', size: 40 });
  const close = form('Close this connection', field('Reason', reason, 'Sent to the client in connection.close (320 CONNECTION_FORCED).'),
    'Force Close', (f, out) => act(out, `Close connection ${name}?`,
      () => api('DELETE', '/connections/' + enc(name), undefined, { 'X-Reason': reason.value }),
      () => { go('#/connections', `Connection ${name} closed.`); return 'Closed.'; }), { danger: true });
  root.append(title('Connection', name), h('div', { class: 'scroll' }, details), h('h2', {}, 'Client properties'), props,
    h('h2', {}, 'Channels'), channels.el, h('h2', {}, 'Close this connection'), close);
  p.refresh = async () => {
    const c = await GET('/connections/' + enc(name));
    const rows = [['User', c.user], ['Virtual host', c.vhost], ['State', stateCell(c.state)], ['Peer', `${c.peer_host}:${c.peer_port}`],
      ['Protocol', c.protocol], ['Authentication', c.auth_mechanism], ['TLS', c.ssl ? `${c.ssl_protocol} ${c.ssl_cipher || ''}` : 'no'],
      ['Heartbeat', c.timeout + ' s'], ['Frame max', fmtInt(c.frame_max) + ' bytes'], ['Channel max', fmtInt(c.channel_max)],
      ['Connected at', new Date(c.connected_at).toLocaleString('en-GB')],
      ['Received', `${fmtBytes(c.recv_oct)} (${fmtBytes(rate(c, 'recv_oct'))}/s)`], ['Sent', `${fmtBytes(c.send_oct)} (${fmtBytes(rate(c, 'send_oct'))}/s)`]];
    details.replaceChildren(h('tbody', {}, rows.map(([k, v]) => h('tr', {}, h('th', { scope: 'row' }, k), h('td', {}, v)))));
    if (!props.childNodes.length) props.append(h('pre', {}, JSON.stringify(c.client_properties || {}, null, 2)));
    channels.update(await GET('/connections/' + enc(name) + '/channels'), 'No channels.');
  };
}

const channelHref = (n) => '#/channels/' + enc(n);
const channelMode = (c) => (c.confirm ? 'confirm' : c.transactional ? 'transactional' : 'none');
const prefetch = (n) => fmtInt(n) + (n === 0 ? ' (no limit)' : '');

function channelColumns() {
  return [
    { title: 'Channel', sort: 'name', render: (c) => h('a', { href: channelHref(c.name) }, c.name) },
    { title: 'User', sort: 'user', render: (c) => c.user },
    { title: 'Virtual host', sort: 'vhost', render: (c) => c.vhost },
    { title: 'Mode', render: (c) => [c.confirm ? h('span', { class: 'tag', title: 'Confirm' }, 'C') : null, c.transactional ? h('span', { class: 'tag', title: 'Transactional' }, 'T') : null] },
    { title: 'State', sort: 'state', render: (c) => stateCell(c.state) },
    { title: 'Unconfirmed', num: true, render: (c) => fmtInt(c.messages_unconfirmed) },
    { title: 'Prefetch', num: true, render: (c) => fmtInt(c.prefetch_count) },
    { title: 'Unacked', sort: 'messages_unacknowledged', num: true, render: (c) => fmtInt(c.messages_unacknowledged) },
    { title: 'Consumers', num: true, render: (c) => fmtInt(c.consumer_count) },
    { title: 'Publish', num: true, render: (c) => fmtRate(rate(c.message_stats, 'publish')) },
    { title: 'Confirm', num: true, render: (c) => fmtRate(rate(c.message_stats, 'confirm')) },
    { title: 'Deliver / get', num: true, render: (c) => fmtRate(rate(c.message_stats, 'deliver_get')) },
    { title: 'Ack', num: true, render: (c) => fmtRate(rate(c.message_stats, 'ack')) },
  ];
}

async function channelsPage(root, p) {
  const list = listView('/channels', channelColumns(), { noun: 'channels', empty: 'No channels.', byVhost: (v) => `/vhosts/${enc(v)}/channels` });
  root.append(title('Channels'), list.el);
  p.refresh = list.reload;
}

async function channelPage(root, p, name) {
  const messages = chart('Messages', [{ key: 'unacked', label: 'Unacked' }, { key: 'unconfirmed', label: 'Unconfirmed' }], fmtInt);
  const rates = chart('Message rates', [{ key: 'publish', label: 'Publish' }, { key: 'confirm', label: 'Publisher confirm' },
    { key: 'deliver', label: 'Deliver / get' }, { key: 'ack', label: 'Consumer ack' }], fmtRate);
  const details = h('table', { class: 'kv' });
  const consumers = table([
    { title: 'Queue', render: (x) => h('a', { href: queueHref(x.queue.vhost, x.queue.name) }, x.queue.name) },
    { opt: true, title: 'Virtual host', render: (x) => x.queue.vhost },
    { title: 'Consumer tag', render: (x) => h('span', { class: 'mono' }, x.consumer_tag) },
    { title: 'Ack required', render: (x) => (x.ack_required ? 'yes' : 'no') },
    { title: 'Exclusive', render: (x) => (x.exclusive ? 'yes' : 'no') },
    { title: 'Prefetch', num: true, render: (x) => prefetch(x.prefetch_count) },
    { opt: true, title: 'Arguments', render: (x) => kvList(x.arguments) },
  ]);
  const missing = h('p', { class: 'error', role: 'alert', hidden: true },
    `Channel ${name} was not found: it does not exist or has been closed. `, h('a', { href: '#/channels' }, 'All channels'));
  const body = h('div', {}, h('div', { class: 'grid2' }, messages.el, rates.el),
    h('h2', {}, 'Details'), h('div', { class: 'scroll' }, details),
    h('h2', {}, 'Consumers'), consumers.el);
  root.append(title('Channel', name), missing, body);
  let connLink = null; // one element across refreshes, so a click on it is never lost
  p.refresh = async () => {
    let c;
    try {
      c = await GET('/channels/' + enc(name));
    } catch (e) {
      if (e.status !== 404) throw e;
      missing.hidden = false;
      body.hidden = true;
      return;
    }
    missing.hidden = true;
    body.hidden = false;
    const ms = c.message_stats || {};
    messages.push({ unacked: c.messages_unacknowledged, unconfirmed: c.messages_unconfirmed });
    rates.push({ publish: rate(ms, 'publish'), confirm: rate(ms, 'confirm'), deliver: rate(ms, 'deliver_get'), ack: rate(ms, 'ack') });
    const conn = (c.connection_details || {}).name;
    if (conn && (!connLink || connLink.textContent !== conn)) connLink = h('a', { href: '#/connections/' + enc(conn) }, conn);
    const count = (k) => `${fmtInt(stat(ms, k))} (${fmtRate(rate(ms, k))})`;
    const rows = [['Connection', conn ? connLink : ''], ['Channel number', c.number],
      ['User', c.user], ['Virtual host', c.vhost], ['Mode', h('span', { id: 'channel-mode' }, channelMode(c))], ['State', stateCell(c.state)],
      ['Prefetch count', h('span', { id: 'channel-prefetch' }, prefetch(c.prefetch_count))], ['Global prefetch count', prefetch(c.global_prefetch_count)],
      ['Unacknowledged', fmtInt(c.messages_unacknowledged)], ['Unconfirmed', fmtInt(c.messages_unconfirmed)],
      ['Uncommitted', fmtInt(c.messages_uncommitted)], ['Acks uncommitted', fmtInt(c.acks_uncommitted)],
      ['Consumers', fmtInt(c.consumer_count)],
      ['Published', count('publish')], ['Confirmed', count('confirm')], ['Delivered / got', count('deliver_get')],
      ['Acked', count('ack')], ['Redelivered', count('redeliver')], ['Returned unroutable', count('return_unroutable')]];
    // Not redrawn while the keyboard focus is on the connection link.
    if (!details.contains(document.activeElement)) {
      details.replaceChildren(h('tbody', {}, rows.map(([k, v]) => h('tr', {}, h('th', { scope: 'row' }, k), h('td', {}, v)))));
    }
    consumers.update(c.consumer_details || [], 'No consumers.');
  };
}

// ---------- Exchanges ----------

const exchangeHref = (v, n) => `#/exchanges/${enc(v)}/${enc(n)}`;
const queueHref = (v, n) => `#/queues/${enc(v)}/${enc(n)}`;

async function exchangesPage(root, p) {
  const list = listView('/exchanges', [
    { opt: true, title: 'Virtual host', sort: 'vhost', render: (x) => x.vhost },
    { title: 'Name', sort: 'name', render: (x) => h('a', { href: exchangeHref(x.vhost, x.name) }, exchangeLabel(x.name)) },
    { opt: true, title: 'Type', sort: 'type', render: (x) => x.type },
    { opt: true, title: 'Features', render: features },
    { opt: true, title: 'Policy', render: (x) => x.policy || '' },
    { title: 'Auto-delete', render: (x) => (x.auto_delete ? 'yes' : 'no') },
    { opt: true, title: 'Internal', render: (x) => (x.internal ? 'yes' : 'no') },
  ], { noun: 'exchanges', byVhost: (v) => `/exchanges/${enc(v)}` });
  const vhosts = await vhostOptions();
  const vh = select('vhost', vhosts, '/');
  const name = h('input', { name: 'name', required: true });
  const type = select('type', ['direct', 'fanout', 'headers', 'topic'], 'direct');
  const durable = select('durable', [['true', 'Durable'], ['false', 'Transient']], 'true');
  const ad = select('auto_delete', [['false', 'No'], ['true', 'Yes']], 'false');
  const internal = select('internal', [['false', 'No'], ['true', 'Yes']], 'false');
  const args = h('textarea', { name: 'arguments', placeholder: 'alternate-exchange = my-ae' });
  const addForm = form('Add a new exchange', [field('Virtual host', vh), field('Name', name), field('Type', type),
    field('Durability', durable), field('Auto delete', ad), field('Internal', internal),
    field('Arguments', args, 'One per line: name = value')], 'Add exchange', (f, out) => act(out,
    `Declare exchange "${name.value}" in virtual host "${vh.value}"?`,
    () => api('PUT', `/exchanges/${enc(vh.value)}/${enc(name.value)}`, {
      type: type.value, durable: durable.value === 'true', auto_delete: ad.value === 'true',
      internal: internal.value === 'true', arguments: parseKv(args.value) }),
    () => `Exchange "${name.value}" declared.`));
  root.append(title('Exchanges'), list.el, section('Add a new exchange', addForm, false));
  p.refresh = list.reload;
}

function bindingsTable(vhost, dir) {
  return table([
    dir === 'to' ? { title: 'From', render: (b) => h('a', { href: exchangeHref(vhost, b.source) }, exchangeLabel(b.source)) }
      : { title: 'To', render: (b) => h('a', { href: b.destination_type === 'queue' ? queueHref(vhost, b.destination) : exchangeHref(vhost, b.destination) }, b.destination, b.destination_type === 'exchange' ? ' (exchange)' : '') },
    { title: 'Routing key', render: (b) => h('span', { class: 'mono' }, b.routing_key) },
    { title: 'Arguments', render: (b) => kvList(b.arguments) },
    { title: '', render: (b) => (b.source === '' ? '(default binding)' : unbindButton(b)) },
  ]);
}

function unbindButton(b) {
  const out = h('span', { role: 'status' });
  return [h('button', { type: 'button', class: 'secondary small', onclick: () => act(out,
    `Remove the binding from "${exchangeLabel(b.source)}" to ${b.destination_type} "${b.destination}" with routing key "${b.routing_key}"?`,
    () => api('DELETE', `/bindings/${enc(b.vhost)}/e/${enc(b.source)}/${b.destination_type === 'queue' ? 'q' : 'e'}/${enc(b.destination)}/${enc(b.properties_key)}`),
    'Unbound.') }, 'Unbind'), ' ', out];
}

function bindForm(vhost, fixed) {
  // fixed: {source} (exchange page: choose destination) or {destination} (queue page: choose source).
  const kind = select('destination_type', [['q', 'To queue'], ['e', 'To exchange']], 'q');
  const other = h('input', { name: fixed.source !== undefined ? 'destination' : 'source', required: true });
  const key = h('input', { name: 'routing_key' });
  const args = h('textarea', { name: 'arguments', placeholder: 'x-match = all' });
  const rows = fixed.source !== undefined
    ? [field('Destination type', kind), field('Destination', other)]
    : [field('From exchange', other)];
  return form('Add binding', [rows, field('Routing key', key), field('Arguments', args, 'One per line: name = value')], 'Bind', (f, out) => {
    const source = fixed.source !== undefined ? fixed.source : other.value;
    const dest = fixed.source !== undefined ? other.value : fixed.destination;
    const k = fixed.source !== undefined ? kind.value : 'q';
    act(out, `Bind ${k === 'q' ? 'queue' : 'exchange'} "${dest}" to exchange "${exchangeLabel(source)}" with routing key "${key.value}"?`,
      () => api('POST', `/bindings/${enc(vhost)}/e/${enc(source)}/${k}/${enc(dest)}`, { routing_key: key.value, arguments: parseKv(args.value) }),
      'Bound.');
  });
}

function publishForm(vhost, exchange, defaultKey) {
  const key = h('input', { name: 'routing_key', value: defaultKey || '' });
  const mode = select('delivery_mode', [['1', '1 - Non-persistent'], ['2', '2 - Persistent']], '1');
  const headers = h('textarea', { name: 'headers', placeholder: 'x-custom = value' });
  const props = h('textarea', { name: 'properties', placeholder: 'content_type = text/plain\ncorrelation_id = 42' });
  const body = h('textarea', { name: 'payload' });
  const encoding = select('payload_encoding', [['string', 'String'], ['base64', 'Base64']], 'string');
  return form('Publish message', [field('Routing key', key), field('Delivery mode', mode),
    field('Headers', headers, 'One per line: name = value'),
    field('Properties', props, 'One per line: content_type, correlation_id, message_id, expiration, priority, reply_to, type, user_id, app_id, timestamp'),
    field('Payload', body), field('Payload encoding', encoding)], 'Publish message', (f, out) => {
    let properties;
    try {
      properties = Object.assign(parseKv(props.value), { delivery_mode: Number(mode.value) });
      const hd = parseKv(headers.value);
      if (Object.keys(hd).length) properties.headers = hd;
    } catch (e) { out.className = 'result bad'; out.textContent = 'Error: ' + e.message; return; }
    act(out, `Publish a message to exchange "${exchangeLabel(exchange)}" with routing key "${key.value}"?`,
      () => api('POST', `/exchanges/${enc(vhost)}/${enc(exchange === '' ? 'amq.default' : exchange)}/publish`,
        { routing_key: key.value, properties, payload: body.value, payload_encoding: encoding.value }),
      (r) => (r && r.routed ? 'Message published and routed.' : 'Message published, but not routed (no binding matched).'));
  });
}

async function exchangePage(root, p, vhost, name) {
  const details = h('table', { class: 'kv' });
  const from = bindingsTable(vhost, 'from');
  const to = bindingsTable(vhost, 'to');
  const ebase = `/exchanges/${enc(vhost)}/${enc(name === '' ? 'amq.default' : name)}`;
  const out = resultLine();
  const del = h('button', { type: 'button', class: 'danger', onclick: () => act(out,
    `Delete exchange "${name}" in virtual host "${vhost}"? Its bindings go with it.`,
    () => api('DELETE', ebase), () => { go('#/exchanges', `Exchange "${name}" deleted.`); return 'Deleted.'; }) }, 'Delete this exchange');
  const builtin = name === '' || name.startsWith('amq.');
  root.append(title('Exchange ' + exchangeLabel(name), `in virtual host ${vhost}`), h('div', { class: 'scroll' }, details),
    h('h2', {}, 'Bindings from this exchange'), from.el,
    h('h2', {}, 'Bindings to this exchange'), to.el,
    builtin && name === '' ? null : section('Add binding from this exchange', bindForm(vhost, { source: name }), false),
    section('Publish message', publishForm(vhost, name, ''), false),
    builtin ? null : section('Delete this exchange', h('div', { class: 'form' }, h('div', { class: 'actions' }, del, out)), false));
  p.refresh = async () => {
    const x = await GET(ebase);
    const rows = [['Type', x.type], ['Features', features(x)], ['Arguments', kvList(x.arguments) || 'none'], ['Policy', x.policy || '']];
    if (x.message_stats) {
      rows.push(['Message rate in', fmtRate(rate(x.message_stats, 'publish_in'))], ['Message rate out', fmtRate(rate(x.message_stats, 'publish_out'))]);
    }
    details.replaceChildren(h('tbody', {}, rows.map(([k, v]) => h('tr', {}, h('th', { scope: 'row' }, k), h('td', {}, v)))));
    if (name !== '') {
      from.update(await GET(ebase + '/bindings/source'), 'No bindings.');
      to.update(await GET(ebase + '/bindings/destination'), 'No bindings.');
    } else {
      from.update([], 'The default exchange is bound implicitly to every queue, with the queue name as routing key.');
      to.update([], 'No bindings.');
    }
  };
}

// ---------- Queues ----------

async function queuesPage(root, p) {
  const list = listView('/queues', [
    { opt: true, title: 'Virtual host', sort: 'vhost', render: (q) => q.vhost },
    { title: 'Name', sort: 'name', render: (q) => h('a', { href: queueHref(q.vhost, q.name) }, q.name) },
    { opt: true, title: 'Type', sort: 'type', render: (q) => q.type },
    { opt: true, title: 'Features', render: features },
    { opt: true, title: 'Policy', sort: 'policy', render: (q) => q.policy || '' },
    { title: 'State', sort: 'state', render: (q) => stateCell(q.state) },
    { title: 'Ready', sort: 'messages_ready', num: true, render: (q) => h('span', { 'data-field': 'ready' }, fmtInt(q.messages_ready)) },
    { title: 'Unacked', sort: 'messages_unacknowledged', num: true, render: (q) => h('span', { 'data-field': 'unacked' }, fmtInt(q.messages_unacknowledged)) },
    { title: 'Total', sort: 'messages', num: true, render: (q) => h('span', { 'data-field': 'total' }, fmtInt(q.messages)) },
    { opt: true, title: 'Incoming', num: true, render: (q) => fmtRate(rate(q.message_stats, 'publish')) },
    { opt: true, title: 'Deliver / get', num: true, render: (q) => fmtRate(rate(q.message_stats, 'deliver_get')) },
    { opt: true, title: 'Ack', num: true, render: (q) => fmtRate(rate(q.message_stats, 'ack')) },
    { title: 'Consumers', sort: 'consumers', num: true, render: (q) => fmtInt(q.consumers) },
  ], { noun: 'queues', empty: 'No queues match.', byVhost: (v) => `/queues/${enc(v)}` });
  const vhosts = await vhostOptions();
  const vh = select('vhost', vhosts, '/');
  const type = select('type', [['classic', 'Classic'], ['quorum', 'Quorum'], ['stream', 'Stream']], 'classic');
  const name = h('input', { name: 'name', id: 'queue-name', required: true });
  const durable = select('durable', [['true', 'Durable'], ['false', 'Transient']], 'true');
  const ad = select('auto_delete', [['false', 'No'], ['true', 'Yes']], 'false');
  const args = h('textarea', { name: 'arguments', placeholder: 'x-message-ttl = 60000\nx-max-length = 1000' });
  const addForm = form('Add a new queue', [field('Virtual host', vh), field('Type', type), field('Name', name),
    field('Durability', durable), field('Auto delete', ad),
    field('Arguments', args, 'One per line: name = value (x-message-ttl, x-expires, x-max-length, x-dead-letter-exchange, …)')],
  'Add queue', (f, out) => {
    let a;
    try { a = parseKv(args.value); } catch (e) { out.className = 'result bad'; out.textContent = 'Error: ' + e.message; return; }
    if (type.value !== 'classic') a['x-queue-type'] = type.value;
    act(out, `Declare queue "${name.value}" in virtual host "${vh.value}"?`,
      () => api('PUT', `/queues/${enc(vh.value)}/${enc(name.value)}`, { durable: durable.value === 'true', auto_delete: ad.value === 'true', arguments: a }),
      () => `Queue "${name.value}" declared.`);
  });
  root.append(title('Queues and Streams'), list.el, section('Add a new queue', addForm, false));
  p.refresh = list.reload;
}

async function queuePage(root, p, vhost, name) {
  const qbase = `/queues/${enc(vhost)}/${enc(name)}`;
  const queued = chart('Queued messages', [{ key: 'ready', label: 'Ready' }, { key: 'unacked', label: 'Unacked' }, { key: 'total', label: 'Total', dash: true }], fmtInt);
  const rates = chart('Message rates', [{ key: 'publish', label: 'Incoming' }, { key: 'deliver', label: 'Deliver / get' },
    { key: 'ack', label: 'Consumer ack' }, { key: 'redeliver', label: 'Redelivered' }], fmtRate);
  const details = h('table', { class: 'kv' });
  const consumers = table([
    { title: 'Channel', render: (c) => { const d = c.channel_details || {}; return d.name ? h('a', { href: channelHref(d.name) }, d.name) : (d.number != null ? '#' + d.number : ''); } },
    { title: 'Consumer tag', render: (c) => h('span', { class: 'mono' }, c.consumer_tag) },
    { title: 'Ack required', render: (c) => (c.ack_required ? 'yes' : 'no') },
    { title: 'Exclusive', render: (c) => (c.exclusive ? 'yes' : 'no') },
    { title: 'Prefetch', num: true, render: (c) => fmtInt(c.prefetch_count) },
    { title: 'Active', render: (c) => (c.active ? 'yes' : 'no') },
    { title: 'Arguments', render: (c) => kvList(c.arguments) },
  ]);
  const bindings = bindingsTable(vhost, 'to');

  // Get messages.
  const ackmode = select('ackmode', [['ack_requeue_true', 'Nack message requeue true'], ['ack_requeue_false', 'Automatic ack'],
    ['reject_requeue_true', 'Reject requeue true'], ['reject_requeue_false', 'Reject requeue false']], 'ack_requeue_true');
  const encoding = select('encoding', [['auto', 'Automatic string/base64'], ['base64', 'Base64']], 'auto');
  const count = h('input', { name: 'count', type: 'number', min: '1', value: '1', size: 5 });
  const got = h('div', { id: 'messages' });
  const getForm = form('Get messages', [field('Ack mode', ackmode, 'Nack requeue true leaves the message in the queue; Automatic ack removes it.'),
    field('Encoding', encoding), field('Messages', count)], 'Get Message(s)', (f, out) => act(out,
    ackmode.value === 'ack_requeue_true' ? null : `Get up to ${count.value} message(s) with "${ackmode.selectedOptions[0].textContent}"? Messages may leave the queue.`,
    async () => {
      const msgs = await api('POST', qbase + '/get', { count: Number(count.value) || 1, ackmode: ackmode.value, encoding: encoding.value, truncate: 50000 });
      got.replaceChildren(...msgs.map((m, i) => h('div', { class: 'msg card' },
        h('h3', {}, `Message ${i + 1}`),
        h('table', { class: 'kv' }, h('tbody', {},
          h('tr', {}, h('th', { scope: 'row' }, 'Exchange'), h('td', {}, exchangeLabel(m.exchange))),
          h('tr', {}, h('th', { scope: 'row' }, 'Routing key'), h('td', {}, m.routing_key)),
          h('tr', {}, h('th', { scope: 'row' }, 'Redelivered'), h('td', {}, m.redelivered ? 'yes' : 'no')),
          h('tr', {}, h('th', { scope: 'row' }, 'Properties'), h('td', {}, kvList(withoutHeaders(m.properties)) || 'none')),
          h('tr', {}, h('th', { scope: 'row' }, 'Headers'), h('td', {}, kvList((m.properties || {}).headers) || 'none')),
          h('tr', {}, h('th', { scope: 'row' }, 'Payload'), h('td', {},
            h('div', { class: 'hint' }, `${fmtInt(m.payload_bytes)} bytes, encoding: ${m.payload_encoding}`),
            h('pre', { class: 'payload' }, m.payload))))))));
      return msgs;
    }, (msgs) => (msgs.length ? `Got ${msgs.length} message(s); ${fmtInt(msgs[msgs.length - 1].message_count)} left in the queue.` : 'Queue is empty.')));

  const purgeOut = resultLine();
  const purge = h('div', { class: 'form' }, h('div', { class: 'actions' },
    h('button', { type: 'button', class: 'danger', onclick: () => act(purgeOut, `Purge queue "${name}"? Its ready messages are deleted.`,
      () => api('DELETE', qbase + '/contents'), 'Queue purged.') }, 'Purge Messages'), purgeOut));
  const ifEmpty = h('input', { type: 'checkbox', name: 'if-empty' });
  const ifUnused = h('input', { type: 'checkbox', name: 'if-unused' });
  const delOut = resultLine();
  const del = h('div', { class: 'form' },
    h('label', { class: 'check' }, ifEmpty, ' Only if empty'), h('label', { class: 'check' }, ifUnused, ' Only if unused'),
    h('div', { class: 'actions' }, h('button', { type: 'button', class: 'danger', onclick: () => act(delOut,
      `Delete queue "${name}" in virtual host "${vhost}"? Its messages are lost.`,
      () => api('DELETE', qbase + `?if-empty=${ifEmpty.checked}&if-unused=${ifUnused.checked}`),
      () => { go('#/queues', `Queue "${name}" deleted.`); return 'Deleted.'; }) }, 'Delete Queue'), delOut));

  root.append(title('Queue ' + name, `in virtual host ${vhost}`),
    h('div', { class: 'grid2' }, queued.el, rates.el),
    h('h2', {}, 'Details'), h('div', { class: 'scroll' }, details),
    h('h2', {}, 'Consumers'), consumers.el,
    h('h2', {}, 'Bindings'), bindings.el,
    section('Add binding to this queue', bindForm(vhost, { destination: name }), false),
    section('Publish message', publishForm(vhost, '', name), false),
    section('Get messages', [getForm, got], true),
    section('Purge', purge, false),
    section('Delete', del, false));
  p.refresh = async () => {
    const q = await GET(qbase);
    queued.push({ ready: q.messages_ready, unacked: q.messages_unacknowledged, total: q.messages });
    const ms = q.message_stats || {};
    rates.push({ publish: rate(ms, 'publish'), deliver: rate(ms, 'deliver_get'), ack: rate(ms, 'ack'), redeliver: rate(ms, 'redeliver') });
    const rows = [['Type', q.type], ['Features', features(q)], ['Arguments', kvList(q.arguments) || 'none'],
      ['Policy', q.policy || ''], ['Effective policy definition', kvList(q.effective_policy_definition) || 'none'],
      ['State', stateCell(q.state)], ['Consumers', fmtInt(q.consumers)],
      ['Consumer capacity', Math.round((q.consumer_capacity || 0) * 100) + '%'],
      ['Messages', h('span', { id: 'queue-counts' }, `${fmtInt(q.messages)} total: ${fmtInt(q.messages_ready)} ready, ${fmtInt(q.messages_unacknowledged)} unacked`)],
      ['Message body bytes', `${fmtBytes(q.message_bytes)} (ready ${fmtBytes(q.message_bytes_ready)}, unacked ${fmtBytes(q.message_bytes_unacknowledged)})`],
      ['Published', fmtInt(stat(ms, 'publish'))], ['Delivered / got', fmtInt(stat(ms, 'deliver_get'))], ['Acked', fmtInt(stat(ms, 'ack'))]];
    details.replaceChildren(h('tbody', {}, rows.map(([k, v]) => h('tr', {}, h('th', { scope: 'row' }, k), h('td', {}, v)))));
    consumers.update(q.consumer_details || [], 'No consumers.');
    bindings.update(await GET(qbase + '/bindings'), 'No bindings.');
  };
}

// ---------- Admin ----------

function adminNav(current) {
  const items = [];
  if (isAdmin()) items.push(['users', 'Users'], ['vhosts', 'Virtual Hosts']);
  if (isPolicymaker()) items.push(['policies', 'Policies']);
  if (isAdmin()) items.push(['definitions', 'Definitions']);
  return h('nav', { class: 'subnav', 'aria-label': 'Admin' }, items.map(([k, t]) =>
    h('a', { href: '#/' + k, 'aria-current': k === current ? 'page' : false }, t)));
}

const TAGS = ['administrator', 'monitoring', 'policymaker', 'management', 'impersonator'];
function parseTags(s) { return String(s).split(/[\s,]+/).filter(Boolean); }

async function usersPage(root, p) {
  const users = table([
    { title: 'Name', render: (u) => h('a', { href: '#/users/' + enc(u.name) }, u.name) },
    { title: 'Tags', render: (u) => (Array.isArray(u.tags) ? u.tags : parseTags(u.tags)).map((t) => h('span', { class: 'tag' }, t)) },
    { title: 'Can access virtual hosts', render: (u) => u.vhosts.join(', ') || 'No access' },
    { title: 'Has password', render: (u) => (u.password_hash ? '●' : '○') },
  ]);
  const name = h('input', { name: 'username', required: true, autocomplete: 'off' });
  const pw = h('input', { name: 'password', type: 'password', autocomplete: 'new-password' });
  const tags = h('input', { name: 'tags', list: 'tag-list', placeholder: 'management' });
  const addForm = form('Add a user', [field('Username', name), field('Password', pw, 'Empty: the user cannot log in with a password.'),
    field('Tags', tags, 'Comma-separated: ' + TAGS.join(', ')), h('datalist', { id: 'tag-list' }, TAGS.map((t) => h('option', { value: t })))],
  'Add user', (f, out) => act(out, `Create user "${name.value}"?`, () => api('PUT', '/users/' + enc(name.value),
    pw.value ? { password: pw.value, tags: parseTags(tags.value).join(',') } : { password_hash: '', tags: parseTags(tags.value).join(',') }),
  () => `User "${name.value}" created.`));
  root.append(adminNav('users'), title('Users'), users.el, section('Add a user', addForm, true));
  p.refresh = async () => {
    const [us, perms] = await Promise.all([GET('/users'), GET('/permissions')]);
    for (const u of us) u.vhosts = perms.filter((x) => x.user === u.name).map((x) => x.vhost);
    users.update(us);
  };
}

async function userPage(root, p, name) {
  const vhosts = await vhostOptions();
  const details = h('table', { class: 'kv' });
  const perms = table([
    { title: 'Virtual host', render: (x) => x.vhost },
    { title: 'Configure regexp', render: (x) => h('span', { class: 'mono' }, x.configure) },
    { title: 'Write regexp', render: (x) => h('span', { class: 'mono' }, x.write) },
    { title: 'Read regexp', render: (x) => h('span', { class: 'mono' }, x.read) },
    { title: '', render: (x) => clearButton(`Clear the permissions of "${name}" in virtual host "${x.vhost}"?`, `/permissions/${enc(x.vhost)}/${enc(name)}`) },
  ]);
  const tperms = table([
    { title: 'Virtual host', render: (x) => x.vhost },
    { title: 'Exchange', render: (x) => x.exchange },
    { title: 'Write regexp', render: (x) => h('span', { class: 'mono' }, x.write) },
    { title: 'Read regexp', render: (x) => h('span', { class: 'mono' }, x.read) },
    { title: '', render: (x) => clearButton(`Clear the topic permissions of "${name}" in virtual host "${x.vhost}"?`, `/topic-permissions/${enc(x.vhost)}/${enc(name)}`) },
  ]);
  const pv = select('vhost', vhosts, '/');
  const conf = h('input', { name: 'configure', value: '.*' });
  const write = h('input', { name: 'write', value: '.*' });
  const read = h('input', { name: 'read', value: '.*' });
  const permForm = form('Set permission', [field('Virtual host', pv), field('Configure regexp', conf), field('Write regexp', write), field('Read regexp', read)],
    'Set permission', (f, out) => act(out, `Set the permissions of "${name}" in virtual host "${pv.value}"?`,
      () => api('PUT', `/permissions/${enc(pv.value)}/${enc(name)}`, { configure: conf.value, write: write.value, read: read.value }), 'Permission set.'));
  const tv = select('vhost', vhosts, '/');
  const tex = h('input', { name: 'exchange', value: 'amq.topic' });
  const tw = h('input', { name: 'write', value: '.*' });
  const tr = h('input', { name: 'read', value: '.*' });
  const topicForm = form('Set topic permission', [field('Virtual host', tv), field('Exchange', tex), field('Write regexp', tw), field('Read regexp', tr)],
    'Set topic permission', (f, out) => act(out, `Set the topic permissions of "${name}" on exchange "${tex.value}" in virtual host "${tv.value}"?`,
      () => api('PUT', `/topic-permissions/${enc(tv.value)}/${enc(name)}`, { exchange: tex.value, write: tw.value, read: tr.value }), 'Topic permission set.'));
  const tags = h('input', { name: 'tags', list: 'tag-list2' });
  const pw = h('input', { name: 'password', type: 'password', autocomplete: 'new-password' });
  let current = null;
  const updForm = form('Update this user', [field('Password', pw, 'Leave empty to keep the current password.'), field('Tags', tags, 'Comma-separated: ' + TAGS.join(', ')),
    h('datalist', { id: 'tag-list2' }, TAGS.map((t) => h('option', { value: t })))], 'Update user', (f, out) => act(out,
    `Update user "${name}"?`, () => api('PUT', '/users/' + enc(name), Object.assign({ tags: parseTags(tags.value).join(',') },
      pw.value ? { password: pw.value } : { password_hash: current.password_hash, hashing_algorithm: current.hashing_algorithm })), 'User updated.'));
  const delOut = resultLine();
  const del = h('div', { class: 'form' }, h('div', { class: 'actions' }, h('button', { type: 'button', class: 'danger', onclick: () => act(delOut,
    `Delete user "${name}"? Its permissions go with it.`, () => api('DELETE', '/users/' + enc(name)),
    () => { go('#/users', `User "${name}" deleted.`); return 'Deleted.'; }) }, 'Delete this user'), delOut));
  root.append(adminNav('users'), title('User ' + name), h('div', { class: 'scroll' }, details),
    h('h2', {}, 'Permissions'), perms.el, section('Set permission', permForm, false),
    h('h2', {}, 'Topic permissions'), tperms.el, section('Set topic permission', topicForm, false),
    section('Update this user', updForm, false), section('Delete this user', del, false));
  p.refresh = async () => {
    const u = await GET('/users/' + enc(name));
    if (!current) tags.value = (Array.isArray(u.tags) ? u.tags : parseTags(u.tags)).join(', ');
    current = u;
    details.replaceChildren(h('tbody', {}, h('tr', {}, h('th', { scope: 'row' }, 'Tags'), h('td', {}, (Array.isArray(u.tags) ? u.tags : parseTags(u.tags)).join(', ') || 'none')),
      h('tr', {}, h('th', { scope: 'row' }, 'Has password'), h('td', {}, u.password_hash ? 'yes' : 'no'))));
    perms.update(await GET(`/users/${enc(name)}/permissions`), 'No permissions: this user can access no virtual host.');
    tperms.update(await GET(`/users/${enc(name)}/topic-permissions`), 'No topic permissions (all topics allowed).');
  };
}

function clearButton(question, path, label) {
  const out = h('span', { role: 'status' });
  return [h('button', { type: 'button', class: 'secondary small', onclick: () => act(out, question, () => api('DELETE', path), label ? 'Deleted.' : 'Cleared.') }, label || 'Clear'), ' ', out];
}

async function vhostsPage(root, p) {
  const list = table([
    { title: 'Name', render: (v) => h('a', { href: '#/vhosts/' + enc(v.name) }, v.name) },
    { title: 'Description', render: (v) => v.description || '' },
    { title: 'Tags', render: (v) => (v.tags || []).map((t) => h('span', { class: 'tag' }, t)) },
    { title: 'Ready', num: true, render: (v) => fmtInt(v.messages_ready) },
    { title: 'Unacked', num: true, render: (v) => fmtInt(v.messages_unacknowledged) },
    { title: 'Total', num: true, render: (v) => fmtInt(v.messages) },
    { title: 'Limits', render: (v) => kvList(v.limits) },
  ]);
  const name = h('input', { name: 'name', required: true });
  const desc = h('input', { name: 'description' });
  const tags = h('input', { name: 'tags' });
  const addForm = form('Add a new virtual host', [field('Name', name), field('Description', desc), field('Tags', tags, 'Comma-separated')],
    'Add virtual host', (f, out) => act(out, `Create virtual host "${name.value}"?`,
      () => api('PUT', '/vhosts/' + enc(name.value), { description: desc.value, tags: parseTags(tags.value).join(',') }),
      () => `Virtual host "${name.value}" created.`));
  root.append(adminNav('vhosts'), title('Virtual Hosts'), list.el, section('Add a new virtual host', addForm, true));
  p.refresh = async () => {
    const [vs, limits] = await Promise.all([GET('/vhosts'), GET('/vhost-limits')]);
    for (const v of vs) v.limits = (limits.find((l) => l.vhost === v.name) || {}).value || {};
    list.update(vs);
  };
}

async function vhostPage(root, p, name) {
  const details = h('table', { class: 'kv' });
  const perms = table([
    { title: 'User', render: (x) => h('a', { href: '#/users/' + enc(x.user) }, x.user) },
    { title: 'Configure regexp', render: (x) => h('span', { class: 'mono' }, x.configure) },
    { title: 'Write regexp', render: (x) => h('span', { class: 'mono' }, x.write) },
    { title: 'Read regexp', render: (x) => h('span', { class: 'mono' }, x.read) },
  ]);
  const limits = table([
    { title: 'Limit', render: (x) => x.name },
    { title: 'Value', num: true, render: (x) => fmtInt(x.value) },
    { title: '', render: (x) => clearButton(`Clear limit ${x.name} of virtual host "${name}"?`, `/vhost-limits/${enc(name)}/${enc(x.name)}`) },
  ]);
  const lname = select('name', [['max-connections', 'max-connections'], ['max-queues', 'max-queues']], 'max-connections');
  const lval = h('input', { name: 'value', type: 'number', required: true });
  const limForm = form('Set limit', [field('Limit', lname), field('Value', lval, 'A negative value means no limit.')], 'Set limit',
    (f, out) => act(out, `Set ${lname.value} = ${lval.value} on virtual host "${name}"?`,
      () => api('PUT', `/vhost-limits/${enc(name)}/${enc(lname.value)}`, { value: Number(lval.value) }), 'Limit set.'));
  const delOut = resultLine();
  const del = h('div', { class: 'form' }, h('div', { class: 'actions' }, h('button', { type: 'button', class: 'danger', onclick: () => act(delOut,
    `Delete virtual host "${name}"? All its queues, exchanges, bindings and messages are lost.`, () => api('DELETE', '/vhosts/' + enc(name)),
    () => { go('#/vhosts', `Virtual host "${name}" deleted.`); return 'Deleted.'; }) }, 'Delete this virtual host'), delOut));
  root.append(adminNav('vhosts'), title('Virtual host ' + name), h('div', { class: 'scroll' }, details),
    h('h2', {}, 'Permissions'), perms.el, h('h2', {}, 'Limits'), limits.el, section('Set limit', limForm, false),
    section('Delete this virtual host', del, false));
  p.refresh = async () => {
    const v = await GET('/vhosts/' + enc(name));
    details.replaceChildren(h('tbody', {}, [['Description', v.description || ''], ['Tags', (v.tags || []).join(', ')],
      ['Default queue type', v.default_queue_type || 'classic'],
      ['Messages', `${fmtInt(v.messages)} total: ${fmtInt(v.messages_ready)} ready, ${fmtInt(v.messages_unacknowledged)} unacked`]]
      .map(([k, x]) => h('tr', {}, h('th', { scope: 'row' }, k), h('td', {}, x)))));
    perms.update(await GET(`/vhosts/${enc(name)}/permissions`), 'No user has permissions here.');
    const l = (await GET('/vhost-limits/' + enc(name)))[0];
    limits.update(Object.entries((l && l.value) || {}).map(([k, x]) => ({ name: k, value: x })), 'No limits.');
  };
}

async function policiesPage(root, p) {
  const list = table([
    { title: 'Virtual host', render: (x) => x.vhost },
    { title: 'Name', render: (x) => x.name },
    { title: 'Pattern', render: (x) => h('span', { class: 'mono' }, x.pattern) },
    { title: 'Apply to', render: (x) => x['apply-to'] },
    { title: 'Definition', render: (x) => kvList(x.definition) },
    { title: 'Priority', num: true, render: (x) => x.priority },
    { title: '', render: (x) => clearButton(`Delete policy "${x.name}" in virtual host "${x.vhost}"?`, `/policies/${enc(x.vhost)}/${enc(x.name)}`, 'Delete') },
  ]);
  const vhosts = await vhostOptions();
  const vh = select('vhost', vhosts, '/');
  const name = h('input', { name: 'name', required: true });
  const pattern = h('input', { name: 'pattern', required: true, placeholder: '^orders\\.' });
  const applyTo = select('apply-to', [['all', 'Exchanges and queues'], ['exchanges', 'Exchanges'], ['queues', 'Queues'],
    ['classic_queues', 'Classic queues'], ['quorum_queues', 'Quorum queues'], ['streams', 'Streams']], 'all');
  const priority = h('input', { name: 'priority', type: 'number', value: '0' });
  const def = h('textarea', { name: 'definition', placeholder: 'max-length = 1000\nmessage-ttl = 60000', required: true });
  const addForm = form('Add / update a policy', [field('Virtual host', vh), field('Name', name), field('Pattern', pattern, 'A regular expression over names'),
    field('Apply to', applyTo), field('Priority', priority), field('Definition', def, 'One per line: key = value')], 'Add / update policy', (f, out) => {
    let d;
    try { d = parseKv(def.value); } catch (e) { out.className = 'result bad'; out.textContent = 'Error: ' + e.message; return; }
    act(out, `Set policy "${name.value}" in virtual host "${vh.value}"?`,
      () => api('PUT', `/policies/${enc(vh.value)}/${enc(name.value)}`, { pattern: pattern.value, definition: d, priority: Number(priority.value) || 0, 'apply-to': applyTo.value }),
      () => `Policy "${name.value}" set.`);
  });
  root.append(adminNav('policies'), title('Policies'), list.el, section('Add / update a policy', addForm, true));
  p.refresh = async () => list.update(await GET('/policies'), 'No policies.');
}

async function definitionsPage(root) {
  const expOut = resultLine();
  const exportBtn = h('button', { type: 'button', id: 'export', onclick: async () => {
    try {
      const d = await GET('/definitions');
      const blob = new Blob([JSON.stringify(d, null, 2)], { type: 'application/json' });
      const a = h('a', { href: URL.createObjectURL(blob), download: `warren-definitions-${new Date().toISOString().slice(0, 10)}.json` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
      expOut.className = 'result ok';
      expOut.textContent = `Downloaded: ${counts(d)}.`;
    } catch (e) { expOut.className = 'result bad'; expOut.textContent = 'Error: ' + e.reason; }
  } }, 'Download broker definitions');
  const file = h('input', { type: 'file', name: 'file', accept: 'application/json,.json', required: true, id: 'definitions-file' });
  const importForm = form('Import definitions', [field('Definitions file', file, 'A JSON file exported from Warren or RabbitMQ.')], 'Upload broker definitions', async (f, out) => {
    const fl = file.files[0];
    if (!fl) { out.className = 'result bad'; out.textContent = 'Choose a file first.'; return; }
    const text = await fl.text();
    let parsed;
    try { parsed = JSON.parse(text); } catch (e) { out.className = 'result bad'; out.textContent = `Error: ${fl.name} is not JSON (${e.message}).`; return; }
    act(out, `Import the definitions in ${fl.name} (${counts(parsed)})? Existing objects with the same names are updated.`,
      () => api('POST', '/definitions', text), () => `Definitions imported from ${fl.name}: ${counts(parsed)}.`);
  });
  root.append(adminNav('definitions'), title('Definitions'),
    h('p', {}, 'Users, virtual hosts, permissions, policies, parameters, exchanges, queues and bindings, as RabbitMQ exports them.'),
    h('h2', {}, 'Export'), h('div', { class: 'form' }, h('div', { class: 'actions' }, exportBtn, expOut)),
    h('h2', {}, 'Import'), importForm);
}
function counts(d) {
  const keys = ['vhosts', 'users', 'permissions', 'policies', 'exchanges', 'queues', 'bindings'];
  return keys.filter((k) => Array.isArray(d[k])).map((k) => `${d[k].length} ${k}`).join(', ') || 'nothing';
}

// ---------- start ----------

function start() {
  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const btn = $('login-button');
    btn.disabled = true;
    $('login-status').textContent = '';
    try {
      await login($('username').value, $('password').value);
      $('password').value = '';
      showApp();
    } catch (e) {
      $('login-status').textContent = loginMessage(e);
    } finally {
      btn.disabled = false;
    }
  });
  $('logout').addEventListener('click', () => logout(''));
  // The skip link moves the focus; it must not change the route.
  document.querySelector('.skip').addEventListener('click', (ev) => { ev.preventDefault(); $('main').focus(); });
  window.addEventListener('hashchange', () => { $('flash').textContent = ''; route(); $('main').focus({ preventScroll: true }); });
  setInterval(tick, 1000);
  if (auth) {
    GET('/whoami').then((u) => { me = u; showApp(); }, (e) => logout(loginMessage(e)));
  } else {
    showLogin('');
  }
}

start();
