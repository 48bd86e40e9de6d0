// modbot console. Plain JavaScript, no build step, no dependency, nothing from another origin.
// Every value from the server reaches the page through textContent or DOM nodes (never markup
// built from strings), so chat text cannot become HTML. State-changing calls carry the
// session's CSRF token; the server checks every call's role exactly as it does over gRPC.
'use strict';

const S = {
  session: null, // {name, roles, csrfToken}
  view: 'feed',
  cleanup: [], // functions that stop the current view (EventSources, timers)
};

const VIEWS = [
  ['feed', 'Live feed'],
  ['review', 'Review queue'],
  ['appeals', 'Appeals'],
  ['actions', 'Actions'],
  ['user', 'User'],
  ['nuke', 'Nuke'],
  ['rules', 'Rules'],
  ['stats', 'Stats'],
  ['model', 'Model'],
];

// ---------------------------------------------------------------------------------------------
// DOM helpers

/** An element: h('td', {class: 'x', onclick: f}, 'text', child, ...). */
function h(tag, attrs, ...children) {
  const el = tag.startsWith('svg:')
    ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4))
    : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.setAttribute('class', value);
    else if (key === 'value') el.value = value;
    else if (key === 'checked') el.checked = !!value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

let fieldIds = 0;
/** A labelled input: returns [wrapper, input]. */
function field(label, input) {
  const id = input.id || `f${++fieldIds}`;
  input.id = id;
  return [h('span', { class: 'field' }, h('label', { for: id }, label), input), input];
}

function select(options, value) {
  return h('select', {}, options.map(([v, text]) => h('option', { value: v, selected: v === value }, text)));
}

function say(text, isError) {
  const status = document.getElementById('status');
  status.textContent = text || '';
  status.className = isError ? 'error' : '';
}

function errorText(error) {
  return error.field ? `${error.message}` : `${error.code ? error.code + ': ' : ''}${error.message}`;
}

const short = (name) => String(name || '').replace(/^[A-Z]+(_[A-Z]+)*?_(?=[A-Z]+$)/, '').toLowerCase();
const decisionName = (d) => String(d || '').replace(/^DECISION_/, '').toLowerCase();
function decisionBadge(d) {
  const name = decisionName(d) || 'unspecified';
  return h('span', { class: `badge d-${name}` }, name);
}
function when(ts) {
  if (!ts) return '';
  const date = new Date(ts);
  return Number.isNaN(date.getTime()) ? String(ts) : date.toLocaleTimeString();
}
function whenFull(ts) {
  if (!ts) return '';
  const date = new Date(ts);
  return Number.isNaN(date.getTime()) ? String(ts) : date.toLocaleString();
}
function reasonLine(r) {
  const what = r.ruleId || r.label || short(r.source);
  const score = r.threshold ? ` ${Number(r.score).toFixed(2)} ≥ ${Number(r.threshold).toFixed(2)}` : '';
  const shadow = r.shadow ? ' (shadow)' : '';
  return `${what}: ${decisionName(r.decision)}${score}${shadow}${r.description ? ' — ' + r.description : ''}`;
}
function reasonList(reasons) {
  return h('ul', { class: 'reasons' }, (reasons || []).map((r) => h('li', {}, reasonLine(r))));
}
const hasRole = (...roles) => (S.session?.roles || []).some((r) => roles.includes(r));

// ---------------------------------------------------------------------------------------------
// The API

/** Calls `Service/Method` with a JSON body; throws {code, message, field} on error. */
async function api(method, body) {
  const response = await fetch(`/modbot.v1.${method}`, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': S.session?.csrfToken || '' },
    body: JSON.stringify(body || {}),
  });
  let json = null;
  try { json = await response.json(); } catch (_) { json = null; }
  if (!response.ok) {
    const error = new Error(json?.message || response.statusText);
    error.code = json?.code || String(response.status);
    error.field = json?.field;
    if (response.status === 401) showLogin('Your session has ended; sign in again.');
    throw error;
  }
  return json;
}

/** An EventSource on a server stream; `onMessage(json)`; closed when the view changes. */
function watch(method, request, onMessage, onError) {
  const url = `/modbot.v1.${method}?message=${encodeURIComponent(JSON.stringify(request || {}))}`;
  const source = new EventSource(url);
  source.onmessage = (event) => onMessage(JSON.parse(event.data));
  source.addEventListener('error', (event) => {
    if (event.data) {
      const error = JSON.parse(event.data);
      onError?.(error);
      source.close();
    }
  });
  S.cleanup.push(() => source.close());
  return source;
}

// ---------------------------------------------------------------------------------------------
// Session

async function start() {
  try {
    const response = await fetch('/console/session', { credentials: 'same-origin' });
    if (response.ok) {
      S.session = await response.json();
      showShell();
      return;
    }
  } catch (_) { /* fall through to the login form */ }
  showLogin();
}

function showLogin(message) {
  stopView();
  S.session = null;
  const app = document.getElementById('app');
  const token = h('input', { type: 'password', autocomplete: 'current-password', id: 'token' });
  const error = h('p', { class: 'error', role: 'alert', id: 'login-error' }, message || '');
  const form = h('form', {
    onsubmit: async (event) => {
      event.preventDefault();
      error.textContent = '';
      const response = await fetch('/console/login', {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ token: token.value }),
      });
      const json = await response.json().catch(() => ({}));
      if (!response.ok) {
        error.textContent = json.message || response.statusText;
        token.select();
        return;
      }
      S.session = json;
      showShell();
    },
  },
  h('label', { for: 'token' }, 'Moderator or admin token'),
  token,
  h('button', { class: 'primary', type: 'submit', id: 'sign-in' }, 'Sign in'),
  error);
  document.getElementById('shell-header')?.remove();
  app.replaceChildren(h('section', { class: 'login panel' }, h('h2', {}, 'modbot console'), form));
  token.focus();
}

async function logout() {
  await fetch('/console/logout', {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': S.session?.csrfToken || '' },
    body: '{}',
  }).catch(() => {});
  showLogin('Signed out.');
}

function showShell() {
  document.getElementById('shell-header')?.remove();
  const nav = h('nav', { 'aria-label': 'Views' }, VIEWS.map(([id, title], i) =>
    h('button', { type: 'button', 'data-view': id, title: `${title} (${i + 1})`, onclick: () => go(id) }, title)));
  const header = h('header', { id: 'shell-header' },
    h('h1', {}, 'modbot'),
    nav,
    h('span', { class: 'muted', id: 'who' }, `${S.session.name} (${S.session.roles.join(', ')})`),
    h('button', { type: 'button', id: 'logout', onclick: logout }, 'Sign out'));
  document.body.prepend(header);
  const wanted = location.hash.slice(1);
  go(VIEWS.some(([id]) => id === wanted) ? wanted : 'feed');
}

function stopView() {
  for (const stop of S.cleanup.splice(0)) stop();
}

function go(view, arg) {
  stopView();
  S.view = view;
  if (location.hash !== `#${view}`) history.replaceState(null, '', `#${view}`);
  for (const button of document.querySelectorAll('nav button')) {
    if (button.dataset.view === view) button.setAttribute('aria-current', 'page');
    else button.removeAttribute('aria-current');
  }
  say('');
  const app = document.getElementById('app');
  const title = VIEWS.find(([id]) => id === view)[1];
  const heading = h('h2', { tabindex: '-1', id: 'view-title' }, title);
  const body = h('div', { id: `view-${view}` });
  app.replaceChildren(heading, body);
  heading.focus();
  RENDER[view](body, arg);
}

document.addEventListener('keydown', (event) => {
  if (!S.session || event.ctrlKey || event.metaKey || event.altKey) return;
  const typing = ['INPUT', 'TEXTAREA', 'SELECT'].includes(document.activeElement?.tagName);
  if (typing) return;
  const n = Number(event.key);
  if (n >= 1 && n <= VIEWS.length) {
    event.preventDefault();
    go(VIEWS[n - 1][0]);
  } else if (S.keys && S.keys[event.key]) {
    event.preventDefault();
    S.keys[event.key]();
  }
});

// ---------------------------------------------------------------------------------------------
// Live feed: events are buffered as they arrive and drawn at most once per animation frame,
// newest first, at most FEED_BATCH new rows a frame and FEED_ROWS in all, so a chat at 1,000
// messages/s costs one bounded DOM update a frame, not a thousand. (Nobody reads 1,000 lines a
// second: the counters say how many arrived; pause and the filters are for reading.)

const FEED_ROWS = 200;
const FEED_BATCH = 60;

function renderFeed(root) {
  const [channelField, channel] = field('Channel', h('input', { placeholder: 'all', size: 12, id: 'feed-channel' }));
  const [decisionField, decision] = field('Decision', select([
    ['', 'any'], ['notable', 'not allow'], ['DECISION_ALLOW', 'allow'], ['DECISION_HOLD', 'hold'],
    ['DECISION_HIDE', 'hide'], ['DECISION_WARN', 'warn'], ['DECISION_TIMEOUT', 'timeout'], ['DECISION_BAN', 'ban'],
  ], ''));
  const [ruleField, rule] = field('Rule', h('input', { size: 12, id: 'feed-rule' }));
  const [labelField, label] = field('Label', h('input', { size: 10, id: 'feed-label' }));
  const pause = h('button', { type: 'button', id: 'feed-pause', 'aria-pressed': 'false' }, 'Pause');
  const counters = h('span', { class: 'muted', id: 'feed-counters', 'aria-live': 'off' });
  const rows = h('tbody', { id: 'feed-rows' });
  root.append(
    h('div', { class: 'toolbar' }, channelField, decisionField, ruleField, labelField, pause, counters),
    h('p', { class: 'keys' }, h('kbd', {}, 'p'), ' pause'),
    h('table', {}, h('thead', {}, h('tr', {},
      ['Time', 'Channel', 'User', 'Message', 'Decision', 'Reasons'].map((t) => h('th', { scope: 'col' }, t)))), rows));

  const stats = { received: 0, rendered: 0, skipped: 0, frames: 0, maxFrameMs: 0, totalFrameMs: 0, maxLagMs: 0 };
  window.modbotFeedStats = stats;
  // Event-loop lag: how late a 50 ms timer fires is how long the page could not respond.
  let expected = performance.now() + 50;
  const lag = setInterval(() => {
    const now = performance.now();
    stats.maxLagMs = Math.max(stats.maxLagMs, now - expected);
    expected = now + 50;
  }, 50);
  S.cleanup.push(() => clearInterval(lag));
  let pending = [];
  let paused = false;
  let scheduled = false;

  const matches = (event) => {
    const v = event.verdict || {};
    if (decision.value === 'notable' && v.decision === 'DECISION_ALLOW') return false;
    if (decision.value && decision.value !== 'notable' && v.decision !== decision.value) return false;
    const reasons = v.reasons || [];
    if (rule.value && !reasons.some((r) => (r.ruleId || '').includes(rule.value))) return false;
    if (label.value && !reasons.some((r) => (r.label || '').includes(label.value))) return false;
    return true;
  };
  const row = (event) => {
    const m = event.message || {};
    const v = event.verdict || {};
    return h('tr', {},
      h('td', { class: 'muted' }, when(m.sentAt)),
      h('td', {}, m.channel),
      h('td', {}, h('button', { type: 'button', class: 'linklike', onclick: () => go('user', { channel: m.channel, userId: m.userId }) }, m.nick || m.userId)),
      h('td', { class: 'text' }, m.text),
      h('td', {}, decisionBadge(v.decision)),
      h('td', {}, reasonList(v.reasons)));
  };
  const draw = () => {
    scheduled = false;
    if (paused || pending.length === 0) return;
    const started = performance.now();
    const batch = pending.slice(-FEED_BATCH);
    pending = [];
    const fragment = document.createDocumentFragment();
    for (let i = batch.length - 1; i >= 0; i--) fragment.append(row(batch[i]));
    rows.prepend(fragment);
    while (rows.childElementCount > FEED_ROWS) rows.lastElementChild.remove();
    stats.rendered += batch.length;
    const took = performance.now() - started;
    stats.frames += 1;
    stats.totalFrameMs += took;
    stats.maxFrameMs = Math.max(stats.maxFrameMs, took);
    counters.textContent = `${stats.received} decisions, ${stats.skipped} skipped`;
  };
  const schedule = () => {
    if (!scheduled) {
      scheduled = true;
      requestAnimationFrame(draw);
    }
  };
  const toggle = () => {
    paused = !paused;
    pause.textContent = paused ? 'Resume' : 'Pause';
    pause.setAttribute('aria-pressed', String(paused));
    if (!paused) schedule();
  };
  pause.addEventListener('click', toggle);
  S.keys = { p: toggle };

  let source = null;
  const connect = () => {
    source?.close();
    source = watch('Admin/WatchDecisions', { channel: channel.value.trim() }, (event) => {
      stats.received += 1;
      stats.skipped += Number(event.skipped || 0);
      if (!matches(event)) return;
      pending.push(event);
      if (pending.length > FEED_ROWS * 4) pending = pending.slice(-FEED_ROWS);
      schedule();
    }, (error) => say(errorText(error), true));
  };
  channel.addEventListener('change', connect);
  connect();
}

// ---------------------------------------------------------------------------------------------
// Review queue

function renderReview(root) {
  const [channelField, channel] = field('Channel', h('input', { placeholder: 'all', size: 12, id: 'review-channel' }));
  const list = h('tbody', { id: 'review-items' });
  const detail = h('div', { class: 'panel', id: 'review-detail', 'aria-live': 'polite' }, 'Nothing selected.');
  root.append(
    h('div', { class: 'toolbar' }, channelField,
      h('button', { type: 'button', onclick: () => load() }, 'Refresh')),
    h('p', { class: 'keys' }, h('kbd', {}, 'j'), '/', h('kbd', {}, 'k'), ' next/previous  ',
      h('kbd', {}, 'a'), ' approve  ', h('kbd', {}, 'r'), ' reject with the chosen action'),
    h('div', { class: 'split' },
      h('div', { class: 'panel' }, h('table', {}, h('thead', {}, h('tr', {},
        ['Held', 'User', 'Message'].map((t) => h('th', { scope: 'col' }, t)))), list)),
      detail));
  let items = [];
  let index = -1;

  const choose = (i) => {
    if (items.length === 0) {
      index = -1;
      detail.replaceChildren('The queue is empty.');
      return;
    }
    index = Math.max(0, Math.min(i, items.length - 1));
    [...list.children].forEach((tr, j) => tr.classList.toggle('selected', j === index));
    list.children[index]?.focus();
    showItem(items[index]);
  };
  let actionSelect;
  let durationInput;
  let labelSelect;
  let noteInput;
  const showItem = (item) => {
    actionSelect = select([['ACTION_KIND_HIDE', 'hide'], ['ACTION_KIND_TIMEOUT', 'timeout'], ['ACTION_KIND_BAN', 'ban']], 'ACTION_KIND_HIDE');
    actionSelect.id = 'review-action';
    durationInput = h('input', { id: 'review-duration', size: 6, placeholder: '600s' });
    labelSelect = select([['', '(none)'], ['spam', 'spam'], ['insult', 'insult'], ['threat', 'threat'], ['harassment', 'harassment'], ['other', 'other']], '');
    labelSelect.id = 'review-label';
    noteInput = h('input', { id: 'review-note', size: 24 });
    const scores = Object.entries(item.scores || {}).map(([k, v]) => `${k} ${Number(v).toFixed(2)}`).join(', ');
    const history = h('div', { id: 'review-user' }, h('p', { class: 'muted' }, 'Loading the user…'));
    detail.replaceChildren(...[
      h('h3', {}, `${item.nick || item.userId} in ${item.channel}`),
      h('p', { class: 'text', id: 'review-text' }, item.text),
      h('h3', {}, 'Why it was held'), reasonList(item.reasons),
      scores ? h('p', { class: 'muted' }, `Model: ${scores}`) : null,
      h('div', { class: 'toolbar' },
        h('button', { type: 'button', class: 'primary', id: 'review-approve', onclick: () => rule('REVIEW_RULING_APPROVE') }, 'Approve (a)'),
        h('span', { class: 'field' }, h('label', { for: 'review-action' }, 'Action'), actionSelect),
        h('span', { class: 'field' }, h('label', { for: 'review-duration' }, 'Duration'), durationInput),
        h('span', { class: 'field' }, h('label', { for: 'review-label' }, 'Label'), labelSelect),
        h('span', { class: 'field' }, h('label', { for: 'review-note' }, 'Note'), noteInput),
        h('button', { type: 'button', class: 'danger', id: 'review-reject', onclick: () => rule('REVIEW_RULING_REJECT') }, 'Reject (r)')),
      h('h3', {}, 'The user'), history].filter(Boolean));
    userSummary(item.channel, item.userId).then((node) => history.replaceChildren(node));
  };
  const rule = async (ruling) => {
    const item = items[index];
    if (!item) return;
    const request = { id: item.id, ruling, moderator: S.session.name, note: noteInput.value };
    if (ruling === 'REVIEW_RULING_REJECT') {
      request.action = actionSelect.value;
      if (durationInput.value.trim() && request.action !== 'ACTION_KIND_HIDE') request.duration = durationInput.value.trim();
      if (labelSelect.value) request.label = labelSelect.value;
    }
    try {
      const answer = await api('Review/ResolveReview', request);
      say(`${ruling === 'REVIEW_RULING_APPROVE' ? 'Approved' : 'Rejected'}${answer.action?.id ? '; action ' + answer.action.id : ''}.`);
      items.splice(index, 1);
      list.children[index]?.remove();
      choose(index);
    } catch (error) {
      say(errorText(error), true);
    }
  };
  const load = async () => {
    try {
      const answer = await api('Review/ListReviews', { channel: channel.value.trim(), status: 'REVIEW_STATUS_PENDING', pageSize: 100 });
      items = answer.items || [];
      list.replaceChildren(...items.map((item, i) => h('tr', { tabindex: '0', onclick: () => choose(i) },
        h('td', { class: 'muted' }, when(item.createdAt)), h('td', {}, item.nick || item.userId), h('td', { class: 'text' }, item.text))));
      choose(0);
    } catch (error) {
      say(errorText(error), true);
    }
  };
  S.keys = {
    j: () => choose(index + 1),
    k: () => choose(index - 1),
    a: () => rule('REVIEW_RULING_APPROVE'),
    r: () => rule('REVIEW_RULING_REJECT'),
  };
  channel.addEventListener('change', load);
  // Items another moderator settles leave the list; new held messages are looked for every
  // few seconds (the watch tells of settled items only).
  watch('Review/WatchReviews', { channel: channel.value.trim() }, (item) => {
    if (items.some((i) => i.id === item.id)) load();
  });
  const poll = setInterval(() => {
    if (items.length === 0) load();
  }, 3000);
  S.cleanup.push(() => clearInterval(poll));
  load();
}

/** Heat, reputation, ladder, recent verdicts and actions of a user, as one block. */
async function userSummary(channel, userId) {
  try {
    const user = await api('Admin/GetUser', { channel, userId });
    return h('div', {},
      h('dl', { class: 'kv' },
        h('dt', {}, 'Nick'), h('dd', {}, user.nick || user.userId),
        h('dt', {}, 'Messages'), h('dd', {}, user.messages),
        h('dt', {}, 'First seen'), h('dd', {}, whenFull(user.firstSeen)),
        h('dt', {}, 'Heat'), h('dd', {}, Number(user.heat).toFixed(2)),
        h('dt', {}, 'Reputation'), h('dd', {}, Number(user.reputation).toFixed(2)),
        h('dt', {}, 'Strikes'), h('dd', {}, Number(user.strikes).toFixed(2)),
        h('dt', {}, 'Ladder step'), h('dd', {}, `${user.ladderStep} (next: ${decisionName(user.nextEscalation)}${user.nextTimeout ? ' ' + user.nextTimeout : ''})`)),
      h('h3', {}, 'Recent messages'),
      h('ul', { class: 'reasons', id: 'user-messages' }, (user.recentMessages || []).map((m) =>
        h('li', {}, h('span', { class: 'muted mono' }, when(m.sentAt)), ' ', m.text))),
      h('h3', {}, 'Recent verdicts'),
      h('ul', { class: 'reasons' }, (user.recentVerdicts || []).map((v) =>
        h('li', {}, decisionBadge(v.decision), ' ', (v.reasons || []).map((r) => r.ruleId || r.label).filter(Boolean).join(', ')))),
      h('h3', {}, 'Recent actions'),
      h('ul', { class: 'reasons' }, (user.recentActions || []).map((a) =>
        h('li', {}, `${short(a.kind)} ${a.duration || ''} — ${a.reason} (${short(a.status)}, ${whenFull(a.createdAt)})`))));
  } catch (error) {
    return h('p', { class: 'muted' }, errorText(error));
  }
}

// ---------------------------------------------------------------------------------------------
// Appeals

function renderAppeals(root) {
  const list = h('tbody', { id: 'appeal-items' });
  const detail = h('div', { class: 'panel', id: 'appeal-detail', 'aria-live': 'polite' }, 'Nothing selected.');
  root.append(h('div', { class: 'split' },
    h('div', { class: 'panel' }, h('table', {}, h('thead', {}, h('tr', {},
      ['Filed', 'User', 'Appeal'].map((t) => h('th', { scope: 'col' }, t)))), list)),
    detail));
  const show = async (appeal) => {
    const note = h('input', { id: 'appeal-note', size: 30 });
    const resolve = async (resolution) => {
      try {
        const answer = await api('Appeals/ResolveAppeal', { id: appeal.id, resolution, moderator: S.session.name, note: note.value });
        say(`Appeal ${short(answer.appeal?.status || resolution)}${answer.reversal?.id ? '; reversal ' + answer.reversal.id : ''}.`);
        load();
      } catch (error) {
        say(errorText(error), true);
      }
    };
    const action = await api('Actions/GetAction', { id: appeal.actionId }).catch(() => null);
    detail.replaceChildren(
      h('h3', {}, `${appeal.userId} in ${appeal.channel}`),
      h('p', { class: 'text', id: 'appeal-text' }, appeal.text),
      h('h3', {}, 'The action appealed'),
      action ? h('p', {}, `${short(action.kind)} ${action.duration || ''} by ${short(action.source)}: ${action.reason}`) : h('p', { class: 'muted' }, 'The action is gone.'),
      h('div', { class: 'toolbar' },
        h('span', { class: 'field' }, h('label', { for: 'appeal-note' }, 'Note'), note),
        h('button', { type: 'button', id: 'appeal-uphold', onclick: () => resolve('APPEAL_RESOLUTION_UPHOLD') }, 'Uphold'),
        h('button', { type: 'button', class: 'primary', id: 'appeal-overturn', onclick: () => resolve('APPEAL_RESOLUTION_OVERTURN') }, 'Overturn')),
      h('h3', {}, 'The user'), await userSummary(appeal.channel, appeal.userId));
  };
  const load = async () => {
    try {
      const answer = await api('Appeals/ListAppeals', { status: 'APPEAL_STATUS_OPEN', pageSize: 100 });
      const appeals = answer.appeals || [];
      list.replaceChildren(...appeals.map((appeal) => h('tr', { tabindex: '0', onclick: () => show(appeal), onkeydown: (e) => { if (e.key === 'Enter') show(appeal); } },
        h('td', { class: 'muted' }, when(appeal.createdAt)), h('td', {}, appeal.userId), h('td', { class: 'text' }, appeal.text))));
      if (appeals.length === 0) detail.replaceChildren('No open appeals.');
      else show(appeals[0]);
    } catch (error) {
      say(errorText(error), true);
    }
  };
  S.keys = {};
  load();
}

// ---------------------------------------------------------------------------------------------
// Actions log, with undo

const UNDO = { ACTION_KIND_TIMEOUT: 'ACTION_KIND_UNMUTE', ACTION_KIND_HIDE: 'ACTION_KIND_UNMUTE', ACTION_KIND_BAN: 'ACTION_KIND_UNBAN' };

function renderActions(root) {
  const [channelField, channel] = field('Channel', h('input', { size: 12, id: 'actions-channel' }));
  const [userField, user] = field('User', h('input', { size: 12, id: 'actions-user' }));
  const [kindField, kind] = field('Kind', select([['', 'any'], ['ACTION_KIND_HIDE', 'hide'], ['ACTION_KIND_WARN', 'warn'],
    ['ACTION_KIND_TIMEOUT', 'timeout'], ['ACTION_KIND_BAN', 'ban'], ['ACTION_KIND_UNMUTE', 'unmute'], ['ACTION_KIND_UNBAN', 'unban']], ''));
  const [sourceField, source] = field('Source', select([['', 'any'], ['ACTION_SOURCE_AUTOMOD', 'automod'], ['ACTION_SOURCE_MODERATOR', 'moderator'],
    ['ACTION_SOURCE_APPEAL', 'appeal'], ['ACTION_SOURCE_NUKE', 'nuke'], ['ACTION_SOURCE_API', 'api']], ''));
  const rows = h('tbody', { id: 'actions-rows' });
  const load = async () => {
    const request = { channel: channel.value.trim(), targetUserId: user.value.trim(), pageSize: 100 };
    if (kind.value) request.kind = kind.value;
    if (source.value) request.source = source.value;
    try {
      const answer = await api('Actions/ListActions', request);
      rows.replaceChildren(...(answer.actions || []).map((a) => h('tr', { 'data-action': a.id },
        h('td', { class: 'muted' }, whenFull(a.createdAt)),
        h('td', {}, a.channel),
        h('td', {}, a.targetNick || a.targetUserId),
        h('td', {}, short(a.kind), a.duration ? ` ${a.duration}` : ''),
        h('td', {}, short(a.source), a.moderator ? ` (${a.moderator})` : ''),
        h('td', { class: 'text' }, a.reason),
        h('td', {}, short(a.status)),
        h('td', {}, UNDO[a.kind] ? h('button', { type: 'button', class: 'undo', onclick: () => undo(a) }, 'Undo') : ''))));
    } catch (error) {
      say(errorText(error), true);
    }
  };
  const undo = async (a) => {
    try {
      const answer = await api('Actions/ExecuteAction', {
        channel: a.channel, targetUserId: a.targetUserId, targetNick: a.targetNick, kind: UNDO[a.kind],
        reason: `undo of ${a.id}`, source: 'ACTION_SOURCE_MODERATOR', moderator: S.session.name,
        idempotencyKey: `undo:${a.id}`,
      });
      say(`Undone: ${short(answer.action.kind)} ${answer.action.id}.`);
      load();
    } catch (error) {
      say(errorText(error), true);
    }
  };
  for (const input of [channel, user, kind, source]) input.addEventListener('change', load);
  root.append(h('div', { class: 'toolbar' }, channelField, userField, kindField, sourceField,
    h('button', { type: 'button', onclick: load }, 'Refresh')),
  h('table', {}, h('thead', {}, h('tr', {}, ['When', 'Channel', 'User', 'Action', 'Source', 'Reason', 'Status', ''].map((t) => h('th', { scope: 'col' }, t)))), rows));
  S.keys = {};
  load();
}

// ---------------------------------------------------------------------------------------------
// User card

function renderUser(root, arg) {
  const [channelField, channel] = field('Channel', h('input', { size: 12, id: 'user-channel', value: arg?.channel || '' }));
  const [userField, user] = field('User', h('input', { size: 14, id: 'user-id', value: arg?.userId || '' }));
  const card = h('div', { class: 'panel', id: 'user-card' }, 'Look a user up by channel and id.');
  const load = async () => {
    if (!channel.value.trim() || !user.value.trim()) return;
    card.replaceChildren(await userSummary(channel.value.trim(), user.value.trim()));
    const appeals = await api('Appeals/ListAppeals', { channel: channel.value.trim(), userId: user.value.trim(), pageSize: 20 }).catch(() => null);
    if (appeals) {
      card.append(h('h3', {}, 'Appeals'), h('ul', { class: 'reasons' }, (appeals.appeals || []).map((a) =>
        h('li', {}, `${short(a.status)}: ${a.text}`))));
    }
  };
  root.append(h('form', { class: 'toolbar', onsubmit: (e) => { e.preventDefault(); load(); } },
    channelField, userField, h('button', { type: 'submit', class: 'primary' }, 'Look up')), card);
  S.keys = {};
  load();
}

// ---------------------------------------------------------------------------------------------
// Nuke and aegis

function renderNuke(root) {
  const [channelField, channel] = field('Channel', h('input', { size: 12, id: 'nuke-channel', required: true }));
  const [patternField, pattern] = field('Phrase', h('input', { size: 24, id: 'nuke-pattern', required: true }));
  const [regexField, regex] = field('Regex', h('input', { type: 'checkbox', id: 'nuke-regex' }));
  const [windowField, windowInput] = field('Look back', h('input', { size: 6, id: 'nuke-window', value: '300s' }));
  const [durationField, duration] = field('Mute for', h('input', { size: 6, id: 'nuke-duration', value: '600s' }));
  const [reasonField, reason] = field('Reason', h('input', { size: 24, id: 'nuke-reason', value: 'nuke' }));
  const result = h('div', { class: 'panel', id: 'nuke-result', 'aria-live': 'polite' }, 'Preview first: nothing is done until you confirm.');
  const confirm = h('button', { type: 'button', class: 'danger', id: 'nuke-confirm', disabled: true }, 'Confirm nuke');
  const request = (dryRun) => ({
    channel: channel.value.trim(), pattern: pattern.value, regex: regex.checked, window: windowInput.value.trim(),
    duration: duration.value.trim(), reason: reason.value, moderator: S.session.name, dryRun,
  });
  const preview = async () => {
    try {
      const answer = await api('Admin/Nuke', request(true));
      const targets = answer.targets || [];
      result.replaceChildren(
        h('p', { id: 'nuke-preview-count' }, `${targets.length} user(s) would be muted (${answer.searchedMessages} messages searched):`),
        h('ul', { id: 'nuke-targets' }, targets.map((t) => h('li', {}, t))));
      confirm.disabled = targets.length === 0;
    } catch (error) {
      result.replaceChildren(h('p', { class: 'error' }, errorText(error)));
      confirm.disabled = true;
    }
  };
  confirm.addEventListener('click', async () => {
    try {
      const answer = await api('Admin/Nuke', request(false));
      confirm.disabled = true;
      const aegis = h('button', { type: 'button', class: 'primary', id: 'nuke-aegis' }, 'Aegis: undo this nuke');
      aegis.addEventListener('click', async () => {
        try {
          const undone = await api('Admin/Aegis', { channel: channel.value.trim(), nukeId: answer.nukeId, moderator: S.session.name });
          result.append(h('p', { id: 'aegis-done' }, `Aegis: ${(undone.actions || []).length} user(s) unmuted.`));
          aegis.disabled = true;
        } catch (error) {
          say(errorText(error), true);
        }
      });
      result.replaceChildren(h('p', { id: 'nuke-done' }, `Nuke ${answer.nukeId}: ${(answer.actions || []).length} user(s) muted.`), aegis);
    } catch (error) {
      say(errorText(error), true);
    }
  });
  root.append(h('form', { class: 'toolbar', onsubmit: (e) => { e.preventDefault(); preview(); } },
    channelField, patternField, regexField, windowField, durationField, reasonField,
    h('button', { type: 'submit', class: 'primary', id: 'nuke-preview' }, 'Preview'), confirm), result);
  S.keys = {};
}

// ---------------------------------------------------------------------------------------------
// Rules

const RULE_KINDS = ['phrase', 'profanity', 'link', 'caps', 'emoteFlood', 'charFlood', 'repetition', 'copypasta', 'rate', 'uniqueWords', 'longWord', 'mentions'];

function renderRules(root) {
  const [channelField, channel] = field('Channel', h('input', { size: 12, id: 'rules-channel', placeholder: 'global' }));
  const rows = h('tbody', { id: 'rules-rows' });
  const editor = h('textarea', { id: 'rule-json', spellcheck: 'false', 'aria-describedby': 'rule-error' });
  const error = h('div', { class: 'field-error', id: 'rule-error', role: 'alert' });
  const canEdit = hasRole('admin');
  const save = h('button', { type: 'button', class: 'primary', id: 'rule-save', disabled: !canEdit, title: canEdit ? '' : 'Only admins change rules' }, 'Save');
  const remove = h('button', { type: 'button', class: 'danger', id: 'rule-delete', disabled: !canEdit }, 'Delete');
  const modes = ['RULE_MODE_ENFORCE', 'RULE_MODE_SHADOW', 'RULE_MODE_DISABLED'].map((mode) =>
    h('button', { type: 'button', 'data-mode': mode, disabled: !canEdit, onclick: () => setMode(mode) }, short(mode)));
  const load = async () => {
    try {
      const answer = await api('Admin/ListRules', { channel: channel.value.trim(), includeGlobal: true });
      rows.replaceChildren(...(answer.rules || []).map((rule) => h('tr', { tabindex: '0', 'data-rule': rule.id, onclick: () => edit(rule), onkeydown: (e) => { if (e.key === 'Enter') edit(rule); } },
        h('td', { class: 'mono' }, rule.id),
        h('td', {}, RULE_KINDS.find((k) => rule[k]) || ''),
        h('td', {}, short(rule.mode)),
        h('td', {}, decisionBadge(rule.action)),
        h('td', { class: 'text' }, rule.description))));
    } catch (e) {
      say(errorText(e), true);
    }
  };
  const edit = (rule) => {
    const shown = { ...rule };
    delete shown.updatedAt;
    delete shown.revision;
    for (const key of Object.keys(shown)) if (shown[key] === null) delete shown[key];
    editor.value = JSON.stringify(shown, null, 2);
    error.textContent = '';
    editor.focus();
  };
  const parsed = () => {
    try {
      return JSON.parse(editor.value);
    } catch (e) {
      error.textContent = `The rule is not valid JSON: ${e.message}`;
      return null;
    }
  };
  const setMode = (mode) => {
    const rule = parsed();
    if (!rule) return;
    rule.mode = mode;
    editor.value = JSON.stringify(rule, null, 2);
    upsert(rule);
  };
  const upsert = async (rule) => {
    error.textContent = '';
    try {
      const saved = await api('Admin/UpsertRule', { rule });
      say(`Saved rule ${saved.id} (revision ${saved.revision}).`);
      load();
    } catch (e) {
      error.textContent = e.field ? `${e.field.replace(/^rule\./, '')}: ${e.message.replace(/^[^:]+: /, '')}` : errorText(e);
    }
  };
  save.addEventListener('click', () => {
    const rule = parsed();
    if (rule) upsert(rule);
  });
  remove.addEventListener('click', async () => {
    const rule = parsed();
    if (!rule?.id) return;
    try {
      await api('Admin/DeleteRule', { id: rule.id });
      say(`Deleted rule ${rule.id}.`);
      editor.value = '';
      load();
    } catch (e) {
      error.textContent = errorText(e);
    }
  });
  // Backtest: the rule as edited, tried on the channel's latest messages; nothing is stored.
  const [testChannelField, testChannel] = field('on channel', h('input', { size: 10, id: 'backtest-channel', placeholder: 'channel' }));
  const [lastField, last] = field('last', h('input', { size: 5, id: 'backtest-last', type: 'number', min: '1', max: '5000', value: '500' }));
  const backtestResult = h('div', { id: 'backtest-result', 'aria-live': 'polite' });
  const backtest = h('button', { type: 'button', id: 'rule-backtest', title: 'Try the rule on the channel\'s latest messages (b)' }, 'Backtest (b)');
  const runBacktest = async () => {
    const rule = parsed();
    if (!rule) return;
    const on = testChannel.value.trim() || rule.channel || channel.value.trim();
    if (!on) {
      backtestResult.replaceChildren(h('p', { class: 'field-error' }, 'Name the channel whose messages the rule is tried on.'));
      testChannel.focus();
      return;
    }
    error.textContent = '';
    backtestResult.replaceChildren(h('p', { class: 'muted' }, `Trying it on ${on}…`));
    try {
      const answer = await api('Admin/BacktestRule', { rule, channel: on, last: Number(last.value) || 0 });
      const matched = answer.matched || 0;
      const allowed = answer.allowedBefore || 0;
      const matches = answer.matches || [];
      const since = answer.since ? ` (since ${whenFull(answer.since)})` : '';
      backtestResult.replaceChildren(
        h('p', { id: 'backtest-summary' },
          `Over ${on}'s last ${answer.searched || 0} messages${since} this rule would have matched `,
          h('strong', {}, String(matched)), `, of which `, h('strong', {}, String(allowed)), ' were allowed before.',
          answer.failed ? ` It failed on ${answer.failed} (skipped).` : '',
          matched > matches.length ? ` The newest ${matches.length} are listed.` : ''),
        matches.length ? h('table', { id: 'backtest-matches' },
          h('thead', {}, h('tr', {}, ['Time', 'User', 'Message (normalised)', 'Why', 'Before'].map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', {}, matches.map((m) => h('tr', { class: m.allowedBefore ? 'allowed-before' : '' },
            h('td', { class: 'mono' }, when(m.sentAt)),
            h('td', {}, m.userId),
            h('td', { class: 'text' }, m.text),
            h('td', { class: 'text' }, m.reason?.evidence?.detail || m.reason?.description || ''),
            h('td', {}, decisionBadge(m.decided), m.allowedBefore ? h('span', { class: 'muted' }, ' (left visible)') : null))))) : null);
    } catch (e) {
      backtestResult.replaceChildren();
      if (e.field) error.textContent = `${e.field.replace(/^rule\./, '')}: ${e.message.replace(/^[^:]+: /, '')}`;
      else backtestResult.replaceChildren(h('p', { class: 'field-error', role: 'alert' }, errorText(e)));
    }
  };
  backtest.addEventListener('click', runBacktest);
  const template = () => {
    editor.value = JSON.stringify({
      id: 'new-rule', channel: channel.value.trim(), description: '', action: 'DECISION_HIDE', mode: 'RULE_MODE_SHADOW',
      phrase: { phrases: ['example phrase'], syntax: 'PHRASE_SYNTAX_LITERAL' },
    }, null, 2);
    editor.focus();
  };
  channel.addEventListener('change', load);
  root.append(
    h('div', { class: 'toolbar' }, channelField, h('button', { type: 'button', id: 'rules-refresh', onclick: load }, 'Refresh'),
      h('button', { type: 'button', id: 'rule-new', onclick: template, disabled: !canEdit }, 'New rule')),
    h('div', { class: 'split' },
      h('div', { class: 'panel' }, h('table', {}, h('thead', {}, h('tr', {},
        ['Id', 'Kind', 'Mode', 'Action', 'Description'].map((t) => h('th', { scope: 'col' }, t)))), rows)),
      h('div', { class: 'panel' },
        h('label', { for: 'rule-json' }, 'Rule (JSON, the API\'s Rule message)'), editor, error,
        h('div', { class: 'toolbar' }, save, ...modes, remove),
        canEdit ? null : h('p', { class: 'muted' }, 'You can read and backtest the rules; only admins change them.'),
        h('h3', {}, 'Backtest before saving'),
        h('div', { class: 'toolbar' }, testChannelField, lastField, backtest),
        backtestResult)),
    policyEditor(channel, canEdit));
  S.keys = { b: runBacktest };
  load();
}

/** The channel's policy as JSON (the API's Policy message): read, edit, save (admins). */
function policyEditor(channel, canEdit) {
  const editor = h('textarea', { id: 'policy-json', spellcheck: 'false', 'aria-describedby': 'policy-error' });
  const error = h('div', { class: 'field-error', id: 'policy-error', role: 'alert' });
  const status = h('p', { class: 'muted', id: 'policy-status' });
  const named = () => channel.value.trim() || '*';
  const load = async () => {
    error.textContent = '';
    try {
      const policy = await api('Admin/GetPolicy', { channel: named() });
      status.textContent = `Revision ${policy.revision}, changed ${whenFull(policy.updatedAt)}.` +
        (policy.isDefault && named() !== '*' ? ` ${named()} has no policy of its own: this is the default one; saving gives it its own.` : '');
      const shown = { ...policy, channel: named() };
      for (const server of ['updatedAt', 'revision', 'isDefault']) delete shown[server];
      editor.value = JSON.stringify(shown, null, 2);
    } catch (e) {
      error.textContent = errorText(e);
    }
  };
  const save = async () => {
    let policy;
    try {
      policy = JSON.parse(editor.value);
    } catch (e) {
      error.textContent = `The policy is not valid JSON: ${e.message}`;
      return;
    }
    error.textContent = '';
    try {
      const saved = await api('Admin/SetPolicy', { policy });
      say(`Saved the policy of ${saved.channel} (revision ${saved.revision}).`);
      load();
    } catch (e) {
      error.textContent = e.field ? `${e.field.replace(/^policy\./, '')}: ${e.message.replace(/^[^:]+: /, '')}` : errorText(e);
    }
  };
  const loadButton = h('button', { type: 'button', id: 'policy-load', onclick: load }, 'Load policy');
  const saveButton = h('button', { type: 'button', class: 'primary', id: 'policy-save', disabled: !canEdit, onclick: save,
    title: canEdit ? '' : 'Only admins change policies' }, 'Save policy');
  return h('div', { class: 'panel', id: 'policy-panel' },
    h('h3', {}, 'Channel policy (the channel above; empty: the default policy)'),
    h('div', { class: 'toolbar' }, loadButton, saveButton),
    status,
    h('label', { for: 'policy-json' }, 'Policy (JSON, the API\'s Policy message)'), editor, error);
}

// ---------------------------------------------------------------------------------------------
// Stats, drawn as SVG from DOM nodes

function barChart(title, counts) {
  const entries = Object.entries(counts || {}).map(([k, v]) => [k, Number(v)]).sort((a, b) => b[1] - a[1]).slice(0, 12);
  const max = Math.max(1, ...entries.map(([, v]) => v));
  const rowHeight = 20;
  const svg = h('svg:svg', { class: 'chart', viewBox: `0 0 600 ${Math.max(1, entries.length) * rowHeight + 4}`, role: 'img', 'aria-label': title });
  entries.forEach(([name, value], i) => {
    const y = i * rowHeight + 2;
    svg.append(
      h('svg:text', { x: 0, y: y + 13 }, name),
      h('svg:rect', { class: 'bar', x: 200, y: y + 2, height: rowHeight - 6, width: Math.max(1, (value / max) * 340) }),
      h('svg:text', { x: 548, y: y + 13 }, String(value)));
  });
  return h('div', {}, h('h3', {}, title), entries.length ? svg : h('p', { class: 'muted' }, 'Nothing yet.'));
}

/**
 * Decisions per second over time, one line per decision, from successive GetStats answers
 * (the counters' differences between polls), drawn as SVG nodes.
 */
function seriesChart(samples) {
  const width = 560;
  const height = 160;
  const names = [...new Set(samples.flatMap((s) => Object.keys(s.decisions)))].sort();
  const rates = names.map((name) => samples.slice(1).map((s, i) => {
    const before = samples[i];
    const seconds = Math.max(0.001, (s.at - before.at) / 1000);
    return Math.max(0, ((s.decisions[name] || 0) - (before.decisions[name] || 0)) / seconds);
  }));
  const points = Math.max(1, samples.length - 2);
  const top = Math.max(1, ...rates.flat());
  const svg = h('svg:svg', { class: 'chart', id: 'stats-series', viewBox: `0 0 ${width} ${height + 20}`, role: 'img',
    'aria-label': 'Decisions per second over the last minutes' });
  svg.append(h('svg:line', { class: 'axis', x1: 0, y1: height, x2: width - 60, y2: height }),
    h('svg:text', { x: 0, y: height + 16 }, `${Math.round(top)}/s at the top; a point every 5 s`));
  names.forEach((name, j) => {
    const line = rates[j].map((rate, i) => `${((i / points) * (width - 60)).toFixed(1)},${(height - (rate / top) * (height - 8)).toFixed(1)}`).join(' ');
    const short = decisionName(name) || name;
    // Coloured by class, as the badges are (the CSP allows no style attributes).
    svg.append(h('svg:polyline', { points: line, class: `d-${short}`, 'data-decision': short }),
      h('svg:text', { x: width - 55, y: 12 + j * 14, class: `legend d-${short}` }, short));
  });
  return h('div', {}, h('h3', {}, 'Decisions per second (while this page is open)'),
    samples.length > 1 ? svg : h('p', { class: 'muted' }, 'Drawn from the next refresh on.'));
}

function renderStats(root) {
  const [channelField, channel] = field('Channel', h('input', { size: 12, id: 'stats-channel', placeholder: 'all' }));
  const body = h('div', { id: 'stats-body' });
  let samples = [];
  const load = async () => {
    try {
      const stats = await api('Admin/GetStats', { channel: channel.value.trim() });
      const windows = stats.windows || [];
      samples.push({ at: Date.now(), decisions: Object.fromEntries(Object.entries(stats.decisions || {}).map(([k, v]) => [k, Number(v)])) });
      samples = samples.slice(-61);
      body.replaceChildren(
        h('dl', { class: 'kv' },
          h('dt', {}, 'Messages'), h('dd', { id: 'stats-messages' }, stats.messages),
          h('dt', {}, 'Queue depth'), h('dd', {}, stats.queueDepth),
          h('dt', {}, 'Cache hit ratio'), h('dd', {}, Number(stats.cacheHitRatio).toFixed(2)),
          h('dt', {}, 'Replica'), h('dd', {}, `${stats.replica} since ${whenFull(stats.replicaStartedAt)}`),
          h('dt', {}, 'Raids'), h('dd', {}, (stats.raids || []).map((r) => `${r.channel}: ${r.raiders} raiders`).join('; ') || 'none')),
        h('h3', {}, 'Recent windows'),
        h('table', {}, h('thead', {}, h('tr', {}, ['Window', 'Messages', 'p50', 'p90', 'p99', 'max', 'Degraded'].map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', {}, windows.map((w) => h('tr', {},
            h('td', {}, w.name), h('td', {}, w.messages), h('td', {}, w.latencyP50), h('td', {}, w.latencyP90),
            h('td', {}, w.latencyP99), h('td', {}, w.latencyMax),
            h('td', {}, Object.entries(w.degradedTime || {}).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'))))),
        seriesChart(samples),
        barChart('Decisions', stats.decisions),
        barChart('Rules', stats.rules),
        barChart('Model labels', stats.labels),
        barChart('Actions', stats.actions));
    } catch (error) {
      say(errorText(error), true);
    }
  };
  channel.addEventListener('change', () => { samples = []; load(); });
  root.append(h('div', { class: 'toolbar' }, channelField, h('button', { type: 'button', id: 'stats-refresh', onclick: load }, 'Refresh')), body);
  const timer = setInterval(load, 5000);
  S.cleanup.push(() => clearInterval(timer));
  S.keys = {};
  load();
}

// ---------------------------------------------------------------------------------------------
// Model

const TRIAL_MODES = [['TRIAL_MODE_SHADOW', 'shadow (never enforced)'], ['TRIAL_MODE_SPLIT', 'split (decides a share)']];
const SPLIT_UNITS = [['SPLIT_UNIT_CHANNEL', 'channels'], ['SPLIT_UNIT_USER', 'users']];
const percent = (n, of) => (of ? `${(100 * n / of).toFixed(1)}%` : '–');

/** A head set's heads: labels, thresholds and held-out metrics. */
function headsTable(heads) {
  return h('table', {}, h('thead', {}, h('tr', {}, ...['Head', 'Label', 'Threshold', 'Metrics'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, (heads || []).flatMap((head) => (head.labels || []).map((label, i) => h('tr', {},
      h('td', {}, i === 0 ? `${head.name} ${head.version}` : ''), h('td', {}, label), h('td', { class: 'num' }, head.thresholds?.[label] ?? ''),
      h('td', { class: 'muted' }, i === 0 ? Object.entries(head.metrics || {}).map(([k, v]) => `${k} ${Number(v).toFixed(4)}`).join(', ') : ''))))));
}

/** The trial so far: the two sides' decisions on the same messages and against moderators' rulings. */
function trialPanel(trial, rollout) {
  const decisions = [...new Set([...Object.keys(trial.activeDecisions || {}), ...Object.keys(trial.candidateDecisions || {})])];
  const ruled = Number(trial.ruled || 0);
  const mode = short(rollout.mode) === 'split' ? `split, ${percent(Number(rollout.share || 0), 1)} of ${short(rollout.unit) === 'user' ? 'users' : 'channels'}` : 'shadow';
  return h('div', { class: 'panel', id: 'model-trial' },
    h('h3', {}, `Trial of ${trial.version} (${mode}) on this replica`),
    h('dl', { class: 'kv' },
      h('dt', {}, 'Messages compared'), h('dd', { id: 'trial-compared' }, String(trial.compared || 0)),
      h('dt', {}, 'Decided alike'), h('dd', {}, `${trial.agreed || 0} (${percent(Number(trial.agreed || 0), Number(trial.compared || 0))})`),
      h('dt', {}, 'Candidate stricter / laxer'), h('dd', {}, `${trial.candidateStricter || 0} / ${trial.candidateLaxer || 0}`),
      h('dt', {}, 'Decided by the candidate'), h('dd', {}, String(trial.decidedByCandidate || 0)),
      h('dt', {}, 'Moderators\' rulings'), h('dd', { id: 'trial-rulings' }, ruled
        ? `${ruled} ruled: the candidate agreed with ${trial.candidateAgreedWithRulings || 0} (${percent(Number(trial.candidateAgreedWithRulings || 0), ruled)}), the active set with ${trial.activeAgreedWithRulings || 0} (${percent(Number(trial.activeAgreedWithRulings || 0), ruled)})`
        : 'none yet (held messages reviewed, appeals ruled)')),
    decisions.length ? h('table', { id: 'trial-decisions' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Decision'), h('th', { scope: 'col' }, 'Active set'), h('th', { scope: 'col' }, 'Candidate'))),
      h('tbody', {}, decisions.map((d) => h('tr', {}, h('td', {}, decisionBadge(d)),
        h('td', { class: 'num' }, String(trial.activeDecisions?.[d] || 0)), h('td', { class: 'num' }, String(trial.candidateDecisions?.[d] || 0)))))) : '');
}

/** Which head set decides, which is on trial, every set this replica can serve; admins try,
 * end, promote and roll back (each asks for a reason, and a promotion or rollback for a second
 * click). */
function renderModel(root) {
  S.keys = {};
  const canChange = hasRole('admin');
  const body = h('div', { id: 'model-body' });
  const [reasonField, reason] = field('Reason', h('input', { size: 28, id: 'model-reason', placeholder: 'why, for the record' }));
  const withId = (el, id) => { el.id = id; return el; };
  const [modeField, mode] = field('Mode', withId(select(TRIAL_MODES, 'TRIAL_MODE_SHADOW'), 'model-mode'));
  const [shareField, share] = field('Share %', h('input', { size: 4, id: 'model-share', value: '10', inputmode: 'decimal' }));
  const [unitField, unit] = field('Of', withId(select(SPLIT_UNITS, 'SPLIT_UNIT_CHANNEL'), 'model-unit'));
  const error = h('div', { class: 'field-error', id: 'model-error', role: 'alert' });
  let armed = null; // the button waiting for its second click
  const change = async (method, request, done) => {
    error.textContent = '';
    if (!reason.value.trim()) {
      error.textContent = 'Say why: the reason is kept with the change.';
      reason.focus();
      return;
    }
    try {
      const rollout = await api(`Admin/${method}`, { ...request, reason: reason.value.trim() });
      say(`${done} (rollout revision ${rollout.revision}).`);
      reason.value = '';
      load();
    } catch (e) {
      error.textContent = errorText(e);
    }
  };
  /** A button that acts on its second click ("Confirm ..."), for changes every replica follows. */
  const twoStep = (id, label, confirmLabel, action) => {
    const button = h('button', { type: 'button', class: 'danger', id, disabled: !canChange,
      title: canChange ? '' : 'Only admins change which head set decides' }, label);
    button.addEventListener('click', () => {
      if (armed !== button) {
        if (armed) armed.textContent = armed.dataset.label;
        armed = button;
        button.dataset.label = label;
        button.textContent = confirmLabel;
        return;
      }
      armed = null;
      button.textContent = label;
      action();
    });
    return button;
  };
  const tryRequest = (version) => {
    const split = mode.value === 'TRIAL_MODE_SPLIT';
    return { version, mode: mode.value, share: split ? Number(share.value) / 100 : 0, unit: split ? unit.value : 'SPLIT_UNIT_UNSPECIFIED' };
  };
  const load = async () => {
    armed = null;
    try {
      const [info, listed] = await Promise.all([api('Admin/GetModelInfo', {}), api('Admin/ListModelVersions', {})]);
      const rollout = info.rollout || {};
      const candidate = info.candidate?.version || '';
      const controls = [];
      if (candidate) {
        controls.push(
          twoStep('model-promote', `Promote ${candidate}`, `Confirm: promote ${candidate} on every replica`,
            () => change('PromoteModel', { version: candidate }, `Promoted ${candidate}`)),
          h('button', { type: 'button', id: 'model-end', disabled: !canChange, onclick: () => change('EndModelTrial', {}, 'Trial ended') }, 'End trial'));
      }
      if (rollout.previous && rollout.previous !== rollout.active) {
        controls.push(twoStep('model-rollback', `Roll back to ${rollout.previous}`, `Confirm: roll back to ${rollout.previous} on every replica`,
          () => change('RollbackModel', {}, `Rolled back to ${rollout.previous}`)));
      }
      const versions = listed.versions || [];
      body.replaceChildren(
        h('dl', { class: 'kv', id: 'model-info' },
          h('dt', {}, 'Loaded'), h('dd', {}, info.loaded ? 'yes' : 'no'),
          h('dt', {}, 'Encoder'), h('dd', {}, `${info.encoder || ''} on ${info.device || ''}`),
          h('dt', {}, 'Deciding'), h('dd', { id: 'model-active' }, info.version || 'no heads'),
          h('dt', {}, 'On trial'), h('dd', { id: 'model-candidate' }, candidate || 'none'),
          h('dt', {}, 'Last change'), h('dd', { id: 'model-change' }, rollout.revision && rollout.revision !== '0'
            ? `${rollout.change} by ${rollout.changedBy}, ${whenFull(rollout.changedAt)}: ${rollout.reason} (revision ${rollout.revision})`
            : 'none: the shipped heads decide'),
          h('dt', {}, 'Status'), h('dd', {}, info.statusDetail || 'ok')),
        rollout.problem ? h('p', { class: 'error', id: 'model-problem', role: 'alert' }, `Not in force on this replica: ${rollout.problem}`) : '',
        info.trial ? trialPanel(info.trial, rollout) : '',
        h('div', { class: 'panel' },
          h('h3', {}, 'Change which head set decides'),
          h('div', { class: 'toolbar' }, reasonField, modeField, shareField, unitField),
          h('div', { class: 'toolbar' }, ...controls),
          error),
        h('h3', {}, `Head sets this replica can serve (${versions.length})`),
        h('table', { id: 'model-versions' },
          h('thead', {}, h('tr', {}, ...['Version', 'Role', 'Encoder', 'Labels', 'Directory', ''].map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', {}, versions.map((v) => {
            const role = v.active ? 'active' : v.candidate ? 'on trial' : v.problem ? 'cannot be served' : '';
            const labels = (v.heads || []).flatMap((head) => (head.labels || []).map((l) => `${head.name}/${l}`));
            const canTry = canChange && v.version && !v.active && !v.problem;
            return h('tr', { 'data-version': v.version },
              h('td', { class: 'mono' }, v.version || '(unreadable)'),
              h('td', {}, role, v.problem ? h('div', { class: 'field-error' }, v.problem) : ''),
              h('td', { class: 'muted' }, v.encoder || ''),
              h('td', {}, labels.join(', ')),
              h('td', { class: 'mono muted' }, `${v.dir || ''}${v.shipped ? ' (shipped)' : ''}`),
              h('td', {}, v.version && !v.active && !v.problem
                ? h('button', { type: 'button', class: 'try', disabled: !canTry, 'aria-label': `Try ${v.version}`,
                  title: canChange ? '' : 'Only admins change which head set decides',
                  onclick: () => change('TryModel', tryRequest(v.version), `Trying ${v.version}`) }, v.candidate ? 'Try again' : 'Try')
                : ''));
          }))),
        h('h3', {}, `Active heads (${info.version || 'none'})`),
        headsTable(info.heads));
    } catch (e) {
      say(errorText(e), true);
    }
  };
  root.append(h('div', { class: 'toolbar' }, h('button', { type: 'button', id: 'model-refresh', onclick: load }, 'Refresh')), body);
  load();
}

const RENDER = {
  feed: renderFeed,
  review: renderReview,
  appeals: renderAppeals,
  actions: renderActions,
  user: renderUser,
  nuke: renderNuke,
  rules: renderRules,
  stats: renderStats,
  model: renderModel,
};

start();
