// thermo dashboard: one metric, one stat, charted over a time range.
//
// Plain browser JavaScript, no framework and no build step. Talks to the read service's
// GET /api/v1/metrics (names, types, tag keys) and GET /api/v1/query (see docs/api.md), and draws
// the answer with uPlot (the global `uPlot`, vendored next to this file).
//
// The whole view lives in the URL hash (#metric=..&stat=..&where=k:v,..&group_by=..&range=1h or
// &from=..&to=..&refresh=10&tz=utc), so a view can be bookmarked, shared and reloaded; the browser's
// Back button undoes a change. The API key, when the service needs one, is kept in localStorage only.
(function () {
  'use strict';

  // ---- constants ----------------------------------------------------------------------------

  /** Relative ranges, in seconds. */
  const RANGES = {
    '15m': 900, '1h': 3600, '6h': 21600, '24h': 86400,
    '7d': 7 * 86400, '30d': 30 * 86400, '1y': 365 * 86400,
  };
  const DEFAULT_RANGE = '1h';

  /** Most buckets a chart asks for (the service allows max_points, 11000 by default). */
  const MAX_POINTS = 1500;

  /**
   * Steps the dashboard picks from, smallest first. Up to 120 s they read 1-minute windows; the
   * multiples of 300 read the 5-minute roll-ups, the multiples of 3600 the 1-hour roll-ups (the
   * service reads the coarsest windows that divide the step), so long ranges are served by the
   * cold 5m/1h objects instead of millions of minutes.
   */
  const STEPS = [60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800];

  /** The stats each metric type supports (docs/api.md, "Stats per metric type"), default first. */
  const STATS = {
    counter: ['rate', 'sum', 'count', 'avg'],
    gauge: ['avg', 'last', 'min', 'max', 'sum', 'count'],
    histogram: ['p99', 'p90', 'p50', 'avg', 'min', 'max', 'rate', 'count', 'sum'],
    set: ['count'],
  };
  /** For a metric the name list does not hold (it may still be in cold storage): everything. */
  const ANY_STATS = ['sum', 'count', 'avg', 'min', 'max', 'last', 'rate', 'p50', 'p90', 'p99'];
  const STAT_HELP = {
    sum: 'sum per bucket', count: 'count per bucket', avg: 'average', min: 'minimum',
    max: 'maximum', last: 'last value', rate: 'per second',
  };
  const PERCENTILE = /^p(\d{1,3})(\.\d+)?$/;
  const OTHER_PCT = '__pct';

  const DEFAULT_REFRESH = 10;

  const PALETTE = ['#2f6fde', '#e8772e', '#2ca02c', '#d62728', '#9467bd',
    '#8c564b', '#e377c2', '#5f6b7a', '#bcbd22', '#17becf'];

  const KEY_STORE = 'thermo.apiKey';

  const $ = (id) => document.getElementById(id);
  const el = {
    range: $('range'), absolute: $('absolute'), from: $('from'), to: $('to'),
    refresh: $('refresh'), utc: $('utc'), reload: $('reload'),
    keybtn: $('keybtn'), keyform: $('keyform'), apikey: $('apikey'), keyclear: $('keyclear'),
    metric: $('metric'), metricList: $('metric-list'), mtype: $('mtype'),
    stat: $('stat'), pctField: $('pct-field'), pct: $('pct'), group: $('group'),
    filters: $('filters'), addfilter: $('addfilter'), tagkeyList: $('tagkey-list'),
    error: $('error'), title: $('title'), chart: $('chart'), empty: $('empty'),
    status: $('status'), apilink: $('apilink'),
  };

  // ---- state and the URL hash ---------------------------------------------------------------

  /**
   * The view. `where` is a list of [key, value] pairs; `range` is a key of RANGES or 'abs' (then
   * `from` and `to` are unix seconds).
   */
  let state = defaultState();

  function defaultState() {
    return {
      metric: '', stat: '', where: [], group: '', range: DEFAULT_RANGE,
      from: null, to: null, refresh: DEFAULT_REFRESH, utc: false,
    };
  }

  // Leaves ':' '/' ',' '*' readable in the hash; everything else as encodeURIComponent does.
  function enc(v) {
    return encodeURIComponent(v).replace(/%3A/gi, ':').replace(/%2F/gi, '/').replace(/%2C/gi, ',');
  }

  function toHash(s) {
    const parts = [];
    if (s.metric) parts.push('metric=' + enc(s.metric));
    if (s.stat) parts.push('stat=' + enc(s.stat));
    const where = whereParam(s.where);
    if (where) parts.push('where=' + enc(where));
    if (s.group) parts.push('group_by=' + enc(s.group));
    if (s.range === 'abs') {
      parts.push('from=' + isoUtc(s.from), 'to=' + isoUtc(s.to));
    } else {
      parts.push('range=' + s.range);
    }
    if (s.refresh !== DEFAULT_REFRESH) parts.push('refresh=' + s.refresh);
    if (s.utc) parts.push('tz=utc');
    return parts.join('&');
  }

  function fromHash(hash) {
    const s = defaultState();
    const raw = {};
    for (const part of hash.replace(/^#/, '').split('&')) {
      if (!part) continue;
      const i = part.indexOf('=');
      const k = i < 0 ? part : part.slice(0, i);
      let v = i < 0 ? '' : part.slice(i + 1);
      try { v = decodeURIComponent(v); } catch (e) { /* keep it as typed */ }
      raw[k] = v;
    }
    s.metric = (raw.metric || '').trim();
    s.stat = (raw.stat || '').trim();
    s.where = parseWhere(raw.where || '');
    s.group = (raw.group_by || '').trim();
    const from = parseTime(raw.from);
    const to = parseTime(raw.to);
    if (from !== null && to !== null && from < to) {
      s.range = 'abs';
      s.from = from;
      s.to = to;
    } else if (raw.range in RANGES) {
      s.range = raw.range;
    }
    if (raw.refresh !== undefined) {
      const r = Number(raw.refresh);
      if (Number.isFinite(r) && r >= 0) s.refresh = Math.round(r);
    }
    s.utc = raw.tz === 'utc';
    return s;
  }

  function parseWhere(w) {
    const pairs = [];
    for (const part of w.split(',')) {
      if (!part) continue;
      const i = part.indexOf(':');
      pairs.push(i < 0 ? [part, ''] : [part.slice(0, i), part.slice(i + 1)]);
    }
    return pairs;
  }

  function whereParam(pairs) {
    return pairs.filter(([k]) => k !== '').map(([k, v]) => k + ':' + v).join(',');
  }

  /** Unix seconds, RFC 3339, or null. */
  function parseTime(v) {
    if (v === undefined || v === '') return null;
    if (/^\d+$/.test(v)) return Number(v);
    const ms = Date.parse(v);
    return Number.isFinite(ms) ? Math.floor(ms / 1000) : null;
  }

  function isoUtc(secs) {
    return new Date(secs * 1000).toISOString().replace('.000Z', 'Z');
  }

  /** Records the view in the URL (a new history entry, so Back undoes it) and queries again. */
  function commit() {
    const hash = '#' + toHash(state);
    if (location.hash !== hash) history.pushState(null, '', hash);
    renderControls();
    load(false);
  }

  function onHashChange() {
    const next = fromHash(location.hash);
    if (toHash(next) === toHash(state)) return;
    state = next;
    renderControls();
    load(false);
  }

  // ---- time range and step ------------------------------------------------------------------

  /**
   * The seconds to ask for: [from, to) and the step, from the state and the clock. `from` is put
   * on a bucket boundary, so the first bucket is a whole one. For a counting stat over a relative
   * range, the bucket still open at the end is left out (`openLeftOut`): a sum or rate of a
   * quarter-filled 6-hour bucket would show as a steep drop. (With 1-minute steps there is
   * nothing to leave out: the agent sends a minute only after it has closed.)
   */
  function timeWindow() {
    let from, to;
    let openLeftOut = false;
    if (state.range === 'abs') {
      from = state.from;
      to = state.to;
    } else {
      to = Math.floor(Date.now() / 1000);
      from = to - RANGES[state.range];
    }
    const step = pickStep(to - from);
    const info = metricInfo();
    if (state.range !== 'abs' && step > 60 && isCounting(currentStat(), info && info.type)) {
      openLeftOut = to % step !== 0;
      to -= to % step;
    }
    return { from: Math.floor(from / step) * step, to, step, openLeftOut };
  }

  /** Stats that add up over time (a bucket without data is 0, a partial bucket is too low). */
  function isCounting(stat, type) {
    return type !== 'gauge' && ['sum', 'count', 'rate'].includes(stat);
  }

  /** The smallest step of STEPS that keeps the range within MAX_POINTS buckets. */
  function pickStep(seconds) {
    for (const s of STEPS) {
      if (Math.ceil(seconds / s) + 1 <= MAX_POINTS) return s;
    }
    const day = 86400;
    return Math.ceil(seconds / MAX_POINTS / day) * day;
  }

  /** The windows the service reads for a step (the coarsest of 1h, 5m, 1m dividing it). */
  function resolutionOf(step) {
    if (step % 3600 === 0) return '1h';
    if (step % 300 === 0) return '5m';
    return '1m';
  }

  // ---- talking to the service ---------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message, param) {
      super(message);
      this.status = status;
      this.param = param || null;
    }
  }

  function apiKey() {
    try { return localStorage.getItem(KEY_STORE) || ''; } catch (e) { return ''; }
  }

  /** GET `path?params`, answering the parsed JSON or throwing an ApiError with the service's message. */
  async function api(path, params, signal) {
    const url = path + (params ? '?' + params.toString() : '');
    const headers = { Accept: 'application/json' };
    const key = apiKey();
    if (key) headers.Authorization = 'Bearer ' + key;
    let resp;
    try {
      resp = await fetch(url, { headers, signal, cache: 'no-store' });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new ApiError(0, 'cannot reach the read service (' + e.message + ')');
    }
    const text = await resp.text();
    let body = null;
    try { body = JSON.parse(text); } catch (e) { /* not JSON: reported below */ }
    if (!resp.ok) {
      const msg = body && typeof body.error === 'string'
        ? body.error
        : (text.trim().slice(0, 400) || resp.statusText || 'no message');
      throw new ApiError(resp.status, msg, body && body.param);
    }
    if (body === null) throw new ApiError(resp.status, 'the answer is not JSON: ' + text.slice(0, 200));
    return body;
  }

  function queryParams(w) {
    const p = new URLSearchParams();
    p.set('metric', state.metric);
    p.set('stat', currentStat());
    p.set('from', String(w.from));
    p.set('to', String(w.to));
    p.set('step', String(w.step));
    const where = whereParam(state.where);
    if (where) p.set('where', where);
    if (state.group) p.set('group_by', state.group);
    return p;
  }

  // ---- the metric list ----------------------------------------------------------------------

  /** name -> {name, type, tag_keys}, from GET /api/v1/metrics. */
  let metrics = new Map();
  let metricsLoaded = 0;

  async function loadMetrics() {
    try {
      const body = await api('/api/v1/metrics');
      metrics = new Map((body.metrics || []).map((m) => [m.name, m]));
      metricsLoaded = Date.now();
      el.metricList.replaceChildren(...[...metrics.values()].map((m) => {
        const o = document.createElement('option');
        o.value = m.name;
        o.label = m.type + (m.tag_keys.length ? ' · ' + m.tag_keys.join(', ') : '');
        return o;
      }));
      el.metric.placeholder = metrics.size
        ? 'type to search ' + metrics.size + ' metric' + (metrics.size === 1 ? '' : 's') + '…'
        : 'no metrics yet';
      renderControls();
    } catch (e) {
      showError(e, 'listing metrics');
    }
  }

  function metricInfo() {
    return metrics.get(state.metric) || null;
  }

  function statsFor(info) {
    return info ? STATS[info.type] || ANY_STATS : ANY_STATS;
  }

  function percentilesAllowed(info) {
    return !info || info.type === 'histogram';
  }

  /** The stat to send: the state's, else the type's default. */
  function currentStat() {
    if (state.stat) return state.stat;
    return statsFor(metricInfo())[0];
  }

  // ---- controls -----------------------------------------------------------------------------

  function option(value, text, selected) {
    const o = document.createElement('option');
    o.value = value;
    o.textContent = text;
    if (selected) o.selected = true;
    return o;
  }

  /** Brings every control in line with `state` (and the chosen metric's type and tag keys). */
  function renderControls() {
    const info = metricInfo();
    if (document.activeElement !== el.metric) el.metric.value = state.metric;
    el.mtype.hidden = !info;
    el.mtype.textContent = info ? info.type : '';

    // stat: what the type supports, plus any percentile for histograms
    const stat = currentStat();
    const stats = statsFor(info);
    const custom = !stats.includes(stat);
    const pctOk = percentilesAllowed(info);
    const typedPct = custom && pctOk && PERCENTILE.test(stat); // e.g. p99.9, in the text box
    const opts = stats.map((s) => option(s, s + (STAT_HELP[s] ? ' — ' + STAT_HELP[s] : ''), s === stat));
    if (pctOk) opts.push(option(OTHER_PCT, 'other percentile…', typedPct));
    // A stat from the URL that this type does not have: shown as chosen (the service says why not).
    if (custom && !typedPct) opts.push(option(stat, stat + (info ? ' (not for a ' + info.type + ')' : ''), true));
    el.stat.replaceChildren(...opts);
    el.pctField.hidden = !typedPct;
    if (typedPct && document.activeElement !== el.pct) el.pct.value = stat;

    // group by: none, each tag key, every series
    const keys = info ? info.tag_keys : [];
    const groups = [option('', 'nothing (one line)', state.group === '')];
    for (const k of keys) groups.push(option(k, k, state.group === k));
    groups.push(option('*', 'every series (*)', state.group === '*'));
    if (state.group && state.group !== '*' && !keys.includes(state.group)) {
      groups.push(option(state.group, state.group, true));
    }
    el.group.replaceChildren(...groups);

    el.tagkeyList.replaceChildren(...keys.map((k) => option(k, k)));
    renderFilters();

    // time range and refresh
    el.range.value = state.range;
    el.absolute.hidden = state.range !== 'abs';
    if (state.range === 'abs') {
      el.from.value = toLocalInput(state.from);
      el.to.value = toLocalInput(state.to);
    }
    if (![...el.refresh.options].some((o) => o.value === String(state.refresh))) {
      el.refresh.append(option(String(state.refresh), state.refresh + ' s'));
    }
    el.refresh.value = String(state.refresh);
    el.refresh.title = state.range === 'abs' ? 'an absolute range is not refreshed' : '';
    el.refresh.disabled = state.range === 'abs';
    el.utc.checked = state.utc;
  }

  /** One row per [key, value] of state.where; left alone when they already show it (being edited). */
  function renderFilters() {
    const shown = [...el.filters.querySelectorAll('.filter')].map((row) =>
      [...row.querySelectorAll('input')].map((i) => i.value.trim()));
    if (JSON.stringify(shown) === JSON.stringify(state.where)) return;
    el.filters.replaceChildren(...state.where.map(([k, v], i) => filterRow(k, v, i)));
  }

  function filterRow(key, value, i) {
    const row = document.createElement('span');
    row.className = 'filter';
    const k = document.createElement('input');
    k.value = key;
    k.size = Math.max(4, key.length);
    k.placeholder = 'tag';
    k.setAttribute('list', 'tagkey-list');
    k.spellcheck = false;
    const v = document.createElement('input');
    v.value = value;
    v.size = Math.max(6, value.length);
    v.placeholder = 'value';
    v.spellcheck = false;
    const listId = 'tagvals-' + i;
    const list = document.createElement('datalist');
    list.id = listId;
    v.setAttribute('list', listId);
    const colon = document.createElement('span');
    colon.textContent = ':';
    const del = document.createElement('button');
    del.type = 'button';
    del.textContent = '×';
    del.title = 'remove this filter';
    row.append(k, colon, v, list, del);

    // A new key is applied once it has a value (or when the value is committed empty).
    k.addEventListener('change', () => {
      state.where[i] = [k.value.trim(), v.value.trim()];
      suggestValues(k.value.trim(), list);
      if (v.value.trim() !== '') commit();
    });
    v.addEventListener('change', () => {
      state.where[i] = [k.value.trim(), v.value.trim()];
      commit();
    });
    v.addEventListener('focus', () => suggestValues(k.value.trim(), list));
    del.addEventListener('click', () => {
      state.where.splice(i, 1);
      commit();
    });
    return row;
  }

  /** Fills `list` with the values tag `key` has in the range (one grouped count query, cached). */
  const valueCache = new Map();
  async function suggestValues(key, list) {
    if (!key || !state.metric) return;
    const w = timeWindow();
    const span = w.to - w.from;
    const step = Math.ceil(span / 3600) * 3600; // one or two 1-hour aligned buckets
    const cacheKey = [state.metric, key, state.range, state.from, state.to].join('\u0000');
    let values = valueCache.get(cacheKey);
    if (!values) {
      try {
        const p = new URLSearchParams({
          metric: state.metric, stat: 'count', group_by: key,
          from: String(w.from), to: String(w.to), step: String(step),
        });
        const body = await api('/api/v1/query', p);
        values = body.series.map((s) => s.tags[key]).filter((x) => x !== undefined);
        valueCache.set(cacheKey, values);
      } catch (e) {
        return; // only suggestions; the query itself reports errors
      }
    }
    list.replaceChildren(...values.map((x) => option(x, x)));
  }

  /** datetime-local value for unix seconds, in local time or UTC. */
  function toLocalInput(secs) {
    if (secs === null) return '';
    const d = new Date(secs * 1000);
    if (state.utc) return d.toISOString().slice(0, 16);
    const off = d.getTimezoneOffset() * 60000;
    return new Date(d.getTime() - off).toISOString().slice(0, 16);
  }

  function fromLocalInput(v) {
    if (!v) return null;
    const ms = state.utc ? Date.parse(v + 'Z') : Date.parse(v);
    return Number.isFinite(ms) ? Math.floor(ms / 1000) : null;
  }

  function wireControls() {
    el.metric.addEventListener('change', () => {
      const name = el.metric.value.trim();
      if (name === state.metric) return;
      state.metric = name;
      const after = metricInfo();
      // Keep the stat if the new type supports it; otherwise the type's default.
      if (state.stat && !(statsFor(after).includes(state.stat)
        || (percentilesAllowed(after) && PERCENTILE.test(state.stat)))) state.stat = '';
      // Tag filters and grouping of another metric rarely apply.
      const keys = after ? after.tag_keys : [];
      state.where = state.where.filter(([k]) => !after || keys.includes(k));
      if (state.group && state.group !== '*' && after && !keys.includes(state.group)) state.group = '';
      commit();
    });
    el.metric.addEventListener('focus', () => {
      if (Date.now() - metricsLoaded > 30000) loadMetrics();
    });
    el.metric.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') el.metric.dispatchEvent(new Event('change'));
    });

    el.stat.addEventListener('change', () => {
      if (el.stat.value === OTHER_PCT) {
        el.pctField.hidden = false;
        el.pct.focus();
        return;
      }
      state.stat = el.stat.value;
      el.pct.value = '';
      commit();
    });
    el.pct.addEventListener('change', () => {
      let v = el.pct.value.trim().toLowerCase();
      if (v && !v.startsWith('p')) v = 'p' + v;
      if (!v) return;
      state.stat = v; // the service says whether it is a valid percentile
      commit();
    });

    el.group.addEventListener('change', () => {
      state.group = el.group.value;
      commit();
    });
    el.addfilter.addEventListener('click', () => {
      state.where.push(['', '']); // not in the query (nor the URL) until it has a key
      renderFilters();
      const inputs = el.filters.querySelectorAll('.filter:last-child input');
      if (inputs.length) inputs[0].focus();
    });

    el.range.addEventListener('change', () => {
      if (el.range.value === 'abs') {
        const w = timeWindow();
        state.range = 'abs';
        state.from = Math.floor(w.from / 60) * 60;
        state.to = Math.ceil(w.to / 60) * 60;
      } else {
        state.range = el.range.value;
        state.from = state.to = null;
      }
      commit();
    });
    const absChanged = () => {
      const from = fromLocalInput(el.from.value);
      const to = fromLocalInput(el.to.value);
      if (from === null || to === null) return;
      if (from >= to) {
        showMessage('the time range: "from" must be before "to"', 'from');
        return;
      }
      state.from = from;
      state.to = to;
      commit();
    };
    el.from.addEventListener('change', absChanged);
    el.to.addEventListener('change', absChanged);

    el.refresh.addEventListener('change', () => {
      state.refresh = Number(el.refresh.value);
      commit();
    });
    el.utc.addEventListener('change', () => {
      state.utc = el.utc.checked;
      destroyChart(); // the axis time zone is fixed when a chart is made
      commit();
    });
    el.reload.addEventListener('click', () => loadMetrics().then(() => load(false)));

    el.keybtn.addEventListener('click', () => {
      el.keyform.hidden = !el.keyform.hidden;
      if (!el.keyform.hidden) el.apikey.focus();
    });
    el.keyform.addEventListener('submit', (e) => {
      e.preventDefault();
      try { localStorage.setItem(KEY_STORE, el.apikey.value.trim()); } catch (err) { /* private mode */ }
      el.apikey.value = '';
      el.keyform.hidden = true;
      renderKeyButton();
      loadMetrics().then(() => load(false));
    });
    el.keyclear.addEventListener('click', () => {
      try { localStorage.removeItem(KEY_STORE); } catch (err) { /* private mode */ }
      el.apikey.value = '';
      renderKeyButton();
    });

    window.addEventListener('hashchange', onHashChange);
    window.addEventListener('popstate', onHashChange);
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden && state.refresh > 0 && Date.now() - lastLoad > state.refresh * 1000) load(true);
    });
  }

  function renderKeyButton() {
    el.keybtn.textContent = apiKey() ? 'API key ✓' : 'API key';
  }

  // ---- errors -------------------------------------------------------------------------------

  const PARAM_CONTROLS = {
    metric: () => [el.metric], stat: () => [el.stat, el.pct], where: () => [el.filters],
    group_by: () => [el.group], step: () => [el.range], from: () => [el.range, el.from],
    to: () => [el.range, el.to], resolution: () => [el.range],
  };

  /** Shows an error of the service (or the network) above the chart, naming what it was doing. */
  function showError(e, what) {
    if (!(e instanceof ApiError)) {
      showMessage((what || 'request') + ' failed: ' + String(e && e.message ? e.message : e));
      return;
    }
    let text = (what || 'request') + ' failed' + (e.status ? ' (HTTP ' + e.status + ')' : '') + ': ' + e.message;
    if (e.status === 401) {
      text += '\nThis read service needs an API key: enter it with the "API key" button.';
      el.keyform.hidden = false;
    }
    showMessage(text, e.param);
  }

  /** Shows `text` above the chart and marks the control of the query parameter `param`. */
  function showMessage(text, param) {
    clearError();
    for (const c of (PARAM_CONTROLS[param] || (() => []))()) c.classList.add('invalid');
    el.error.textContent = text;
    el.error.hidden = false;
  }

  function clearError() {
    el.error.hidden = true;
    el.error.textContent = '';
    for (const c of document.querySelectorAll('.invalid')) c.classList.remove('invalid');
  }

  // ---- loading ------------------------------------------------------------------------------

  let seq = 0;
  let inflight = null;
  let timer = null;
  let lastLoad = 0;

  /**
   * Queries the service for the current view and draws it. `background`: an auto-refresh, which
   * keeps the chart (and the legend's hidden series) and only replaces the data.
   */
  async function load(background) {
    clearTimeout(timer);
    if (inflight) inflight.abort();
    const mine = ++seq;
    el.apilink.hidden = true;
    if (!state.metric) {
      if (metricsLoaded) clearError(); // else: keep why the list failed
      destroyChart();
      el.title.replaceChildren();
      showEmpty(metrics.size || !metricsLoaded
        ? 'Pick a metric above to chart it.'
        : 'This tenant has no metrics yet. Send some StatsD lines to an agent (see the README).');
      offerMetrics();
      el.status.textContent = '';
      return;
    }
    const w = timeWindow();
    const params = queryParams(w);
    el.apilink.href = '/api/v1/query?' + params.toString();
    el.apilink.hidden = false;
    const ctrl = new AbortController();
    inflight = ctrl;
    if (!background) {
      el.chart.classList.add('loading');
      el.status.textContent = 'loading…';
    }
    const started = performance.now();
    try {
      const answer = await api('/api/v1/query', params, ctrl.signal);
      if (mine !== seq) return;
      clearError();
      draw(answer, w, background);
      renderStatus(answer, w, performance.now() - started);
    } catch (e) {
      if (e.name === 'AbortError' || mine !== seq) return;
      showError(e, 'query');
      if (!background) {
        // The chart on screen would belong to another query: take it away.
        destroyChart();
        el.title.replaceChildren();
        showEmpty('No chart: the query failed (see the message above).');
      }
      el.status.textContent = 'last attempt failed at ' + clock(Date.now() / 1000, true);
    } finally {
      if (mine === seq) {
        inflight = null;
        lastLoad = Date.now();
        el.chart.classList.remove('loading');
        schedule();
      }
    }
  }

  function schedule() {
    clearTimeout(timer);
    if (state.refresh > 0 && state.range !== 'abs') {
      timer = setTimeout(() => {
        if (document.hidden) return; // picked up again by visibilitychange
        load(true);
      }, state.refresh * 1000);
    }
  }

  function renderStatus(answer, w, ms) {
    const n = answer.series.length;
    const pts = answer.series.reduce((a, s) => a + s.points.length, 0);
    const bits = [
      'step ' + duration(answer.step) + ' (' + resolutionOf(answer.step) + ' windows)'
        + (w.openLeftOut ? ', the open bucket from ' + clock(w.to, false).slice(11) + ' left out' : ''),
      n + ' series, ' + pts + ' points',
      Math.round(ms) + ' ms',
      'updated ' + clock(Date.now() / 1000, true),
      state.refresh > 0 && state.range !== 'abs' ? 'auto-refresh every ' + duration(state.refresh) : 'auto-refresh off',
    ];
    el.status.textContent = bits.join(' · ');
  }

  // ---- the chart ----------------------------------------------------------------------------

  let chart = null;
  let chartKey = '';
  /** The range the chart shows (its x scale spans all of it, even where there is no data). */
  let shown = null;

  function destroyChart() {
    if (chart) chart.destroy();
    chart = null;
    chartKey = '';
  }

  function showEmpty(text) {
    el.empty.textContent = text;
    el.empty.hidden = !text;
  }

  /** Under "Pick a metric": a link per metric (the first 40), keeping the rest of the view. */
  function offerMetrics() {
    if (!metrics.size) return;
    const list = document.createElement('div');
    list.className = 'pick';
    for (const m of [...metrics.values()].slice(0, 40)) {
      const a = document.createElement('a');
      a.href = '#' + toHash({ ...state, metric: m.name, stat: '', where: [], group: '' });
      a.textContent = m.name;
      a.title = m.type;
      list.append(a);
    }
    el.empty.append(list);
  }

  function seriesLabel(tags) {
    const keys = Object.keys(tags);
    if (state.group === '' && keys.length === 0) return state.metric;
    if (keys.length === 0) return '(without ' + (state.group === '*' ? 'tags' : state.group) + ')';
    return keys.map((k) => k + '=' + tags[k]).join(', ');
  }

  function colour(i) {
    if (i < PALETTE.length) return PALETTE[i];
    return 'hsl(' + ((i * 137.508) % 360).toFixed(0) + ', 62%, 45%)';
  }

  /**
   * uPlot wants one x array and one y array per series, aligned: the x values are every bucket of
   * the range (so a missing bucket is a gap, not a line across it), plus any point outside them.
   * The service leaves out buckets without data.
   */
  function align(answer, w) {
    const step = answer.step;
    const xs = new Set();
    for (let t = Math.floor(w.from / step) * step; t < w.to; t += step) xs.add(t);
    for (const s of answer.series) for (const [t] of s.points) xs.add(t);
    const x = [...xs].sort((a, b) => a - b);
    const index = new Map(x.map((t, i) => [t, i]));
    let first = x.length;
    let last = -1;
    const ys = answer.series.map((s) => {
      const y = new Array(x.length).fill(null);
      for (const [t, v] of s.points) {
        const i = index.get(t);
        y[i] = v;
        first = Math.min(first, i);
        last = Math.max(last, i);
      }
      return y;
    });
    // A bucket without data of a counting stat (a counter's or histogram's sum, count or rate, a
    // set's count) means nothing happened: draw it as 0 rather than a gap. Only between the first
    // and the last bucket with data, so that the open minute at the end is not shown as a drop.
    if (isCounting(answer.stat, answer.type)) {
      for (const y of ys) for (let i = first; i <= last; i++) if (y[i] === null) y[i] = 0;
    }
    return [x, ...ys];
  }

  function renderTitle(answer) {
    const h = [];
    const main = document.createElement('span');
    main.textContent = answer.stat + ' of ' + answer.metric;
    h.push(main);
    const sub = document.createElement('span');
    sub.className = 'sub';
    const bits = [answer.type];
    const where = whereParam(state.where);
    if (where) bits.push('where ' + where.replace(/,/g, ', '));
    if (state.group) bits.push('by ' + (state.group === '*' ? 'series' : state.group));
    if (answer.stat === 'rate') bits.push('per second');
    bits.push(duration(answer.step) + ' buckets');
    sub.textContent = bits.join(' · ');
    h.push(sub);
    const src = document.createElement('span');
    const sources = answer.sources || [];
    const hot = sources.includes('hot');
    const cold = sources.includes('cold');
    src.className = 'badge src ' + (hot && cold ? 'both' : hot ? 'hot' : cold ? 'cold' : 'none');
    src.textContent = hot && cold
      ? 'served by hot + cold (objects)'
      : hot ? 'served by hot' : cold ? 'served by cold (objects)' : 'no data matched';
    src.title = 'the stores that served data for this answer ("sources": ' + JSON.stringify(sources) + ')';
    h.push(src);
    el.title.replaceChildren(...h);
  }

  function chartSize() {
    const width = Math.max(320, el.chart.clientWidth || document.body.clientWidth - 32);
    const top = el.chart.getBoundingClientRect().top;
    const height = Math.max(240, Math.min(640, window.innerHeight - top - 95));
    return { width, height };
  }

  function draw(answer, w, background) {
    renderTitle(answer);
    const data = align(answer, w);
    const labels = answer.series.map((s) => seriesLabel(s.tags));
    showEmpty(answer.series.length ? '' : 'No data for this query in the range.');
    const key = [labels.join('\u0000'), answer.stat, state.utc].join('\u0001');
    if (chart && background && key === chartKey) {
      shown = w;
      chart.setData(data);
      return;
    }
    destroyChart();
    chartKey = key;
    shown = w;
    chart = new uPlot(chartOptions(answer, labels), data, el.chart);
  }

  function chartOptions(answer, labels) {
    const one = labels.length === 1;
    const series = [{
      label: 'time',
      value: (u, v) => (v == null ? '–' : clock(v, false)),
    }];
    labels.forEach((label, i) => {
      const c = colour(i);
      series.push({
        label,
        stroke: c,
        width: 1.5,
        fill: one ? c + '1f' : undefined,
        spanGaps: false,
        value: (u, v) => fmtFull(v),
        points: { filter: isolatedPoints, size: 5, fill: c },
      });
    });
    const { width, height } = chartSize();
    return {
      width,
      height,
      series,
      tzDate: state.utc ? (ts) => uPlot.tzDate(new Date(ts * 1e3), 'Etc/UTC') : undefined,
      scales: {
        x: {
          time: true,
          range: (u, min, max) => [Math.min(min ?? shown.from, shown.from), Math.max(max ?? shown.to, shown.to)],
        },
        y: { range: yRange },
      },
      axes: [
        {
          stroke: '#667085',
          grid: { stroke: '#eef0f4' },
          ticks: { stroke: '#d8dde6' },
          space: 70,
          values: timeLabels,
        },
        {
          stroke: '#667085',
          grid: { stroke: '#eef0f4' },
          ticks: { stroke: '#d8dde6' },
          values: (u, splits) => splits.map(fmtShort),
          size: axisSize,
        },
      ],
      cursor: {
        drag: { x: true, y: false, setScale: false },
        points: { size: 7 },
        focus: { prox: 24 },
      },
      focus: { alpha: 0.35 },
      legend: { live: true },
      hooks: {
        setSelect: [zoomToSelection],
        setCursor: [moveTip],
        ready: [(u) => { u.over.addEventListener('mouseleave', () => hideTip()); }],
      },
    };
  }

  /**
   * x axis labels, 24-hour: "14:30", with the date under the first one and under each one on a new
   * day; only dates when the ticks are days apart.
   */
  function timeLabels(u, splits, axisIdx, space, incr) {
    let day = null;
    return splits.map((t) => {
      const [date, time] = clock(t, false).replace(' UTC', '').split(' ');
      if (incr >= 86400) {
        // days apart: "11-30", with the year on the first label and on a new year
        const label = day === null || day.slice(0, 4) !== date.slice(0, 4) ? date : date.slice(5);
        day = date;
        return label;
      }
      const label = day === date ? time : time + '\n' + date;
      day = date;
      return label;
    });
  }

  /** y from 0 when every value is >= 0 (counts, rates, latencies), else padded around the data. */
  function yRange(u, min, max) {
    if (min == null || max == null) return [0, 1];
    if (min >= 0) {
      const hi = max === 0 ? 1 : max * 1.08;
      return [0, hi];
    }
    const pad = (max - min) * 0.08 || Math.abs(max) * 0.1 || 1;
    return [min - pad, max + pad];
  }

  /** Width of the y axis from its longest label. */
  function axisSize(u, values, axisIdx, cycleNum) {
    const axis = u.axes[axisIdx];
    if (cycleNum > 1) return axis._size;
    let size = axis.ticks.size + axis.gap;
    const longest = (values || []).reduce((a, v) => (String(v).length > a.length ? String(v) : a), '');
    if (longest) {
      u.ctx.font = axis.font[0];
      size += u.ctx.measureText(longest).width / devicePixelRatio;
    }
    return Math.ceil(size) + 4;
  }

  /**
   * uPlot draws a dot on every point when they are far enough apart; otherwise, a dot only on a
   * value with gaps on both sides, which no line would show.
   */
  function isolatedPoints(u, si, show) {
    if (show) return null;
    const y = u.data[si];
    const idxs = [];
    for (let i = 0; i < y.length; i++) {
      if (y[i] != null && (i === 0 || y[i - 1] == null) && (i === y.length - 1 || y[i + 1] == null)) idxs.push(i);
    }
    return idxs.length ? idxs : null;
  }

  /** Dragging across the chart zooms in: the selection becomes an absolute range, queried again. */
  function zoomToSelection(u) {
    const sel = u.select;
    if (sel.width < 4) return;
    const min = u.posToVal(sel.left, 'x');
    const max = u.posToVal(sel.left + sel.width, 'x');
    u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
    let from = Math.floor(min / 60) * 60;
    let to = Math.ceil(max / 60) * 60;
    if (to - from < 120) to = from + 120;
    state.range = 'abs';
    state.from = from;
    state.to = to;
    commit();
  }

  // ---- hover read-out -----------------------------------------------------------------------

  let tip = null;

  function hideTip() {
    if (tip) tip.hidden = true;
  }

  /** A box by the cursor with the bucket's time and every series' value there, largest first. */
  function moveTip(u) {
    const idx = u.cursor.idx;
    if (idx == null || u.cursor.left == null || u.cursor.left < 0) { hideTip(); return; }
    if (!tip) {
      tip = document.createElement('div');
      tip.id = 'tip';
      el.chart.append(tip);
    }
    const t = u.data[0][idx];
    const rows = [];
    for (let i = 1; i < u.series.length; i++) {
      const v = u.data[i][idx];
      if (u.series[i].show && v != null) rows.push({ i, v });
    }
    rows.sort((a, b) => b.v - a.v);
    const head = document.createElement('div');
    head.className = 't';
    const step = chartStep(u);
    head.textContent = clock(t, false) + (step > 60 ? ' + ' + duration(step) : '');
    const table = document.createElement('table');
    const shown = rows.slice(0, 12);
    for (const r of shown) {
      const tr = document.createElement('tr');
      if (r.i === focusedSeries(u)) tr.className = 'hl';
      const name = document.createElement('td');
      const sw = document.createElement('span');
      sw.className = 'sw';
      sw.style.background = colour(r.i - 1);
      name.append(sw, document.createTextNode(u.series[r.i].label));
      const val = document.createElement('td');
      val.className = 'v';
      val.textContent = fmtFull(r.v);
      tr.append(name, val);
      table.append(tr);
    }
    tip.replaceChildren(head, table);
    if (rows.length > shown.length) {
      const more = document.createElement('div');
      more.className = 'more';
      more.textContent = '… and ' + (rows.length - shown.length) + ' more (see the legend)';
      tip.append(more);
    }
    if (!rows.length) {
      const none = document.createElement('div');
      none.className = 'more';
      none.textContent = 'no data in this bucket';
      tip.append(none);
    }
    tip.hidden = false;
    // Place it right of the cursor, or left when it would leave the chart.
    const over = u.over.getBoundingClientRect();
    const box = el.chart.getBoundingClientRect();
    const left = over.left - box.left + u.cursor.left;
    const top = over.top - box.top + u.cursor.top;
    const tw = tip.offsetWidth;
    const th = tip.offsetHeight;
    tip.style.left = (left + 16 + tw > box.width ? left - 16 - tw : left + 16) + 'px';
    tip.style.top = Math.max(0, Math.min(top - th / 2, over.bottom - box.top - th)) + 'px';
  }

  function focusedSeries(u) {
    for (let i = 1; i < u.series.length; i++) if (u.series[i]._focus) return i;
    return -1;
  }

  function chartStep(u) {
    const x = u.data[0];
    return x.length > 1 ? x[1] - x[0] : 60;
  }

  // ---- formatting ---------------------------------------------------------------------------

  const SI = [[1e12, 'T'], [1e9, 'G'], [1e6, 'M'], [1e3, 'k']];

  /** Axis labels: 1.5k, 2M, 0.25. */
  function fmtShort(v) {
    if (v == null) return '';
    const a = Math.abs(v);
    if (a >= 1e15) return v.toExponential(1);
    for (const [f, s] of SI) if (a >= f) return trim((v / f).toFixed(2)) + s;
    if (a === 0) return '0';
    if (a < 0.001) return v.toExponential(1);
    return trim(v.toFixed(a < 1 ? 3 : 2));
  }

  /** Read-out values: up to 6 significant digits, grouped. */
  function fmtFull(v) {
    if (v == null) return '–';
    if (v !== 0 && (Math.abs(v) >= 1e15 || Math.abs(v) < 1e-4)) return v.toExponential(4);
    return v.toLocaleString(undefined, { maximumSignificantDigits: 6 });
  }

  function trim(s) {
    return s.includes('.') ? s.replace(/0+$/, '').replace(/\.$/, '') : s;
  }

  function duration(s) {
    if (s % 86400 === 0) return s / 86400 + ' d';
    if (s % 3600 === 0) return s / 3600 + ' h';
    if (s % 60 === 0) return s / 60 + ' min';
    return s + ' s';
  }

  function pad(n) { return String(n).padStart(2, '0'); }

  /** "2026-11-30 04:05" (or with seconds), in local time or UTC as chosen. */
  function clock(secs, seconds) {
    const d = new Date(secs * 1000);
    const u = state.utc;
    const date = (u ? d.getUTCFullYear() : d.getFullYear()) + '-' + pad((u ? d.getUTCMonth() : d.getMonth()) + 1)
      + '-' + pad(u ? d.getUTCDate() : d.getDate());
    const time = pad(u ? d.getUTCHours() : d.getHours()) + ':' + pad(u ? d.getUTCMinutes() : d.getMinutes())
      + (seconds ? ':' + pad(u ? d.getUTCSeconds() : d.getSeconds()) : '');
    return date + ' ' + time + (u ? ' UTC' : '');
  }

  // ---- start --------------------------------------------------------------------------------

  function resize() {
    if (!chart) return;
    chart.setSize(chartSize());
  }

  function start() {
    state = fromHash(location.hash);
    history.replaceState(null, '', '#' + toHash(state));
    renderKeyButton();
    wireControls();
    renderControls();
    new ResizeObserver(resize).observe(el.chart);
    window.addEventListener('resize', resize);
    // The list first, so the stat defaults to the metric's type; then the chart.
    loadMetrics().then(() => load(false));
  }

  start();
}());
