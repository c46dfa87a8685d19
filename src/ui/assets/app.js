// sigloop's web UI: one hand-written script, no framework and no build step, embedded in the binary
// (src/ui/mod.rs). It reads and writes only through the JSON API of the same origin (/v1/...).
//
// Pages are routed by the URL's hash (#/loops/lp_...), so the server serves one document and every
// page can be bookmarked. Every text that comes from the API is put in the page as a text node or
// an attribute value, never as HTML: the element builder `h` below has no way to insert markup.
'use strict';

(function () {
  const TOKEN_KEY = 'sigloop.token';
  const ACTOR_KEY = 'sigloop.actor';
  const BOARD_REFRESH_MILLIS = 5000;

  // The loop states in their lifecycle order, and what the UI calls them.
  const STATES = ['open', 'acknowledged', 'in_progress', 'reopened', 'resolved', 'verifying', 'closed'];
  const ACTIVE_STATES = ['open', 'acknowledged', 'in_progress', 'reopened'];
  const STATE_LABELS = {
    open: 'open',
    acknowledged: 'acknowledged',
    in_progress: 'in progress',
    reopened: 'reopened',
    resolved: 'resolved',
    verifying: 'verifying',
    closed: 'closed',
  };
  // The operator actions and the states each is legal from: the API's state machine
  // (src/loops/mod.rs, `transition`), so the page offers only what the server will take. The
  // server checks again and answers 409 for anything that became illegal meanwhile.
  const ACTIONS = [
    { action: 'acknowledge', label: 'Acknowledge', from: ['open', 'reopened'] },
    { action: 'start', label: 'Start', from: ['open', 'reopened', 'acknowledged'] },
    { action: 'resolve', label: 'Resolve', from: ['open', 'reopened', 'acknowledged', 'in_progress'] },
    { action: 'reopen', label: 'Reopen', from: ['resolved', 'verifying', 'closed'] },
  ];
  const ACTION_DONE = {
    acknowledge: 'Acknowledged',
    start: 'Started',
    resolve: 'Resolved',
    reopen: 'Reopened',
    close: 'Closed',
    assign: 'Assigned',
    comment: 'Comment added',
  };
  const CLOSABLE = ['open', 'reopened', 'acknowledged', 'in_progress', 'resolved', 'verifying'];
  const ASSIGNABLE = CLOSABLE;
  const CLOSE_REASONS = [
    ['verified', 'verified (fixed and confirmed)'],
    ['duplicate', 'duplicate'],
    ['wont_fix', 'won’t fix'],
  ];

  // ---------------------------------------------------------------------------------------------
  // Building elements. Children may be strings (text nodes), nodes, arrays or null/false (skipped).

  function h(tag, attributes, ...children) {
    const element = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith('on') && typeof value === 'function') {
        element.addEventListener(name.slice(2), value);
      } else if (name === 'class') {
        element.className = value;
      } else if (name === 'value' && 'value' in element && tag !== 'button') {
        element.value = value;
      } else if (value === true) {
        element.setAttribute(name, '');
      } else {
        element.setAttribute(name, String(value));
      }
    }
    append(element, children);
    return element;
  }

  function append(parent, children) {
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      if (Array.isArray(child)) {
        append(parent, child);
      } else if (child instanceof Node) {
        parent.appendChild(child);
      } else {
        parent.appendChild(document.createTextNode(String(child)));
      }
    }
  }

  // Replaces a container's content; children as for `h`.
  function fill(container, ...children) {
    container.replaceChildren();
    append(container, children);
  }

  // A table cell with its column's name, which phones show beside the value (the table stacks).
  // The content sits in one element, so the stacked cell is always two columns: name, value.
  function cell(label, ...content) {
    return h('td', { 'data-label': label }, h('div', { class: 'cell' }, content));
  }

  function link(href, ...children) {
    return h('a', { href }, ...children);
  }

  function query(params) {
    const search = new URLSearchParams();
    for (const [name, value] of Object.entries(params)) {
      if (value !== null && value !== undefined && value !== '') search.set(name, value);
    }
    const text = search.toString();
    return text ? '?' + text : '';
  }

  function loopHref(id) {
    return '#/loops/' + encodeURIComponent(id);
  }

  function accountHref(id) {
    return '#/accounts/' + encodeURIComponent(id);
  }

  function loopsHref(filters) {
    return '#/loops' + query(filters);
  }

  // ---------------------------------------------------------------------------------------------
  // Times and numbers.

  const dateTimeFormat = new Intl.DateTimeFormat(undefined, {
    year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
  });
  const thisYearFormat = new Intl.DateTimeFormat(undefined, {
    month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
  });
  // Journey windows are whole UTC days and weeks: named by their UTC date, whatever the browser's
  // time zone.
  const windowDateFormat = new Intl.DateTimeFormat(undefined, {
    year: 'numeric', month: 'short', day: 'numeric', timeZone: 'UTC',
  });

  // A time in the browser's zone, without the year when it is this year's (the full time is the
  // element's title).
  function formatTime(iso) {
    if (!iso) return '—';
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return iso;
    return date.getFullYear() === new Date().getFullYear() ? thisYearFormat.format(date) : dateTimeFormat.format(date);
  }

  function formatWindowDate(iso) {
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? iso : windowDateFormat.format(date);
  }

  // `start` to the last day before `end` ("Mar 2 – 8, 2026"), or the one day.
  function formatWindow(window) {
    const first = new Date(window.start);
    const last = new Date(Date.parse(window.end) - 1);
    if (Number.isNaN(first.getTime()) || Number.isNaN(last.getTime())) return window.start;
    if (formatWindowDate(window.start) === formatWindowDate(last.toISOString())) return formatWindowDate(window.start);
    return windowDateFormat.formatRange ? windowDateFormat.formatRange(first, last)
      : formatWindowDate(window.start) + ' – ' + formatWindowDate(last.toISOString());
  }

  function timeElement(iso) {
    if (!iso) return h('span', { class: 'muted' }, '—');
    return h('time', { datetime: iso, title: iso }, formatTime(iso));
  }

  function formatDuration(totalSeconds) {
    let seconds = Math.max(0, Math.round(totalSeconds));
    if (seconds < 60) return seconds + ' s';
    const days = Math.floor(seconds / 86400);
    seconds -= days * 86400;
    const hours = Math.floor(seconds / 3600);
    seconds -= hours * 3600;
    const minutes = Math.floor(seconds / 60);
    if (days > 0) return days + ' d' + (hours ? ' ' + hours + ' h' : '');
    if (hours > 0) return hours + ' h' + (minutes ? ' ' + minutes + ' min' : '');
    return minutes + ' min';
  }

  function relative(iso) {
    const millis = Date.parse(iso) - Date.now();
    if (Number.isNaN(millis)) return '';
    return millis >= 0 ? 'in ' + formatDuration(millis / 1000) : formatDuration(-millis / 1000) + ' ago';
  }

  function signed(number, digits) {
    const text = Math.abs(number).toFixed(digits || 0);
    if (number > 0) return '+' + text;
    if (number < 0) return '−' + text;
    return text;
  }

  function stateBadge(state, id) {
    return h('span', { class: 'badge state-' + state, id: id || null }, STATE_LABELS[state] || state);
  }

  function priorityBadge(priority) {
    return h('span', { class: 'badge priority priority-' + String(priority).toLowerCase(), title: 'priority' }, priority);
  }

  // ---------------------------------------------------------------------------------------------
  // The session: an optional API token and the operator's name, both kept for this tab only.

  const session = {
    get token() { return sessionStorage.getItem(TOKEN_KEY) || ''; },
    set token(value) {
      if (value) sessionStorage.setItem(TOKEN_KEY, value); else sessionStorage.removeItem(TOKEN_KEY);
    },
    get actor() { return sessionStorage.getItem(ACTOR_KEY) || ''; },
    set actor(value) {
      if (value) sessionStorage.setItem(ACTOR_KEY, value); else sessionStorage.removeItem(ACTOR_KEY);
    },
  };

  let signInReason = '';
  let returnTo = '#/';
  // What GET /v1/whoami said: {auth: "open" | "tokens", token: {name, scopes, team, ...} | null},
  // or null while unknown (not asked yet, or a server without that route).
  let identity = null;

  // The name sigloop records for this tab's actions when it takes it from the token.
  function tokenName() {
    return identity && identity.token ? identity.token.name || identity.token.id : '';
  }

  async function loadIdentity() {
    try {
      identity = await api('/v1/whoami');
    } catch (error) {
      identity = null;
    }
    renderSession();
  }

  function renderSession() {
    const container = document.getElementById('session');
    const parts = [];
    const name = tokenName();
    if (name) {
      const team = identity.token.team;
      parts.push(h('span', { class: 'muted', id: 'session-name' }, 'Signed in as ', h('strong', {}, name), team ? ' (team ' + team + ')' : ''));
    } else if (session.actor) {
      parts.push(h('span', { class: 'muted', id: 'session-name' }, 'Acting as ', h('strong', {}, session.actor)));
    }
    if (session.token) {
      parts.push(h('button', {
        type: 'button', class: 'link-button', id: 'sign-out',
        onclick: () => {
          session.token = '';
          identity = null;
          renderSession();
          announce('Signed out. The token was removed from this tab.');
          navigate('#/sign-in');
        },
      }, 'Sign out'));
    } else if (!(identity && identity.auth === 'open')) {
      // A server that runs open (the default on 127.0.0.1) needs no sign-in.
      parts.push(link('#/sign-in', 'Sign in'));
    }
    fill(container, parts);
  }

  // ---------------------------------------------------------------------------------------------
  // The API.

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(path, options) {
    const settings = options || {};
    const headers = { Accept: 'application/json' };
    if (session.token) headers.Authorization = 'Bearer ' + session.token;
    let body;
    if (settings.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(settings.body);
    }
    let response;
    try {
      response = await fetch(path, { method: settings.method || 'GET', headers, body, cache: 'no-store' });
    } catch (error) {
      throw new ApiError(0, 'network', 'sigloop did not answer (' + error.message + '). Is it running?');
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (_) { data = null; }
    }
    const problem = data && data.error ? data.error : null;
    if (response.status === 401) {
      // Tokens are configured and this tab has none, or a refused one: ask for one, then come back.
      const hadToken = Boolean(session.token);
      session.token = '';
      identity = null;
      renderSession();
      signInReason = hadToken
        ? 'sigloop refused the token' + (problem && problem.message ? ' (' + problem.message + ').' : '.')
        : 'This sigloop asks for an API token.';
      if (!location.hash.startsWith('#/sign-in')) {
        returnTo = location.hash || '#/';
        navigate('#/sign-in');
      }
      throw new ApiError(401, 'unauthorized', signInReason);
    }
    if (!response.ok) {
      throw new ApiError(
        response.status,
        problem ? problem.code : 'http_' + response.status,
        problem && problem.message ? problem.message : response.status + ' ' + response.statusText,
      );
    }
    return data;
  }

  function errorBox(error) {
    if (error instanceof ApiError && error.status === 401) {
      return h('p', { class: 'notice' }, 'Sign in to see this page.');
    }
    const code = error instanceof ApiError ? error.code : 'error';
    return h('div', { class: 'error', role: 'alert' },
      h('strong', {}, 'Something went wrong'), ' ', h('code', {}, code), ': ', error.message);
  }

  // ---------------------------------------------------------------------------------------------
  // Announcements for screen readers (a polite live region).

  let announceTimer = null;

  function announce(message) {
    const region = document.getElementById('announcer');
    // Clearing first makes a repeated message be read again.
    region.textContent = '';
    clearTimeout(announceTimer);
    announceTimer = setTimeout(() => { region.textContent = message; }, 50);
  }

  // ---------------------------------------------------------------------------------------------
  // Routing.

  const routes = [
    { pattern: /^\/$/, nav: 'board', page: boardPage },
    { pattern: /^\/queues$/, nav: 'board', page: boardPage },
    { pattern: /^\/loops$/, nav: 'loops', page: loopListPage },
    { pattern: /^\/loops\/([^/]+)$/, nav: 'loops', page: loopPage },
    { pattern: /^\/journeys$/, nav: 'journeys', page: journeyPage },
    { pattern: /^\/accounts$/, nav: 'accounts', page: accountSearchPage },
    { pattern: /^\/accounts\/(.+)$/, nav: 'accounts', page: accountPage },
    { pattern: /^\/dead-letters$/, nav: 'dead-letters', page: deadLettersPage },
    { pattern: /^\/tester$/, nav: 'tester', page: testerPage },
    { pattern: /^\/sign-in$/, nav: null, page: signInPage },
  ];

  let current = null;
  let renderCount = 0;
  // The id of a control to focus after the next render (a filter that changed the route), instead
  // of the page's heading.
  let focusAfterRender = null;

  function navigate(hash) {
    if (location.hash === hash) route(); else location.hash = hash;
  }

  function parseLocation() {
    const raw = location.hash.replace(/^#/, '') || '/';
    const questionMark = raw.indexOf('?');
    const path = questionMark >= 0 ? raw.slice(0, questionMark) : raw;
    const params = new URLSearchParams(questionMark >= 0 ? raw.slice(questionMark + 1) : '');
    return { path: path || '/', params };
  }

  function route() {
    if (current) current.leave();
    const { path, params } = parseLocation();
    const main = document.getElementById('main');
    let match = null;
    let found = null;
    for (const candidate of routes) {
      match = candidate.pattern.exec(path);
      if (match) { found = candidate; break; }
    }
    for (const item of document.querySelectorAll('[data-nav]')) {
      if (found && item.dataset.nav === found.nav) item.setAttribute('aria-current', 'page');
      else item.removeAttribute('aria-current');
    }
    const number = ++renderCount;
    const timers = [];
    const context = {
      params,
      alive: () => number === renderCount,
      title(text) { document.title = text + ' · sigloop'; },
      render(...children) {
        if (number !== renderCount) return;
        fill(main, children);
      },
      every(millis, task) {
        timers.push(setInterval(() => {
          if (!document.hidden && number === renderCount) task();
        }, millis));
      },
      leave() { timers.forEach(clearInterval); },
    };
    current = context;
    if (!found) {
      context.title('Not found');
      context.render(h('h1', { tabindex: '-1' }, 'No such page'),
        h('p', {}, 'There is no page at ', h('code', {}, path), '. ', link('#/', 'Go to the queue board'), '.'));
      focusHeading(number, false);
      return;
    }
    let decoded;
    try {
      decoded = match.slice(1).map((part) => decodeURIComponent(part));
    } catch (_) {
      decoded = match.slice(1);
    }
    const firstRender = number === 1;
    Promise.resolve(found.page(context, ...decoded))
      .catch((error) => {
        if (number !== renderCount) return;
        context.render(h('h1', { tabindex: '-1' }, 'Could not load this page'), errorBox(error));
      })
      .finally(() => focusHeading(number, firstRender));
  }

  function focusHeading(number, firstRender) {
    if (number !== renderCount) return;
    const wanted = focusAfterRender && document.getElementById(focusAfterRender);
    focusAfterRender = null;
    if (wanted) { wanted.focus(); return; }
    // On the first load the browser's own focus (the top of the page) is right; after a navigation
    // the new page's heading takes focus, as a screen reader user expects.
    if (firstRender) return;
    const heading = document.querySelector('#main h1');
    if (heading) {
      heading.setAttribute('tabindex', '-1');
      heading.focus();
    }
  }

  function heading(text, ...extra) {
    return h('h1', { tabindex: '-1' }, text, ...extra);
  }

  // ---------------------------------------------------------------------------------------------
  // Queue board.

  async function boardPage(context) {
    context.title('Queues');
    const updated = h('span', { class: 'muted', id: 'board-updated' });
    const summary = h('div', { class: 'summary', id: 'board-summary' });
    const grid = h('div', { class: 'board', id: 'board' });
    let previous = null;

    async function refresh() {
      let data;
      try {
        data = await api('/v1/queues');
      } catch (error) {
        if (!context.alive()) return;
        fill(updated, errorBox(error));
        return;
      }
      if (!context.alive()) return;
      const queues = data.queues || [];
      drawSummary(summary, queues);
      fill(grid, queues.map(queueCard));
      updated.textContent = 'Updated ' + new Date().toLocaleTimeString() + ' · refreshes every '
        + BOARD_REFRESH_MILLIS / 1000 + ' s';
      if (previous) {
        const changes = describeChanges(previous, queues);
        if (changes.length) announce('Queues changed: ' + changes.join('; ') + '.');
      }
      previous = queues;
    }

    context.render(
      heading('Queue board'),
      h('p', { class: 'lead' }, 'Each queue with its loops by state, SLA breaches and the age of its oldest open loop.'),
      h('p', { class: 'toolbar' }, updated),
      summary,
      grid,
    );
    await refresh();
    context.every(BOARD_REFRESH_MILLIS, refresh);
  }

  function activeCount(queue) {
    return ACTIVE_STATES.reduce((sum, state) => sum + (queue.counts[state] || 0), 0);
  }

  function drawSummary(container, queues) {
    const active = queues.reduce((sum, queue) => sum + activeCount(queue), 0);
    const breached = queues.reduce((sum, queue) => sum + (queue.breached || 0), 0);
    const oldest = queues.reduce((best, queue) => Math.max(best, queue.oldest_open_age_seconds || 0), 0);
    fill(container,
      h('dl', { class: 'stats' },
        stat('Queues', String(queues.length)),
        stat('Active loops', String(active)),
        stat('Breached', String(breached), breached > 0 ? 'alert' : null),
        stat('Oldest open', oldest ? formatDuration(oldest) : '—')),
    );
  }

  function stat(label, value, extraClass) {
    return h('div', { class: 'stat' + (extraClass ? ' ' + extraClass : '') }, h('dt', {}, label), h('dd', {}, value));
  }

  function queueCard(queue) {
    const counts = STATES.map((state) => h('div', { class: 'count' + (queue.counts[state] ? '' : ' zero'), 'data-state': state },
      h('dt', {}, STATE_LABELS[state]),
      h('dd', {}, link(loopsHref({ queue: queue.name, state }), String(queue.counts[state] || 0)))));
    const oldest = queue.oldest_open_at
      ? ['Oldest open: ', h('strong', {}, formatDuration(queue.oldest_open_age_seconds || 0)),
        ' (since ', timeElement(queue.oldest_open_at), ')']
      : ['No open loop'];
    return h('article', { class: 'card queue-card' + (queue.breached > 0 ? ' has-breach' : ''), 'data-queue': queue.name },
      h('h2', {}, link(loopsHref({ queue: queue.name }), queue.name)),
      h('p', { class: 'muted' }, queue.team ? 'team ' + queue.team : 'no team'),
      h('p', { class: 'big-number' }, h('span', { class: 'active-count' }, String(activeCount(queue))), ' active · ',
        String(queue.total), queue.total === 1 ? ' loop in all' : ' loops in all'),
      h('dl', { class: 'counts' }, counts),
      h('p', { class: 'breaches' + (queue.breached > 0 ? ' alert' : '') },
        'Breached: ', h('strong', { 'data-breached': '' }, String(queue.breached || 0))),
      h('p', { class: 'oldest' }, oldest));
  }

  function describeChanges(before, after) {
    const changes = [];
    for (const queue of after) {
      const old = before.find((candidate) => candidate.name === queue.name);
      if (!old) continue;
      for (const state of STATES) {
        const was = old.counts[state] || 0;
        const now = queue.counts[state] || 0;
        if (was !== now) changes.push(queue.name + ' ' + STATE_LABELS[state] + ' ' + was + ' to ' + now);
      }
      if ((old.breached || 0) !== (queue.breached || 0)) {
        changes.push(queue.name + ' breached ' + old.breached + ' to ' + queue.breached);
      }
    }
    return changes;
  }

  // ---------------------------------------------------------------------------------------------
  // Loop list.

  async function loopListPage(context) {
    const params = context.params;
    context.title('Loops');
    const filters = {
      queue: params.get('queue') || '',
      state: params.get('state') || '',
      kind: params.get('kind') || '',
      account_id: params.get('account_id') || '',
      tag: params.get('tag') || '',
      limit: params.get('limit') || '50',
    };
    const cursor = params.get('cursor') || '';
    let queueNames = [];
    try {
      queueNames = ((await api('/v1/queues')).queues || []).map((queue) => queue.name);
    } catch (error) {
      if (error.status === 401) throw error;
    }
    if (!context.alive()) return;
    const form = loopFilterForm(filters, queueNames);
    const results = h('div', { id: 'loop-results' }, h('p', { class: 'loading' }, 'Loading loops…'));
    context.render(heading('Loops'), form, results);
    let page;
    try {
      page = await api('/v1/loops' + query({ ...filters, cursor }));
    } catch (error) {
      if (context.alive()) fill(results, errorBox(error));
      return;
    }
    if (!context.alive()) return;
    const loops = page.loops || [];
    const pager = h('nav', { class: 'pager', 'aria-label': 'Pages' },
      cursor ? link(loopsHref(filters), '← First page') : null,
      page.next_cursor ? link(loopsHref({ ...filters, cursor: page.next_cursor }), 'Next page →') : null);
    fill(results,
      h('p', { class: 'muted' }, loops.length === 0 ? 'No loop matches these filters.'
        : 'Showing ' + loops.length + (page.next_cursor ? ' loops; more on the next page.' : ' loops.')),
      loops.length ? loopTable(loops, 'Loops matching the filters') : null,
      pager,
    );
  }

  function loopFilterForm(filters, queueNames) {
    const names = queueNames.includes(filters.queue) || !filters.queue ? queueNames : [filters.queue, ...queueNames];
    const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter loops' },
      field('Queue', h('select', { name: 'queue', id: 'filter-queue' },
        h('option', { value: '' }, 'any queue'),
        names.map((name) => h('option', { value: name, selected: name === filters.queue }, name)))),
      field('State', h('select', { name: 'state', id: 'filter-state' },
        h('option', { value: '' }, 'any state'),
        STATES.map((state) => h('option', { value: state, selected: state === filters.state }, STATE_LABELS[state])))),
      field('Kind', h('select', { name: 'kind', id: 'filter-kind' },
        h('option', { value: '' }, 'any kind'),
        ['account', 'journey'].map((kind) => h('option', { value: kind, selected: kind === filters.kind }, kind)))),
      field('Account', h('input', { name: 'account_id', id: 'filter-account', value: filters.account_id, autocomplete: 'off', spellcheck: 'false' })),
      field('Tag or prefix', h('input', { name: 'tag', id: 'filter-tag', value: filters.tag, autocomplete: 'off', spellcheck: 'false', placeholder: 'billing' })),
      field('Per page', h('select', { name: 'limit', id: 'filter-limit' },
        ['25', '50', '100', '200'].map((limit) => h('option', { value: limit, selected: limit === filters.limit }, limit)))),
      h('div', { class: 'form-actions' },
        h('button', { type: 'submit', class: 'primary' }, 'Apply filters'),
        link('#/loops', 'Clear')));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const data = new FormData(form);
      const wanted = {};
      for (const [name, value] of data.entries()) wanted[name] = String(value).trim();
      if (wanted.limit === '50') delete wanted.limit;
      navigate(loopsHref(wanted));
    });
    return form;
  }

  function field(label, control, hint) {
    const id = control.id || ('field-' + Math.random().toString(36).slice(2));
    control.id = id;
    return h('div', { class: 'field' }, h('label', { for: id }, label), control, hint ? h('p', { class: 'hint' }, hint) : null);
  }

  // The due date that matters now: acknowledgement while unacknowledged, resolution while active,
  // the end of verification while verifying.
  function dueOf(loop) {
    if (loop.state === 'open' || loop.state === 'reopened') return ['ack', loop.ack_due];
    if (loop.state === 'acknowledged' || loop.state === 'in_progress') return ['resolve', loop.resolve_due];
    if (loop.state === 'verifying') return ['verify', loop.verify_due];
    return [null, null];
  }

  function loopTable(loops, caption) {
    const rows = loops.map((loop) => {
      const [dueKind, due] = dueOf(loop);
      return h('tr', { 'data-loop': loop.id },
        cell('Priority', priorityBadge(loop.priority)),
        cell('Loop',
          link(loopHref(loop.id), loop.tag),
          h('div', { class: 'muted small' }, loop.kind === 'journey' ? 'journey ' + (loop.stage || '') : (loop.account_id || ''))),
        cell('State', stateBadge(loop.state), loop.breached ? h('span', { class: 'badge breach' }, 'breached') : null),
        cell('Queue', loop.queue),
        cell('Owner', loop.owner),
        cell('Opened', timeElement(loop.opened_at)),
        cell('Due', due ? [h('span', { class: 'muted small' }, dueKind + ' '), timeElement(due)] : h('span', { class: 'muted' }, '—')),
        h('td', { 'data-label': 'Signals', class: 'number' }, h('div', { class: 'cell' }, String(loop.signal_count))));
    });
    return h('div', { class: 'table-wrap' },
      h('table', { class: 'data loops-table' },
        h('caption', { class: 'visually-hidden' }, caption),
        h('thead', {}, h('tr', {}, ['Priority', 'Loop', 'State', 'Queue', 'Owner', 'Opened', 'Due', 'Signals']
          .map((title) => h('th', { scope: 'col' }, title)))),
        h('tbody', {}, rows)));
  }

  // ---------------------------------------------------------------------------------------------
  // Loop page.

  async function loopPage(context, id) {
    context.title('Loop ' + id);
    const loop = await api('/v1/loops/' + encodeURIComponent(id));
    if (!context.alive()) return;
    drawLoop(context, loop);
  }

  function drawLoop(context, loop, message) {
    context.title(loop.tag + ' · ' + (loop.account_id || loop.stage || loop.id));
    const successor = (loop.links || []).find((item) => item.relation === 'successor');
    context.render(
      h('nav', { class: 'breadcrumbs', 'aria-label': 'Breadcrumbs' },
        link('#/', 'Queues'), ' › ', link(loopsHref({ queue: loop.queue }), loop.queue), ' › ', h('span', { 'aria-current': 'page' }, loop.id)),
      heading(loop.tag),
      h('p', { class: 'loop-status' },
        stateBadge(loop.state, 'loop-state'), ' ', priorityBadge(loop.priority),
        loop.breached ? [' ', h('span', { class: 'badge breach' }, 'SLA breached')] : null,
        loop.close_reason ? [' ', h('span', { class: 'muted' }, 'closed as ' + loop.close_reason)] : null,
        ' ', h('span', { class: 'muted' }, loop.kind + ' loop'),
        loop.account_id ? [' for ', link(accountHref(loop.account_id), loop.account_id)] : null,
        loop.kind === 'journey' && loop.stage ? [' at stage ', h('strong', {}, loop.stage)] : null),
      h('div', { class: 'loop-layout' },
        h('div', { class: 'loop-main' },
          actionPanel(context, loop, successor, message),
          tracePanel(loop),
          evidencePanel(loop)),
        h('div', { class: 'loop-side' },
          slaPanel(loop),
          historyPanel(loop),
          tasksPanel(loop),
          linksPanel(loop),
          detailsPanel(loop))),
    );
  }

  function section(id, title, ...children) {
    return h('section', { class: 'panel', 'aria-labelledby': id + '-heading', id },
      h('h2', { id: id + '-heading' }, title), ...children);
  }

  function definitions(pairs) {
    return h('dl', { class: 'definitions' }, pairs.filter(Boolean).map(([term, value]) =>
      h('div', {}, h('dt', {}, term), h('dd', {}, value === null || value === undefined || value === '' ? h('span', { class: 'muted' }, '—') : value))));
  }

  function detailsPanel(loop) {
    return section('details', 'Details', definitions([
      ['Queue', link(loopsHref({ queue: loop.queue }), loop.queue)],
      ['Owner', loop.owner],
      ['Severity', loop.severity],
      ['Key', h('code', {}, loop.key)],
      ['Generation', String(loop.generation)],
      ['Signals', String(loop.signal_count)],
      ['Recurrences', String(loop.recurrence)],
      ['First signal', timeElement(loop.first_signal_at)],
      ['Last signal', timeElement(loop.last_signal_at)],
      ['Opened', timeElement(loop.opened_at)],
      ['Updated', timeElement(loop.updated_at)],
      loop.stage ? ['Journey stage', loop.stage] : null,
      loop.watchers && loop.watchers.length ? ['Watchers', loop.watchers.join(', ')] : null,
      ['Loop id', h('code', {}, loop.id)],
    ]));
  }

  function deadline(label, due, metAt, metLabel, breachedAt) {
    let status;
    if (breachedAt) {
      status = h('span', { class: 'badge breach', title: breachedAt }, 'breached ' + relative(breachedAt));
    } else if (metAt) {
      status = h('span', { class: 'badge ok', title: metAt }, metLabel + ' ' + relative(metAt));
    } else if (due) {
      const overdue = Date.parse(due) < Date.now();
      status = h('span', { class: 'badge ' + (overdue ? 'warn' : 'pending') }, overdue ? 'overdue' : 'due ' + relative(due));
    } else {
      status = h('span', { class: 'muted' }, 'no deadline');
    }
    return [label, h('span', { class: 'deadline' }, due ? timeElement(due) : null, status)];
  }

  function slaPanel(loop) {
    const sla = loop.trace && loop.trace.sla;
    return section('sla', 'SLA', definitions([
      ['Policy', loop.sla_policy || (sla && sla.policy) || 'none'],
      sla ? ['Targets', 'acknowledge within ' + sla.ack_within + ', resolve within ' + sla.resolve_within] : null,
      sla && sla.business_hours ? ['Business hours', sla.business_hours] : null,
      sla ? ['On breach', sla.on_breach.replace(/_/g, ' ') + (sla.escalation_queue ? ' to ' + sla.escalation_queue : '')] : null,
      deadline('Acknowledge by', loop.ack_due, loop.acknowledged_at, 'acknowledged', loop.ack_breached_at),
      deadline('Resolve by', loop.resolve_due, loop.resolved_at, 'resolved', loop.resolve_breached_at),
      loop.verify_due || loop.verify_confirmed_at
        ? deadline('Verify until', loop.verify_due, loop.verify_confirmed_at, 'confirmed', null) : null,
      loop.closed_at ? ['Closed', timeElement(loop.closed_at)] : null,
    ]));
  }

  function actionPanel(context, loop, successor, message) {
    // Not a live region: after an action it takes focus (and is read once); errors are announced.
    const status = h('p', { class: 'action-status', id: 'action-status', tabindex: '-1' }, message || '');
    if (successor) {
      return section('actions', 'Actions',
        h('p', { class: 'notice' }, 'This generation is read-only: a newer one exists. ',
          link(loopHref(successor.id), 'Act on generation ' + successor.generation)), status);
    }
    const recordedAs = tokenName();
    const actorInput = h('input', {
      id: 'action-actor', name: 'actor', value: session.actor, autocomplete: 'name', spellcheck: 'false',
      required: !session.token,
    });
    const actorField = recordedAs
      ? h('p', { class: 'field recorded-as' }, 'Your actions are recorded as ', h('strong', {}, recordedAs), ', the token’s name.')
      : field('Your name', actorInput, session.token ? 'With a token, sigloop records the token’s name.' : 'Recorded in the history as the actor.');
    const note = h('textarea', { id: 'action-note', name: 'note', rows: '2' });
    const buttons = ACTIONS.filter((item) => item.from.includes(loop.state)).map((item) =>
      h('button', { type: 'submit', name: 'action', value: item.action, class: item.action === 'acknowledge' ? 'primary' : null }, item.label));
    const canClose = CLOSABLE.includes(loop.state);
    const canAssign = ASSIGNABLE.includes(loop.state);
    const form = h('form', { class: 'actions-form', id: 'action-form' },
      h('div', { class: 'field-row' },
        actorField,
        field('Note', note, 'Optional; a comment needs one.')),
      h('div', { class: 'button-row' }, buttons,
        h('button', { type: 'submit', name: 'action', value: 'comment' }, 'Comment')),
      canAssign ? h('div', { class: 'inline-action' },
        field('New owner', h('input', { id: 'action-owner', name: 'owner', autocomplete: 'off', spellcheck: 'false' })),
        h('button', { type: 'submit', name: 'action', value: 'assign' }, 'Assign')) : null,
      canClose ? h('div', { class: 'inline-action' },
        field('Close reason', h('select', { id: 'action-reason', name: 'reason' },
          CLOSE_REASONS.map(([value, label]) => h('option', { value }, label)))),
        h('button', { type: 'submit', name: 'action', value: 'close' }, 'Close')) : null,
      status);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const submitter = event.submitter;
      const action = submitter && submitter.value;
      if (!action) return;
      const actor = recordedAs ? '' : actorInput.value.trim();
      const body = { action };
      if (actor) body.actor = actor;
      const noteText = note.value.trim();
      if (noteText) body.note = noteText;
      if (!actor && !session.token) return fail('Enter your name: sigloop records who acted.', actorInput);
      if (action === 'comment' && !noteText) return fail('A comment needs a note.', note);
      if (action === 'assign') {
        const owner = form.elements.owner.value.trim();
        if (!owner) return fail('Enter the new owner.', form.elements.owner);
        body.owner = owner;
      }
      if (action === 'close') body.reason = form.elements.reason.value;
      if (actor) session.actor = actor;
      renderSession();
      for (const button of form.querySelectorAll('button')) button.disabled = true;
      status.className = 'action-status';
      status.textContent = 'Sending ' + action + '…';
      try {
        const answer = await api('/v1/loops/' + encodeURIComponent(loop.id) + '/actions', { method: 'POST', body });
        if (!context.alive()) return;
        if (answer && answer.processed === false) {
          status.textContent = answer.message || 'The action is logged and will be applied shortly.';
          announce(status.textContent);
          for (const button of form.querySelectorAll('button')) button.disabled = false;
          return;
        }
        const done = ACTION_DONE[action] + ': the loop is now ' + (STATE_LABELS[answer.state] || answer.state) + '.';
        drawLoop(context, answer, done);
        // The button that was pressed is gone with the old page: the outcome takes the focus.
        const fresh = document.getElementById('action-status');
        if (fresh) fresh.focus(); else announce(done);
      } catch (error) {
        if (!context.alive()) return;
        for (const button of form.querySelectorAll('button')) button.disabled = false;
        if (error.status !== 401) fail(error.message);
      }
    });
    function fail(text, control) {
      status.className = 'action-status error-text';
      status.textContent = text;
      announce(text);
      if (control) control.focus();
    }
    return section('actions', 'Actions', form);
  }

  // The decision trace, as the steps sigloop took: "why is this on my queue?"
  function tracePanel(loop) {
    const trace = loop.trace;
    if (!trace) {
      return section('trace', 'Why is this on my queue?', h('p', { class: 'muted' }, 'This loop has no stored decision trace.'));
    }
    const steps = [];
    const event = trace.event || {};
    steps.push(h('li', {}, h('strong', {}, 'The signal came from '),
      event.type ? h('code', {}, event.type) : 'an event', event.source ? [' from ', h('code', {}, event.source)] : null,
      event.id ? [' (', h('code', {}, event.id), ')'] : null, event.time ? [' at ', timeElement(event.time)] : null,
      referenceList(event.reference)));
    const tags = trace.tags || [];
    steps.push(h('li', {}, h('strong', {}, 'Tagged '), h('code', {}, trace.primary_tag),
      tags.length ? ' (' + trace.tags_matched + (trace.tags_matched === 1 ? ' tag' : ' tags') + ' matched' + (trace.tags_matched > tags.length ? ', the best ' + tags.length + ' kept' : '') + ')' : ' (no rule matched)',
      tags.length ? tagMatchList(tags, trace.primary_tag) : null));
    steps.push(h('li', {}, h('strong', {}, 'Detector '), h('code', {}, trace.detector), ': ', trace.detector_reason,
      ' — severity ', h('strong', {}, trace.severity), '.'));
    if (trace.figures) steps.push(h('li', {}, h('strong', {}, 'Journey figures: '), figuresView(trace.figures)));
    steps.push(h('li', {}, h('strong', {}, 'Priority '), 'P' + trace.priority, ': ', trace.priority_reason, '.'));
    const route = trace.route || {};
    steps.push(h('li', {}, h('strong', {}, 'Routed '), 'through ',
      h('span', { class: 'route-path' }, (route.path || []).map((name, index) => [index ? ' › ' : null, h('code', {}, name)])),
      ' to queue ', h('strong', {}, route.queue), '.',
      route.watchers && route.watchers.length ? ' Watchers: ' + route.watchers.join(', ') + '.' : null));
    steps.push(h('li', {}, h('strong', {}, 'Owner '), h('strong', {}, route.owner), ': ', route.owner_resolution,
      route.owner_rule ? [' (rule ', h('code', {}, route.owner_rule), ')'] : null, '.'));
    const sla = trace.sla;
    steps.push(h('li', {}, h('strong', {}, 'SLA '), sla
      ? [h('code', {}, sla.policy), ': acknowledge within ', sla.ack_within, ', resolve within ', sla.resolve_within,
        sla.business_hours ? ' (business hours ' + sla.business_hours + ')' : '', '.']
      : 'none: the route names no SLA policy.'));
    if (trace.journey) {
      steps.push(h('li', {}, h('strong', {}, 'Journey '), 'stage ', h('strong', {}, trace.journey.stage),
        ' (from the ', trace.journey.stage_from, '), touchpoint ', trace.journey.touchpoint, '.'));
    }
    return section('trace', 'Why is this on my queue?',
      h('ol', { class: 'trace-steps' }, steps),
      h('p', { class: 'muted small' }, 'Configuration version ', h('code', {}, trace.config_version), '.'));
  }

  function figuresView(figures) {
    const row = (label, summary) => summary
      ? h('li', {}, label + ' (' + formatTime(summary.start) + '): ', String(summary.events), ' events, ', String(summary.tickets), ' tickets, ',
        String(summary.accounts), ' accounts', summary.nps !== null && summary.nps !== undefined ? ', NPS ' + summary.nps + ' of ' + summary.nps_responses + ' responses' : '')
      : null;
    return h('span', {}, figures.window + ' at ', h('code', {}, figures.stage), ' × ', h('code', {}, figures.tag), '. ', figures.threshold, '.',
      h('ul', {}, row('this window', figures.current), row('previous window', figures.previous)));
  }

  function referenceList(reference) {
    if (!reference || typeof reference !== 'object') return null;
    const entries = Object.entries(reference).filter(([, value]) => value !== null && value !== undefined);
    if (!entries.length) return null;
    return h('span', { class: 'references' }, ' — ', entries.map(([name, value], index) =>
      [index ? ', ' : null, name + ' ', h('code', {}, typeof value === 'object' ? JSON.stringify(value) : String(value))]));
  }

  // Tag matches with their evidence: the matched text of each rule, highlighted. Stored evidence
  // keeps the matched text and its byte span, not the whole field, so the span is named beside it.
  function tagMatchList(matches, primary) {
    return h('ul', { class: 'tag-matches' }, matches.map((match) => h('li', {},
      h('code', { class: 'tag' + (match.tag === primary ? ' primary-tag' : '') }, match.tag),
      ' ', h('span', { class: 'muted small' }, 'score ' + match.score),
      h('ul', { class: 'evidence-list' }, (match.evidence || []).map((evidence) => h('li', {},
        h('span', { class: 'muted small' }, evidence.field + ' ', h('span', { title: 'byte span in the field' }, evidence.start + '–' + evidence.end), ': '),
        '“', h('mark', { class: 'evidence', title: evidence.rule }, evidence.text), '”',
        ' ', h('span', { class: 'muted small' }, 'rule ' + evidence.rule)))))));
  }

  function evidencePanel(loop) {
    const rows = loop.evidence || [];
    return section('evidence', 'Evidence (' + rows.length + ')',
      rows.length === 0 ? h('p', { class: 'muted' }, 'No evidence stored.') : h('ol', { class: 'evidence-events' }, rows.map((row) =>
        h('li', { class: 'evidence-event' },
          h('p', { class: 'evidence-head' },
            h('span', { class: 'badge outcome' }, row.outcome), ' ', h('code', {}, row.event_type),
            ' from ', h('code', {}, row.event_source), ' at ', timeElement(row.event_time)),
          h('p', {}, h('strong', {}, row.detector), ' (' + row.severity + '): ', row.reason),
          h('p', { class: 'small' }, 'Event ', h('code', {}, row.event_id), referenceList(row.reference)),
          (row.tags || []).length ? tagMatchList(row.tags, row.primary_tag)
            : h('p', { class: 'muted small' }, 'Primary tag ', h('code', {}, row.primary_tag), '; no text evidence.')))));
  }

  function historyPanel(loop) {
    const rows = loop.history || [];
    return section('history', 'History',
      h('ol', { class: 'timeline', id: 'history-list' }, rows.map((row) => h('li', { 'data-action': row.action },
        h('div', { class: 'timeline-head' },
          h('strong', { class: 'history-action' }, row.action.replace(/_/g, ' ')), ' by ', h('span', { class: 'history-actor' }, row.actor),
          ' · ', timeElement(row.at)),
        row.from_state !== row.to_state || !row.from_state
          ? h('div', { class: 'small' }, row.from_state ? [stateBadge(row.from_state), ' → '] : null, stateBadge(row.to_state))
          : null,
        row.reason ? h('div', { class: 'history-reason' }, row.reason) : null))));
  }

  function linksPanel(loop) {
    const links = loop.links || [];
    if (!links.length) return section('links', 'Links', h('p', { class: 'muted' }, 'No linked loops.'));
    const shown = links.slice(0, 50);
    return section('links', 'Links (' + links.length + ')',
      h('ul', { class: 'plain-list' }, shown.map((item) => h('li', {},
        h('span', { class: 'muted small' }, item.relation + ' '),
        link(loopHref(item.id), item.key || item.id), ' ', stateBadge(item.state),
        item.queue ? h('div', { class: 'muted small' }, item.queue + (item.owner ? ' · ' + item.owner : '')) : null))),
      links.length > shown.length ? h('p', { class: 'muted small' }, (links.length - shown.length) + ' more not shown.') : null);
  }

  function tasksPanel(loop) {
    const tasks = loop.tasks || [];
    if (!tasks.length) return null;
    return section('tasks', 'Tasks', h('ul', { class: 'plain-list' }, tasks.map((task) => h('li', {},
      h('strong', {}, task.kind.replace(/_/g, ' ')), ' for ', task.owner, ' · ', timeElement(task.created_at),
      task.note ? h('div', {}, task.note) : null,
      task.journey_loop ? h('div', { class: 'small' }, 'from ', link(loopHref(task.journey_loop), 'the journey loop')) : null))));
  }

  // ---------------------------------------------------------------------------------------------
  // Journey view: a stage × tag heat map of one window against the window before it.

  const METRICS = [
    ['nps', 'NPS'],
    ['volume', 'Volume'],
    ['trend', 'Trend'],
  ];
  const DEFAULT_TAG_ROWS = 25;

  async function journeyPage(context) {
    const params = context.params;
    context.title('Journeys');
    const kind = params.get('kind') || 'week';
    const metric = METRICS.some(([value]) => value === params.get('metric')) ? params.get('metric') : 'nps';
    const level = params.get('level') === 'top' ? 'top' : 'tag';
    const showAll = params.get('all') === '1';
    const windowsAnswer = await api('/v1/journeys' + query({ group_by: 'window', kind }));
    if (!context.alive()) return;
    const windows = (windowsAnswer.groups || []).map((group) => group.window).filter(Boolean)
      .sort((a, b) => Date.parse(a.start) - Date.parse(b.start));
    const state = { kind, metric, level, window: params.get('window') || '', all: showAll ? '1' : '' };
    const controls = journeyControls(state, windows);
    if (!windows.length) {
      context.render(heading('Journeys'), controls, h('p', { class: 'notice' }, 'No journey figures yet: events feed them as they are processed.'));
      return;
    }
    const selected = windows.find((candidate) => Date.parse(candidate.start) === Date.parse(state.window)) || windows[windows.length - 1];
    const length = Date.parse(selected.end) - Date.parse(selected.start);
    const previousStart = new Date(Date.parse(selected.start) - length).toISOString();
    const answer = await api('/v1/journeys' + query({ group_by: 'stage,tag,window', kind, from: previousStart, to: selected.end }));
    if (!context.alive()) return;
    const currentStart = Date.parse(selected.start);
    const cells = new Map();
    const stageTotals = new Map();
    const tagTotals = new Map();
    const overall = { current: emptyFigures(), previous: emptyFigures() };
    for (const group of answer.groups || []) {
      const which = Date.parse(group.window.start) === currentStart ? 'current' : 'previous';
      const tag = level === 'top' ? topLevel(group.tag) : group.tag;
      addTo(cells, group.stage + '\u0000' + tag, which, group);
      addTo(stageTotals, group.stage, which, group);
      addTo(tagTotals, tag, which, group);
      addFigures(overall[which], group);
    }
    const stages = [...stageTotals.entries()]
      .sort((a, b) => (a[0] === 'unknown') - (b[0] === 'unknown') || b[1].current.events - a[1].current.events || a[0].localeCompare(b[0]))
      .map(([stage]) => stage);
    const allTags = [...tagTotals.entries()]
      .sort((a, b) => b[1].current.events - a[1].current.events || b[1].previous.events - a[1].previous.events || a[0].localeCompare(b[0]))
      .map(([tag]) => tag);
    const tags = showAll ? allTags : allTags.slice(0, DEFAULT_TAG_ROWS);
    const maxEvents = Math.max(1, ...[...cells.values()].map((cell) => cell.current.events));
    const title = METRICS.find(([value]) => value === metric)[1] + ' by stage and ' + (level === 'top' ? 'tag group' : 'tag')
      + ', ' + formatWindow(selected) + ' against the ' + kind + ' before';
    const table = h('table', { class: 'heatmap', id: 'journey-heatmap', 'aria-labelledby': 'journey-heatmap-title' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, level === 'top' ? 'Tag group' : 'Tag'),
        stages.map((stage) => h('th', { scope: 'col' }, stage)))),
      h('tbody', {},
        h('tr', { class: 'totals' }, h('th', { scope: 'row' }, 'All tags'),
          stages.map((stage) => heatCell(stageTotals.get(stage), metric, maxEvents, true))),
        tags.map((tag) => h('tr', {},
          h('th', { scope: 'row' }, tag === 'uncategorized' ? tag : link(loopsHref({ tag }), tag)),
          stages.map((stage) => heatCell(cells.get(stage + '\u0000' + tag), metric, maxEvents, false))))));
    context.render(
      heading('Journeys'),
      controls,
      h('dl', { class: 'stats' },
        stat(kind === 'week' ? 'Week' : 'Day', formatWindow(selected)),
        stat('Events', overall.current.events + ' (' + trendText(overall.current.events, overall.previous.events) + ')'),
        stat('NPS', npsText(overall.current) + (npsOf(overall.current) !== null && npsOf(overall.previous) !== null
          ? ' (' + signed(npsOf(overall.current) - npsOf(overall.previous)) + ' points)' : '')),
        stat('Tickets', String(overall.current.tickets))),
      h('h2', { id: 'journey-heatmap-title' }, title),
      legend(metric),
      h('div', { class: 'table-scroll', tabindex: '0', role: 'region', 'aria-labelledby': 'journey-heatmap-title' }, table),
      allTags.length > DEFAULT_TAG_ROWS
        ? h('p', {}, link('#/journeys' + query({ ...state, window: selected.start, all: showAll ? '' : '1' }),
          showAll ? 'Show the top ' + DEFAULT_TAG_ROWS + ' tags' : 'Show all ' + allTags.length + ' tags'))
        : null,
    );
  }

  function journeyControls(state, windows) {
    const form = h('form', { class: 'filters', 'aria-label': 'Journey view settings' },
      field('Window', h('select', { name: 'kind', id: 'journey-kind' },
        ['day', 'week'].map((kind) => h('option', { value: kind, selected: kind === state.kind }, kind)))),
      windows.length ? field('Starting', h('select', { name: 'window', id: 'journey-window' },
        windows.slice().reverse().map((window, index) => h('option', {
          value: window.start,
          selected: state.window ? Date.parse(window.start) === Date.parse(state.window) : index === 0,
        }, formatWindow(window))))) : null,
      field('Colour by', h('select', { name: 'metric', id: 'journey-metric' },
        METRICS.map(([value, label]) => h('option', { value, selected: value === state.metric }, label)))),
      field('Tags', h('select', { name: 'level', id: 'journey-level' },
        h('option', { value: 'tag', selected: state.level === 'tag' }, 'each tag'),
        h('option', { value: 'top', selected: state.level === 'top' }, 'top-level groups'))),
      h('div', { class: 'form-actions' }, h('button', { type: 'submit', class: 'primary' }, 'Show')));
    const go = (focusId) => {
      const data = new FormData(form);
      const wanted = { ...state };
      for (const [name, value] of data.entries()) wanted[name] = String(value);
      // A window of the other kind would not exist: start from that kind's newest.
      if (wanted.kind !== state.kind) wanted.window = '';
      focusAfterRender = focusId;
      navigate('#/journeys' + query(wanted));
    };
    form.addEventListener('submit', (event) => { event.preventDefault(); go('journey-kind'); });
    // A change applies at once; keyboard users keep their place on the control they changed.
    form.addEventListener('change', (event) => go(event.target.id));
    return form;
  }

  function legend(metric) {
    const text = {
      nps: 'NPS from −100 (red) to +100 (green); n is the number of NPS responses. A dash: events but no NPS response; hatched: no events.',
      volume: 'Events in the window; darker is more. The small line counts tickets.',
      trend: 'Events against the previous window: ▲ more (red), ▼ fewer (green); the small line gives the NPS change.',
    }[metric];
    return h('p', { class: 'legend muted small' }, text);
  }

  function emptyFigures() {
    return { events: 0, tickets: 0, promoters: 0, passives: 0, detractors: 0, nps_responses: 0 };
  }

  function addFigures(target, group) {
    target.events += group.events || 0;
    target.tickets += group.tickets || 0;
    target.promoters += group.promoters || 0;
    target.passives += group.passives || 0;
    target.detractors += group.detractors || 0;
    target.nps_responses += (group.responses && group.responses.nps) || 0;
  }

  function addTo(map, key, which, group) {
    if (!map.has(key)) map.set(key, { current: emptyFigures(), previous: emptyFigures() });
    addFigures(map.get(key)[which], group);
  }

  function topLevel(tag) {
    const dot = tag.indexOf('.');
    return dot >= 0 ? tag.slice(0, dot) : tag;
  }

  // NPS from the counts, so that groups added together stay exact.
  function npsOf(figures) {
    if (!figures || !figures.nps_responses) return null;
    return Math.round(((figures.promoters - figures.detractors) / figures.nps_responses) * 100);
  }

  function npsText(figures) {
    const nps = npsOf(figures);
    return nps === null ? '—' : signed(nps);
  }

  function trendRatio(current, previous) {
    if (previous === 0) return current === 0 ? 0 : null;
    return (current - previous) / previous;
  }

  function trendText(current, previous) {
    const ratio = trendRatio(current, previous);
    if (ratio === null) return 'new';
    if (ratio === 0) return 'no change';
    return (ratio > 0 ? '▲ ' : '▼ ') + Math.round(Math.abs(ratio) * 100) + '%';
  }

  function heatCell(figures, metric, maxEvents, isTotal) {
    const td = h('td', { class: 'heat' + (isTotal ? ' total' : '') });
    if (!figures || (figures.current.events === 0 && figures.previous.events === 0)) {
      td.classList.add('empty');
      td.append(h('span', { class: 'visually-hidden' }, 'no events'));
      return td;
    }
    const { current, previous } = figures;
    let main = '';
    let sub = '';
    let colour = null;
    if (metric !== 'trend' && current.events === 0) {
      td.append(h('span', { class: 'heat-main' }, '—'), h('span', { class: 'heat-sub' }, 'was ' + previous.events));
      return td;
    }
    if (metric === 'nps') {
      const nps = npsOf(current);
      main = nps === null ? '—' : signed(nps);
      sub = nps === null ? current.events + (current.events === 1 ? ' event' : ' events') : 'n=' + current.nps_responses;
      if (nps !== null) colour = nps < 0 ? [4, Math.abs(nps) / 100] : [140, nps / 100];
    } else if (metric === 'volume') {
      main = String(current.events);
      sub = current.tickets + ' tickets';
      colour = [215, isTotal ? 0 : Math.sqrt(current.events / maxEvents)];
    } else {
      main = trendText(current.events, previous.events);
      const now = npsOf(current);
      const before = npsOf(previous);
      sub = current.events + ' vs ' + previous.events + (now !== null && before !== null ? ' · NPS ' + signed(now - before) : '');
      const ratio = trendRatio(current.events, previous.events);
      const strength = ratio === null ? 1 : Math.min(1, Math.abs(ratio));
      if (ratio !== 0) colour = ratio === null || ratio > 0 ? [4, strength] : [140, strength];
    }
    if (colour && colour[1] > 0) {
      // Set through the CSSOM (allowed by the page's Content-Security-Policy, unlike inline styles).
      td.style.backgroundColor = 'hsl(' + colour[0] + ' 70% 50% / ' + (0.12 + colour[1] * 0.55).toFixed(2) + ')';
    }
    td.append(h('span', { class: 'heat-main' }, main), h('span', { class: 'heat-sub' }, sub));
    return td;
  }

  // ---------------------------------------------------------------------------------------------
  // Accounts.

  function accountSearchForm(value) {
    const input = h('input', { id: 'account-search', name: 'account', value: value || '', autocomplete: 'off', spellcheck: 'false', required: true });
    const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Find an account' },
      field('Account id', input),
      h('div', { class: 'form-actions' }, h('button', { type: 'submit', class: 'primary' }, 'Open account')));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const id = input.value.trim();
      if (id) navigate(accountHref(id));
    });
    return form;
  }

  async function accountSearchPage(context) {
    context.title('Accounts');
    context.render(heading('Accounts'),
      h('p', { class: 'lead' }, 'An account’s profile, its open loops, its recent signals and its journey. Account ids are also linked from every loop.'),
      accountSearchForm(''));
  }

  async function accountPage(context, id) {
    context.title('Account ' + id);
    let view;
    try {
      view = await api('/v1/accounts/' + encodeURIComponent(id));
    } catch (error) {
      if (!context.alive()) return;
      if (error.status === 404) {
        context.render(heading('Account ' + id), h('p', { class: 'notice' }, error.message), accountSearchForm(id));
        return;
      }
      throw error;
    }
    if (!context.alive()) return;
    const profile = view.profile;
    const openLoops = view.open_loops || [];
    const signals = view.recent_signals || [];
    const journey = view.journey || [];
    context.render(
      h('nav', { class: 'breadcrumbs', 'aria-label': 'Breadcrumbs' },
        link('#/accounts', 'Accounts'), ' › ', h('span', { 'aria-current': 'page' }, id)),
      heading(profile && profile.name ? profile.name : id,
        profile && profile.name ? h('span', { class: 'muted subtitle' }, ' ' + id) : null),
      h('div', { class: 'loop-layout' },
        h('div', { class: 'loop-main' },
          section('open-loops', 'Open loops (' + openLoops.length + ')',
            openLoops.length ? loopTable(openLoops, 'Open loops of the account') : h('p', { class: 'muted' }, 'No open loop.'),
            h('p', {}, link(loopsHref({ account_id: id }), 'Every loop of this account'))),
          section('account-journey', 'Journey: signals by stage', stageSignals(journey)),
          section('signals', 'Recent signals (' + signals.length + ')', signalTable(signals))),
        h('div', { class: 'loop-side' }, section('profile', 'Profile', profileDetails(profile)))),
    );
  }

  function profileDetails(profile) {
    if (!profile) {
      return h('p', { class: 'muted' }, 'Not in the account directory: no account.upserted event named it yet.');
    }
    return definitions([
      ['Name', profile.name],
      ['Tier', profile.tier],
      ['Segment', profile.segment],
      ['Region', profile.region],
      ['ARR', profile.arr === null || profile.arr === undefined ? null : Number(profile.arr).toLocaleString()],
      ['CSM', profile.csm],
      ['Lifecycle stage', profile.lifecycle_stage],
      ['Started', timeElement(profile.started_at)],
    ]);
  }

  function stageSignals(journey) {
    if (!journey.length) return h('p', { class: 'muted' }, 'No signals yet.');
    return h('ul', { class: 'stage-list' }, journey.map((stage) => {
      const tags = Object.entries(stage.tags || {}).sort((a, b) => b[1] - a[1]);
      return h('li', {},
        h('div', { class: 'stage-head' },
          h('strong', {}, stage.stage), ' · ', String(stage.signals), stage.signals === 1 ? ' signal' : ' signals',
          h('span', { class: 'muted small' }, ' · ', formatTime(stage.first_signal_at), ' – ', formatTime(stage.last_signal_at))),
        h('ul', { class: 'chips' }, tags.map(([tag, count]) =>
          h('li', {}, h('code', {}, tag), ' ', h('span', { class: 'chip-count' }, String(count))))));
    }));
  }

  function signalTable(signals) {
    if (!signals.length) return h('p', { class: 'muted' }, 'No recent signal.');
    const rows = signals.map((signal) => h('tr', {},
      cell('Time', timeElement(signal.time)),
      cell('Detector', signal.detector, h('div', { class: 'muted small' }, signal.severity)),
      cell('Tag', h('code', {}, signal.tag)),
      cell('Stage', signal.stage || '—'),
      cell('Reason', signal.reason),
      cell('Loop', signal.loop_id ? link(loopHref(signal.loop_id), 'the loop') : '—')));
    return h('div', { class: 'table-wrap' },
      h('table', { class: 'data' },
        h('caption', { class: 'visually-hidden' }, 'Recent signals of the account'),
        h('thead', {}, h('tr', {}, ['Time', 'Detector', 'Tag', 'Stage', 'Reason', 'Loop'].map((title) => h('th', { scope: 'col' }, title)))),
        h('tbody', {}, rows)));
  }

  // ---------------------------------------------------------------------------------------------
  // Dead letters.

  async function deadLettersPage(context) {
    context.title('Dead letters');
    const cursor = context.params.get('cursor') || '';
    const page = await api('/v1/dead-letters' + query({ limit: 50, cursor }));
    if (!context.alive()) return;
    const rows = page.dead_letters || [];
    context.render(
      heading('Dead letters'),
      h('p', { class: 'lead' }, 'Events sigloop rejected, with the reason. Each is kept for the log’s retention.'),
      rows.length === 0 ? h('p', { class: 'notice' }, cursor ? 'No more dead letters.' : 'No dead letters: every event so far was accepted.')
        : h('div', { class: 'table-wrap' }, h('table', { class: 'data', id: 'dead-letters' },
          h('caption', { class: 'visually-hidden' }, 'Rejected events'),
          h('thead', {}, h('tr', {}, ['Received', 'Code', 'Message', 'Event', 'Origin', 'Payload'].map((title) => h('th', { scope: 'col' }, title)))),
          h('tbody', {}, rows.map((row) => h('tr', {},
            cell('Received', timeElement(row.received_at)),
            cell('Code', h('code', { class: 'badge code' }, row.code)),
            cell('Message', row.message),
            cell('Event', row.event_id ? h('code', {}, row.event_id) : h('span', { class: 'muted' }, '—'),
              row.event_source ? h('div', { class: 'muted small' }, row.event_source) : null),
            cell('Origin', row.origin, row.index !== null && row.index !== undefined ? h('div', { class: 'muted small' }, 'item ' + row.index) : null),
            cell('Payload', h('details', {}, h('summary', {}, 'Show payload (' + row.payload.length + ' characters)'),
              h('pre', { class: 'payload' }, row.payload.length > 4000 ? row.payload.slice(0, 4000) + '…' : row.payload)))))))),
      h('nav', { class: 'pager', 'aria-label': 'Pages' },
        cursor ? link('#/dead-letters', '← Newest') : null,
        page.next_cursor !== null && page.next_cursor !== undefined ? link('#/dead-letters' + query({ cursor: page.next_cursor }), 'Older →') : null),
    );
  }

  // ---------------------------------------------------------------------------------------------
  // Taxonomy tester: pasted text, tagged by a dry run (POST /v1/explain of a made-up ticket).

  let testerInput = { subject: '', body: '' };

  async function testerPage(context) {
    context.title('Taxonomy tester');
    const subject = h('input', { id: 'tester-subject', name: 'subject', value: testerInput.subject, autocomplete: 'off' });
    const body = h('textarea', { id: 'tester-text', name: 'body', rows: '6', spellcheck: 'true' });
    body.value = testerInput.body;
    // Not a live region: it would read the whole result; a summary is announced instead.
    const results = h('div', { id: 'tester-results' });
    const form = h('form', { class: 'tester-form', id: 'tester-form' },
      field('Subject', subject, 'Optional: tagged as a ticket subject.'),
      field('Text', body, 'Tagged as a ticket body. Nothing is stored.'),
      h('div', { class: 'form-actions' }, h('button', { type: 'submit', class: 'primary', id: 'tester-submit' }, 'Tag this text')));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      testerInput = { subject: subject.value, body: body.value };
      if (!subject.value.trim() && !body.value.trim()) {
        fill(results, h('p', { class: 'error-text' }, 'Paste some text first.'));
        body.focus();
        return;
      }
      fill(results, h('p', { class: 'loading' }, 'Tagging…'));
      const data = { ticket_id: 'taxonomy-tester', account_id: 'taxonomy-tester' };
      if (subject.value) data.subject = subject.value;
      if (body.value) data.body = body.value;
      const explainEvent = {
        specversion: '1.0',
        id: 'ui-tester-' + Date.now(),
        source: 'sigloop-ui',
        type: 'ticket.opened',
        time: new Date().toISOString(),
        data,
      };
      try {
        const explanation = await api('/v1/explain', { method: 'POST', body: explainEvent });
        if (!context.alive()) return;
        fill(results, testerResults(explanation, { subject: subject.value, body: body.value }));
        const tags = explanation.tags.matches.length;
        announce(tags ? 'Tagged: ' + tags + (tags === 1 ? ' tag' : ' tags') + ', primary ' + explanation.tags.primary + '.' : 'No tag matched.');
      } catch (error) {
        if (context.alive()) fill(results, errorBox(error));
      }
    });
    context.render(
      heading('Taxonomy tester'),
      h('p', { class: 'lead' }, 'Paste a customer’s words to see which tags of the taxonomy match, and why. sigloop tags the text as a dry run of a ticket; nothing is stored and no loop opens.'),
      form,
      results);
  }

  // Byte offsets (UTF-8, as the API gives them) to positions in a JavaScript string (UTF-16).
  function byteToIndexMap(text) {
    const map = new Map();
    let bytes = 0;
    let index = 0;
    for (const character of text) {
      map.set(bytes, index);
      const code = character.codePointAt(0);
      bytes += code < 0x80 ? 1 : code < 0x800 ? 2 : code < 0x10000 ? 3 : 4;
      index += character.length;
    }
    map.set(bytes, index);
    return map;
  }

  function spanInText(text, map, evidence) {
    const start = map.get(evidence.start);
    const end = map.get(evidence.end);
    if (start !== undefined && end !== undefined && end > start && text.slice(start, end).startsWith(evidence.text)) {
      return [start, end];
    }
    // Not where the bytes say (it should always be): fall back to the matched text itself.
    const found = evidence.text ? text.indexOf(evidence.text) : -1;
    return found >= 0 ? [found, found + evidence.text.length] : null;
  }

  // The field's text with every evidence span marked. Spans may overlap (a keyword inside a
  // phrase): the text is cut at every span edge and each piece is marked with all tags covering it.
  function highlightedText(text, spans, fieldName) {
    const edges = new Set([0, text.length]);
    for (const span of spans) { edges.add(span.start); edges.add(span.end); }
    const points = [...edges].sort((a, b) => a - b);
    const pieces = [];
    for (let i = 0; i + 1 < points.length; i++) {
      const from = points[i];
      const to = points[i + 1];
      const piece = text.slice(from, to);
      const covering = spans.filter((span) => span.start <= from && span.end >= to);
      if (!covering.length) {
        pieces.push(piece);
        continue;
      }
      const tags = [...new Set(covering.map((span) => span.tag))];
      pieces.push(h('mark', {
        // Darker where the evidence of several tags overlaps (not several rules of one tag).
        class: 'hl' + (tags.length > 1 ? ' hl-overlap' : ''),
        'data-tags': tags.join(' '),
        title: tags.join(', ') + ' — ' + [...new Set(covering.map((span) => span.rule))].join(', '),
      }, piece));
    }
    return h('div', { class: 'highlighted', 'data-field': fieldName }, pieces);
  }

  function testerResults(explanation, texts) {
    const tagging = explanation.tags;
    const matches = tagging.matches || [];
    if (!matches.length) {
      return [h('h2', {}, 'Result'), h('p', { class: 'notice', id: 'tester-primary' },
        'No rule matched: this text would be ', h('code', {}, tagging.primary), '.')];
    }
    const spansByField = { subject: [], body: [] };
    const otherEvidence = [];
    for (const match of matches) {
      for (const evidence of match.evidence || []) {
        const text = texts[evidence.field];
        if (typeof text !== 'string' || !(evidence.field in spansByField)) {
          otherEvidence.push([match.tag, evidence]);
          continue;
        }
        const span = spanInText(text, byteToIndexMap(text), evidence);
        if (span) spansByField[evidence.field].push({ start: span[0], end: span[1], tag: match.tag, rule: evidence.rule });
      }
    }
    const blocks = ['subject', 'body'].filter((name) => texts[name]).map((name) => h('div', { class: 'field-text' },
      h('h3', {}, name === 'subject' ? 'Subject' : 'Text'), highlightedText(texts[name], spansByField[name], name)));
    const tagButtons = h('div', { class: 'button-row', role: 'group', 'aria-label': 'Show the evidence of one tag' });
    const highlights = h('div', { id: 'tester-highlight' }, blocks);
    const select = (tag) => {
      for (const button of tagButtons.querySelectorAll('button')) {
        button.setAttribute('aria-pressed', String(button.dataset.tag === tag));
      }
      for (const mark of highlights.querySelectorAll('mark')) {
        const tags = mark.dataset.tags.split(' ');
        mark.classList.toggle('dim', Boolean(tag) && !tags.includes(tag));
      }
    };
    tagButtons.append(h('button', { type: 'button', 'data-tag': '', 'aria-pressed': 'true', onclick: () => select('') }, 'All tags'),
      ...matches.map((match) => h('button', { type: 'button', 'data-tag': match.tag, 'aria-pressed': 'false', onclick: () => select(match.tag) }, match.tag)));
    const signals = explanation.signals || [];
    return [
      h('h2', {}, 'Result'),
      h('p', { id: 'tester-primary' }, 'Primary tag ', h('code', { class: 'tag primary-tag' }, tagging.primary), ' of ', String(matches.length), matches.length === 1 ? ' matching tag.' : ' matching tags.'),
      tagButtons,
      highlights,
      otherEvidence.length ? h('p', { class: 'small' }, 'Also matched on structured fields: ',
        otherEvidence.map(([tag, evidence], index) => [index ? ', ' : null, h('code', {}, tag), ' (' + evidence.field + ' = ', h('code', {}, evidence.text), ')'])) : null,
      h('h3', {}, 'Tags and their rules'),
      tagMatchList(matches, tagging.primary),
      signals.length ? [h('h3', {}, 'What a ticket like this would do'),
        h('p', { class: 'muted small' }, 'For an account that is not in the directory, on a fresh key.'),
        h('ul', {}, signals.map((item) => h('li', {},
          h('strong', {}, item.signal.detector), ': ', item.signal.reason, ' → ', item.outcome, ' a loop on ', h('strong', {}, item.queue), ' for ', item.owner, ' (' + item.priority + ')')))]
        : h('p', { class: 'muted small' }, 'No detector would raise a signal for this one ticket alone.'),
    ];
  }

  // ---------------------------------------------------------------------------------------------
  // Sign-in.

  async function signInPage(context) {
    context.title('Sign in');
    const token = h('input', { id: 'sign-in-token', name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false' });
    const actor = h('input', { id: 'sign-in-name', name: 'name', value: session.actor, autocomplete: 'name', spellcheck: 'false' });
    const status = h('p', { role: 'status', class: 'action-status' });
    // When the server asked for a token, the token names the actor and there is no way around it.
    const required = Boolean(signInReason);
    const form = h('form', { class: 'sign-in', id: 'sign-in-form' },
      field('API token', token, 'Kept in this browser tab only (session storage) and sent as a bearer token with every request.'),
      required ? null : field('Your name', actor, 'Recorded as the actor of your actions when sigloop runs without tokens.'),
      h('div', { class: 'form-actions' }, h('button', { type: 'submit', class: 'primary' }, 'Sign in'),
        required ? null : link(returnTo === '#/sign-in' ? '#/' : returnTo, 'Continue without a token')),
      status);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      if (!required) session.actor = actor.value.trim();
      session.token = token.value.trim();
      renderSession();
      status.className = 'action-status';
      status.textContent = 'Checking…';
      try {
        try {
          identity = await api('/v1/whoami');
        } catch (error) {
          // A server without /v1/whoami: any read tells whether the token is taken.
          if (error.status !== 404) throw error;
          identity = null;
          await api('/v1/queues');
        }
      } catch (error) {
        status.className = 'action-status error-text';
        status.textContent = error.message;
        token.focus();
        return;
      }
      renderSession();
      signInReason = '';
      announce(session.token ? 'Signed in.' : 'Saved.');
      navigate(returnTo && returnTo !== '#/sign-in' ? returnTo : '#/');
    });
    context.render(
      heading('Sign in'),
      signInReason ? h('p', { class: 'notice', role: 'alert', id: 'sign-in-reason' }, signInReason) : null,
      identity && identity.auth === 'open' && !signInReason
        ? h('p', { class: 'notice' }, 'This sigloop runs without tokens: everything works without signing in.') : null,
      h('p', { class: 'lead' }, 'When sigloop is configured with API tokens, the UI needs one. Without tokens (the default on 127.0.0.1) no sign-in is needed.'),
      form);
    if (required) focusAfterRender = 'sign-in-token';
  }

  // ---------------------------------------------------------------------------------------------
  // Start.

  document.addEventListener('click', (event) => {
    const skip = event.target.closest('[data-skip-link]');
    if (!skip) return;
    // The skip link must not change the hash (the router's), so it moves focus itself.
    event.preventDefault();
    document.getElementById('main').focus();
  });
  window.addEventListener('hashchange', route);
  renderSession();
  // Who this tab is (the token's name, or an open server) decides the header and the action form,
  // so it is asked before the first page is drawn.
  loadIdentity().then(route);
})();
