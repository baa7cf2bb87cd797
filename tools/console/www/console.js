// libsaga operator console: plain DOM, no framework, nothing fetched from
// elsewhere. Talks to the JSON admin API on the same server (console.h).
'use strict';
(function () {
  const $ = (id) => document.getElementById(id);
  const PAGE = 20;
  const state = { token: '', offset: 0, total: 0, selected: null };

  function readToken() {
    const m = /token=([^&]+)/.exec(location.hash);
    if (m) {
      sessionStorage.setItem('saga-token', decodeURIComponent(m[1]));
      history.replaceState(null, '', location.pathname);
    }
    return sessionStorage.getItem('saga-token') || '';
  }

  async function api(method, path, body) {
    const opts = { method, headers: { Authorization: 'Bearer ' + state.token } };
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    const r = await fetch('/api/' + path, opts);
    if (r.status === 401) {
      $('login').hidden = false;
      throw new Error('unauthorized: give the admin token');
    }
    const j = await r.json();
    if (!r.ok) throw new Error(j.message || j.error || r.statusText);
    return j;
  }

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function dur(ms) {
    if (ms < 1000) return ms + 'ms';
    if (ms < 60000) return (ms / 1000).toFixed(1) + 's';
    if (ms < 3600000) return Math.floor(ms / 60000) + 'm' + Math.floor(ms / 1000) % 60 + 's';
    if (ms < 86400000) return Math.floor(ms / 3600000) + 'h' + Math.floor(ms / 60000) % 60 + 'm';
    return Math.floor(ms / 86400000) + 'd' + Math.floor(ms / 3600000) % 24 + 'h';
  }

  async function loadCounts() {
    try {
      const s = await api('GET', 'stats');
      const box = $('counts');
      box.textContent = '';
      for (const [k, v] of Object.entries(s.states)) {
        const b = el('span', k + ' ' + v, 's-' + k);
        b.dataset.state = k;
        b.dataset.count = v;
        b.onclick = () => { $('f-state').value = k; state.offset = 0; loadList(); };
        box.appendChild(b);
      }
    } catch (e) { /* shown by the list */ }
  }

  async function loadDefs() {
    const defs = await api('GET', 'definitions');
    const sel = $('f-def');
    const seen = new Set();
    for (const d of defs) {
      if (seen.has(d.name)) continue;
      seen.add(d.name);
      const o = el('option', d.name);
      o.value = d.name;
      sel.appendChild(o);
    }
  }

  async function loadList() {
    const body = { state: $('f-state').value, definition: $('f-def').value,
                   offset: state.offset, limit: PAGE };
    const tb = $('sagas').querySelector('tbody');
    let res;
    try {
      res = await api('POST', 'sagas', body);
    } catch (e) {
      tb.textContent = '';
      const tr = el('tr');
      tr.appendChild(el('td', e.message, 'error'));
      tb.appendChild(tr);
      return;
    }
    state.total = res.total;
    tb.textContent = '';
    for (const s of res.sagas) {
      const tr = el('tr');
      tr.dataset.id = s.id;
      tr.dataset.state = s.state;
      if (s.id === state.selected) tr.classList.add('selected');
      tr.appendChild(el('td', s.id.slice(-12)));
      tr.appendChild(el('td', s.definition));
      tr.appendChild(el('td', s.state, 'state s-' + s.state));
      tr.appendChild(el('td', (s.step_name || s.step) +
        (s.direction === 'compensation' ? ' (undo)' : '')));
      tr.appendChild(el('td', dur(s.age_ms)));
      tr.appendChild(el('td', s.attempt));
      tr.appendChild(el('td', s.error || ''));
      tr.title = s.id;
      tr.onclick = () => showSaga(s.id);
      tb.appendChild(tr);
    }
    const last = Math.min(state.offset + res.sagas.length, res.total);
    $('page').textContent = res.total ? (state.offset + 1) + '–' + last + ' of ' + res.total : 'none';
    $('prev').disabled = state.offset === 0;
    $('next').disabled = state.offset + PAGE >= res.total;
  }

  // The definition drawn from its recorded shape: steps left to right, the
  // compensations under the steps that have one, the current step marked.
  function diagram(def, saga) {
    const NS = 'http://www.w3.org/2000/svg';
    const W = 150, H = 44, GAP = 40, X0 = 10, Y0 = 10, YC = 100;
    const n = def.steps.length;
    const svg = document.createElementNS(NS, 'svg');
    svg.setAttribute('width', X0 * 2 + n * W + (n - 1) * GAP);
    svg.setAttribute('height', YC + H + 10);
    svg.setAttribute('role', 'img');
    svg.setAttribute('aria-label', 'definition ' + def.name);
    const back = saga.direction === 'compensation';
    const active = ['RUNNING', 'COMPENSATING', 'FAILED'].includes(saga.state);
    function box(x, y, label, sub, cls, shape) {
      const g = document.createElementNS(NS, 'g');
      g.setAttribute('class', cls);
      let s;
      if (shape === 'hex') {
        s = document.createElementNS(NS, 'polygon');
        const p = [[x + 12, y], [x + W - 12, y], [x + W, y + H / 2], [x + W - 12, y + H],
                   [x + 12, y + H], [x, y + H / 2]];
        s.setAttribute('points', p.map((q) => q.join(',')).join(' '));
      } else {
        s = document.createElementNS(NS, 'rect');
        s.setAttribute('x', x); s.setAttribute('y', y);
        s.setAttribute('width', W); s.setAttribute('height', H);
        s.setAttribute('rx', shape === 'round' ? 18 : 3);
      }
      g.appendChild(s);
      const t1 = document.createElementNS(NS, 'text');
      t1.setAttribute('x', x + W / 2); t1.setAttribute('y', y + 18);
      t1.textContent = label;
      g.appendChild(t1);
      const t2 = document.createElementNS(NS, 'text');
      t2.setAttribute('x', x + W / 2); t2.setAttribute('y', y + 34);
      t2.textContent = sub;
      g.appendChild(t2);
      svg.appendChild(g);
      return g;
    }
    function line(x1, y1, x2, y2, cls) {
      const l = document.createElementNS(NS, 'line');
      l.setAttribute('x1', x1); l.setAttribute('y1', y1);
      l.setAttribute('x2', x2); l.setAttribute('y2', y2);
      if (cls) l.setAttribute('class', cls);
      svg.appendChild(l);
    }
    def.steps.forEach((st, i) => {
      const x = X0 + i * (W + GAP);
      const cur = active && i === saga.step;
      const cls = 'step ' + st.kind + (cur && !back ? ' current' : '');
      const shape = st.kind === 'pivot' ? 'hex' : st.kind === 'retriable' ? 'round' : 'rect';
      const g = box(x, Y0, st.name, st.kind + (st.service ? ' @' + st.service : ''), cls, shape);
      g.dataset.step = i;
      if (i + 1 < n) line(x + W, Y0 + H / 2, x + W + GAP, Y0 + H / 2);
      if (st.compensation) {
        const c = box(x, YC, 'undo ' + st.name, st.comp_command || 'compensation',
                      'comp' + (cur && back ? ' current' : ''), 'rect');
        c.dataset.comp = i;
        line(x + W / 2, Y0 + H, x + W / 2, YC, 'back');
      }
    });
    return svg;
  }

  async function showSaga(id) {
    state.selected = id;
    let r;
    try {
      r = await api('GET', 'sagas/' + encodeURIComponent(id));
    } catch (e) {
      $('action-result').textContent = e.message;
      return;
    }
    const s = r.saga;
    $('detail').hidden = false;
    $('detail').dataset.id = s.id;
    $('detail').dataset.state = s.state;
    $('d-id').textContent = s.id;
    $('d-state').textContent = s.state;
    $('d-state').className = 'state s-' + s.state;
    $('d-error').textContent = s.error || '';
    $('d-data').textContent = JSON.stringify(r.data, null, 2);
    const dg = $('diagram');
    dg.textContent = '';
    if (r.definition) dg.appendChild(diagram(r.definition, s));
    else dg.appendChild(el('p', 'definition shape not recorded'));
    const tb = $('timeline').querySelector('tbody');
    tb.textContent = '';
    for (const e of r.journal) {
      const tr = el('tr');
      tr.appendChild(el('td', new Date(e.at_ms).toISOString()));
      tr.appendChild(el('td', e.seq > 1 ? dur(e.since_prev_ms) : ''));
      tr.appendChild(el('td', e.step < 0 ? '–' : e.step + ' ' + (e.step_name || '')));
      tr.appendChild(el('td', e.attempt || '–'));
      tr.appendChild(el('td', e.event));
      tr.appendChild(el('td', e.error || '', e.error ? 'error' : ''));
      tb.appendChild(tr);
    }
    const failed = s.state === 'FAILED';
    $('btn-retry').disabled = !failed;
    $('btn-resolve').disabled = !failed;
    $('btn-compensate').disabled = !(failed || (s.state === 'RUNNING' && !s.pivoted));
    for (const tr of $('sagas').querySelectorAll('tbody tr'))
      tr.classList.toggle('selected', tr.dataset.id === id);
  }

  async function act(verb) {
    const id = state.selected;
    const body = { reason: $('reason').value };
    if (verb === 'resolve') body.as = $('resolve-as').value;
    const out = $('action-result');
    out.textContent = verb + '…';
    try {
      const r = await api('POST', 'sagas/' + encodeURIComponent(id) + '/' + verb, body);
      out.textContent = verb + ' done by ' + r.applied_by;
    } catch (e) {
      out.textContent = verb + ' refused: ' + e.message;
    }
    await refresh();
  }

  async function refresh() {
    await loadCounts();
    await loadList();
    if (state.selected) await showSaga(state.selected);
  }

  function start() {
    state.token = readToken();
    $('login').onsubmit = (ev) => {
      ev.preventDefault();
      state.token = $('token').value;
      sessionStorage.setItem('saga-token', state.token);
      $('login').hidden = true;
      init();
    };
    if (!state.token) { $('login').hidden = false; return; }
    init();
  }

  let timer = null;
  async function init() {
    try { await loadDefs(); } catch (e) { /* the list shows the error */ }
    $('f-state').onchange = $('f-def').onchange = () => { state.offset = 0; loadList(); };
    $('prev').onclick = () => { state.offset = Math.max(0, state.offset - PAGE); loadList(); };
    $('next').onclick = () => { state.offset += PAGE; loadList(); };
    $('btn-retry').onclick = () => act('retry');
    $('btn-compensate').onclick = () => act('compensate');
    $('btn-resolve').onclick = () => act('resolve');
    await refresh();
    if (!timer) timer = setInterval(refresh, 2000);
  }

  start();
})();
