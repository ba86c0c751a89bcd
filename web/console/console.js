// The operator's console: one page over the admin API (/admin/api/v1), with the key the
// operator types in, kept in this tab's sessionStorage. No framework and no build step: the
// views are rebuilt from each poll's JSON with DOM calls (never innerHTML, so a channel or
// user name cannot inject markup), and only when the JSON changed, so text stays selectable.
// Forms live in the side panel, which polling never touches, so an edit is never lost.

const API = '/admin/api/v1';
const KEY = 'switchyard-admin-key';
const POLL_MS = 3000;

const $ = (id) => document.getElementById(id);

/** An element: attributes (`on…` are listeners; false/null/undefined are left out), children. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else if (name === 'class') el.className = value;
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** The API's reason for a refusal: its JSON `error`, else the body's text, else the status. */
async function reason(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    if (typeof body?.error === 'string') return body.error;
  } catch {
    // Not JSON (e.g. a body the API could not parse at all): its text says why.
  }
  return text.trim() || `${response.status} ${response.statusText}`;
}

/** One admin API call with the key; the JSON answer (null for 204), or an ApiError. */
async function api(method, path, body) {
  const headers = { 'X-API-Key': sessionStorage.getItem(KEY) ?? '' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  let response;
  try {
    response = await fetch(API + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(0, `the server did not answer (${e.message})`);
  }
  if (!response.ok) {
    const error = new ApiError(response.status, await reason(response));
    if (response.status === 401) logout(`The key was refused: ${error.message}`);
    throw error;
  }
  return response.status === 204 ? null : response.json();
}

const enc = encodeURIComponent;

// ---- Formatting ----

const time = (ms) => new Date(ms).toLocaleString();
const percent = (f) => `${Math.round((f ?? 0) * 100)}%`;
const yesNo = (b) => (b ? 'yes' : 'no');

function badge(text, kind, title) {
  return h('span', { class: `badge ${kind ?? ''}`, title }, text);
}

/** A secret as `abcd… (32 characters)`, or in full once the operator asked to see it. */
function secretText(secret) {
  return state.revealed.has(secret) ? secret : `${secret.slice(0, 4)}… (${secret.length} characters)`;
}

/** A new random secret: 32 characters of base64url from 24 random bytes. */
function randomSecret() {
  const bytes = crypto.getRandomValues(new Uint8Array(24));
  return btoa(String.fromCharCode(...bytes)).replaceAll('+', '-').replaceAll('/', '_');
}

// ---- Actions: each reports in the notice line and refreshes the view ----

function notice(text, kind = 'ok') {
  const n = $('notice');
  n.textContent = text;
  n.className = kind;
  n.hidden = !text;
}

async function act(what, call) {
  try {
    await call();
    notice(what);
  } catch (e) {
    if (e.status !== 401) notice(`${what}: failed: ${e.message}`, 'error');
  }
  await refresh(true);
}

// ---- Views: load() fetches a tab's data, render(data) builds it ----

const servers = {
  load: () => api('GET', '/media-servers'),
  render(list) {
    if (list.length === 0) return h('p', { class: 'empty' }, 'No media server is registered.');
    return h('table', { class: 'servers' },
      h('thead', null, h('tr', null,
        ['Server', 'Region', 'Public IP', 'Addresses', 'Cores', 'Used', 'State', 'Checks', ''].map((t) => h('th', null, t)))),
      h('tbody', null, list.map((s) => h('tr', { 'data-server': s.id, class: s.draining ? 'draining' : null },
        h('td', null, h('strong', null, s.id), h('div', { class: 'dim' }, s.version)),
        h('td', null, s.region),
        h('td', { class: 'public-ip' }, s.publicIPAddress ?? h('span', { class: 'dim' }, 'none')),
        h('td', null, (s.ipAddresses ?? []).join(', ')),
        h('td', null, s.coreCount),
        h('td', null, h('meter', { min: 0, max: 1, high: 0.8, value: s.usedCapacity ?? 0 }), ' ', percent(s.usedCapacity)),
        h('td', { class: 'state' }, serverState(s)),
        h('td', null, checks(s.checks ?? [])),
        h('td', null, s.clusterAddress === ''
          ? h('span', { class: 'dim', title: 'all-in-one: its only media server cannot be drained' }, 'all-in-one')
          : s.draining
            ? h('button', { onclick: () => act(`${s.id} no longer drains`, () => api('DELETE', `/media-servers/${enc(s.id)}/drain`)) }, 'Undrain')
            : h('button', { onclick: () => act(`${s.id} is draining`, () => api('POST', `/media-servers/${enc(s.id)}/drain`)) }, 'Drain')),
      ))),
    );
  },
};

function serverState(s) {
  return [
    s.draining ? badge('draining', 'warn', 'no new sessions; existing ones continue') : null,
    s.overCapacity ? badge('over capacity', 'warn') : null,
    s.available ? null : badge('unavailable', 'fail', 'its media engine is not up'),
    s.active ? badge('active', 'ok', 'hosts at least one channel') : badge('idle'),
  ];
}

/** The host checks (`switchyard doctor`'s): failures and warnings in full, passes as names. */
function checks(list) {
  if (list.length === 0) return h('span', { class: 'dim' }, 'none reported');
  const bad = list.filter((c) => c.status !== 'pass');
  const passed = list.filter((c) => c.status === 'pass');
  return h('div', { class: 'checks' },
    bad.map((c) => h('div', { class: `check ${c.status}` },
      badge(c.status, c.status), ' ', h('strong', null, c.name), ': ', c.detail,
      c.fix ? h('div', { class: 'fix' }, 'Fix: ', c.fix) : null)),
    passed.length ? h('div', { class: 'passed' }, badge('pass', 'pass'), ' ', passed.map((c) => c.name).join(', ')) : null,
  );
}

const channels = {
  load: () => api('GET', '/channels'),
  render(list) {
    if (list.length === 0) return h('p', { class: 'empty' }, 'No active channel.');
    return list.map((channel) => h('div', { class: 'card', 'data-channel': channel.id },
      h('h2', null, channel.id, ' ', h('span', { class: 'dim' }, `${channel.clients.length} client(s)`)),
      h('table', null,
        h('thead', null, h('tr', null, ['Client', 'User', 'Gateway', 'Connections', ''].map((t) => h('th', null, t)))),
        h('tbody', null, channel.clients.map((c) => h('tr', { 'data-client': c.id },
          h('td', null, h('code', null, c.id)),
          h('td', null, c.user),
          h('td', null, c.gateway),
          h('td', null, c.connections.length === 0
            ? h('span', { class: 'dim' }, 'signalling only')
            : h('ul', { class: 'connections' }, c.connections.map(connection))),
          h('td', null, h('button', {
            class: 'danger',
            onclick: () => {
              if (!confirm(`Kick ${c.user} (${c.id}) out of ${channel.id}?`)) return;
              act(`${c.user} was kicked out of ${channel.id}`,
                () => api('DELETE', `/channels/${enc(channel.id)}/clients/${enc(c.id)}`));
            },
          }, 'Kick')),
        )))),
    ));
  },
};

function connection(c) {
  if (c.kind === 'publication') {
    const tracks = c.tracks.map((t) => `${t.kind} ${t.codec}`).join(', ');
    return h('li', null, '↑ publishes ', h('code', null, c.id), ` on ${c.server}`, tracks ? ` (${tracks})` : '');
  }
  return h('li', null, '↓ receives ', h('code', null, c.publication), ` on ${c.server}`);
}

const applications = {
  async load() {
    const apps = await api('GET', '/applications');
    const configs = await Promise.all(apps.map((a) => api('GET', `/applications/${enc(a.id)}/channel-configs`)));
    return apps.map((app, i) => ({ app, configs: configs[i] }));
  },
  render(list) {
    if (list.length === 0) return h('p', { class: 'empty' }, 'No application in the configuration store.');
    return list.map(({ app, configs }) => h('div', { class: 'card', 'data-application': app.id },
      h('h2', null, app.id, ' ', h('span', { class: 'dim' }, `created ${time(app.createdAt)}`)),
      h('h3', null, 'Secrets ', h('button', { onclick: () => rotateForm(app) }, 'Rotate…')),
      h('ul', { class: 'secrets' }, app.secrets.map((secret, i) => h('li', { 'data-secret-index': i },
        h('code', null, secretText(secret)), ' ',
        i === app.secrets.length - 1 ? badge('newest: sign with this', 'ok') : badge('previous: still valid'), ' ',
        h('button', {
          class: 'link',
          onclick: () => {
            if (!state.revealed.delete(secret)) state.revealed.add(secret);
            refresh(true);
          },
        }, state.revealed.has(secret) ? 'hide' : 'show'), ' ',
        app.secrets.length > 1 ? h('button', {
          class: 'danger',
          onclick: () => {
            if (!confirm(`Retire this secret of ${app.id}? Tokens signed with it are refused from now on.`)) return;
            act(`A secret of ${app.id} was retired`, () => api('POST', `/applications/${enc(app.id)}/secrets/retire`, { secret }));
          },
        }, 'Retire') : null,
      ))),
      h('h3', null, 'Channel configurations ', h('button', { onclick: () => configForm(app.id, null, configs) }, 'Add…')),
      configs.length === 0 ? h('p', { class: 'dim' }, 'None: every channel is allowed everything.') : h('table', { class: 'configs' },
        h('thead', null, h('tr', null,
          ['Position', 'Pattern', 'Codecs', 'Max bitrate', 'SFU', 'MCU', 'MCU canvas', ''].map((t) => h('th', null, t)))),
        h('tbody', null, configs.map((c) => h('tr', { 'data-pattern': c.pattern },
          h('td', null, c.position),
          h('td', null, h('code', null, c.pattern)),
          h('td', null, c.allowedCodecs.length ? c.allowedCodecs.join(', ') : h('span', { class: 'dim' }, 'all')),
          h('td', null, c.maxBitrateKbps == null ? h('span', { class: 'dim' }, 'none') : `${c.maxBitrateKbps} kbps`),
          h('td', null, yesNo(c.sfuAllowed)),
          h('td', null, yesNo(c.mcuAllowed)),
          h('td', null, canvasText(c)),
          h('td', null,
            h('button', { onclick: () => configForm(app.id, c, configs) }, 'Edit'), ' ',
            h('button', {
              class: 'danger',
              onclick: () => {
                if (!confirm(`Delete the channel configuration ${c.pattern} of ${app.id}?`)) return;
                act(`Channel configuration ${c.pattern} deleted`,
                  () => api('DELETE', `/applications/${enc(app.id)}/channel-configs?pattern=${enc(c.pattern)}`));
              },
            }, 'Delete')),
        )))),
    ));
  },
};

const deployments = {
  load: () => api('GET', '/deployments'),
  render(list) {
    if (list.length === 0) return h('p', { class: 'empty' }, 'No deployment in the configuration store: the servers use their settings.');
    return h('table', null,
      h('thead', null, h('tr', null,
        ['Deployment', 'STUN servers', 'SFU per CPU (safe / unsafe)', 'MCU per CPU (safe / unsafe)', 'Clustering', 'TURN secret', 'Previous TURN secret']
          .map((t) => h('th', null, t)))),
      h('tbody', null, list.map((d) => h('tr', null,
        h('td', null, h('strong', null, d.id), d.name ? h('div', { class: 'dim' }, d.name) : null),
        h('td', null, d.stunServers.join(', ') || h('span', { class: 'dim' }, 'none')),
        h('td', null, `${d.sfuConnectionsPerCpuSafe} / ${d.sfuConnectionsPerCpuUnsafe}`),
        h('td', null, `${d.mcuConnectionsPerCpuSafe} / ${d.mcuConnectionsPerCpuUnsafe}`),
        h('td', null, d.clusteringStrategy),
        h('td', null, d.turnSecret ?? h('span', { class: 'dim' }, 'none')),
        h('td', null, d.turnPreviousSecret ?? h('span', { class: 'dim' }, 'none')),
      ))),
    );
  },
};

const audit = {
  load: () => api('GET', '/audit?limit=200'),
  render(list) {
    if (list.length === 0) return h('p', { class: 'empty' }, 'Nothing has been changed yet.');
    return h('table', { class: 'audit' },
      h('thead', null, h('tr', null, ['When', 'Who', 'Action', 'Target', 'Detail'].map((t) => h('th', null, t)))),
      h('tbody', null, list.map((e) => h('tr', null,
        h('td', { class: 'nowrap' }, time(e.at)),
        h('td', null, e.actor),
        h('td', null, h('code', null, e.action)),
        h('td', null, e.target),
        h('td', null, e.detail == null ? '' : h('code', { class: 'detail' }, JSON.stringify(e.detail))),
      ))),
    );
  },
};

const VIEWS = { servers, channels, applications, deployments, audit };

// ---- The side panel: forms that polling leaves alone ----

function closeEditor() {
  $('editor').hidden = true;
  $('editor').replaceChildren();
}

/** Opens `form` in the side panel; `submit` gets the form and answers the done message. */
function editor(title, fields, submit) {
  const error = h('p', { class: 'error', role: 'alert' });
  const form = h('form', {
    onsubmit: async (event) => {
      event.preventDefault();
      error.textContent = '';
      try {
        const done = await submit(form);
        closeEditor();
        notice(done);
        await refresh(true);
      } catch (e) {
        if (e.status !== 401) error.textContent = e.message;
      }
    },
  },
  h('h2', null, title),
  fields,
  error,
  h('div', { class: 'buttons' },
    h('button', { type: 'submit' }, 'Save'), ' ',
    h('button', { type: 'button', onclick: closeEditor }, 'Cancel')));
  $('editor').replaceChildren(form);
  $('editor').hidden = false;
  form.querySelector('input:not([readonly])')?.focus();
}

function rotateForm(app) {
  const dropped = app.secrets.length > 1
    ? h('p', { class: 'warn' }, `${app.id} has two secrets: the older (${secretText(app.secrets[0])}) is dropped, and tokens signed with it are refused.`)
    : null;
  editor(`Rotate a secret of ${app.id}`, [
    h('label', null, 'New secret', h('input', { name: 'secret', value: randomSecret(), required: true, autocomplete: 'off' })),
    h('p', { class: 'hint' }, 'Give it to your token issuers; the current secret stays valid until you retire it.'),
    dropped,
  ], async (form) => {
    await api('POST', `/applications/${enc(app.id)}/secrets`, { secret: form.elements.secret.value });
    return `${app.id} has a new secret`;
  });
}

/**
 * A configuration's MCU canvas, e.g. `speaker, 320×180, 10 fps`; what it leaves to the
 * deployment's MCU:* settings is named as the deployment's.
 */
function canvasText(c) {
  const deployment = (what) => h('span', { class: 'dim' }, `deployment's ${what}`);
  if (c.mcuLayout == null && c.mcuCanvasWidth == null && c.mcuCanvasHeight == null && c.mcuFrameRate == null) {
    return deployment('canvas');
  }
  const size = c.mcuCanvasWidth == null && c.mcuCanvasHeight == null
    ? deployment('size')
    : [c.mcuCanvasWidth ?? deployment('width'), '×', c.mcuCanvasHeight ?? deployment('height')];
  return [
    c.mcuLayout ?? deployment('layout'), ', ', size, ', ',
    c.mcuFrameRate == null ? deployment('frame rate') : `${c.mcuFrameRate} fps`,
  ];
}

/**
 * Adds or edits a channel configuration. Nothing is checked here: the API's own checks answer
 * (a known codec, the catch-all last, positions distinct), and its message is shown as it is.
 */
function configForm(application, config, configs) {
  const position = config?.position ?? (configs.length ? Math.max(...configs.map((c) => c.position)) + 1 : 0);
  editor(config ? `Channel configuration ${config.pattern}` : `New channel configuration of ${application}`, [
    h('label', null, 'Pattern', h('input', {
      name: 'pattern',
      value: config?.pattern ?? '',
      readonly: config !== null,
      required: true,
      placeholder: 'team-* (or * for every other channel)',
    })),
    h('label', null, 'Position', h('input', { name: 'position', type: 'number', value: position, required: true })),
    h('label', null, 'Allowed codecs', h('input', {
      name: 'codecs',
      value: config?.allowedCodecs.join(', ') ?? '',
      placeholder: 'all; or e.g. opus, VP8, H264',
    })),
    h('label', null, 'Max bitrate (kbps)', h('input', {
      name: 'bitrate',
      type: 'number',
      value: config?.maxBitrateKbps ?? '',
      placeholder: 'no limit',
    })),
    h('label', { class: 'check' }, h('input', { name: 'sfu', type: 'checkbox', checked: config?.sfuAllowed ?? true }), ' SFU publishing allowed'),
    h('label', { class: 'check' }, h('input', { name: 'mcu', type: 'checkbox', checked: config?.mcuAllowed ?? true }), ' MCU allowed'),
    h('label', null, 'MCU layout', h('select', { name: 'layout' },
      [['', "the deployment's"], ['grid', 'grid'], ['speaker', 'speaker: the active speaker large']].map(([value, text]) =>
        h('option', { value, selected: (config?.mcuLayout ?? '') === value }, text)))),
    ...[['width', 'mcuCanvasWidth', 'MCU canvas width'], ['height', 'mcuCanvasHeight', 'MCU canvas height'], ['fps', 'mcuFrameRate', 'MCU frame rate']]
      .map(([name, field, label]) => h('label', null, label, h('input', {
        name,
        type: 'number',
        value: config?.[field] ?? '',
        placeholder: "the deployment's",
      }))),
  ], async (form) => {
    const f = form.elements;
    const body = {
      pattern: f.pattern.value,
      position: Number(f.position.value),
      allowedCodecs: f.codecs.value.split(/[\s,]+/).filter(Boolean),
      maxBitrateKbps: f.bitrate.value === '' ? null : Number(f.bitrate.value),
      sfuAllowed: f.sfu.checked,
      mcuAllowed: f.mcu.checked,
      mcuLayout: f.layout.value || null,
      mcuCanvasWidth: f.width.value === '' ? null : Number(f.width.value),
      mcuCanvasHeight: f.height.value === '' ? null : Number(f.height.value),
      mcuFrameRate: f.fps.value === '' ? null : Number(f.fps.value),
    };
    await api('PUT', `/applications/${enc(application)}/channel-configs`, body);
    return `Channel configuration ${body.pattern} of ${application} saved`;
  });
}

// ---- Polling and navigation ----

const state = {
  tab: 'servers',
  /** The JSON last rendered, so that an unchanged poll leaves the page alone. */
  shown: '',
  data: null,
  revealed: new Set(),
  timer: 0,
  busy: false,
};

function status(text, error = false) {
  $('status').textContent = text;
  $('status').className = error ? 'error' : '';
}

/** Loads the current tab and rebuilds it if its data changed (or `force`). */
async function refresh(force = false) {
  if (!sessionStorage.getItem(KEY)) return;
  const tab = state.tab;
  try {
    const data = await VIEWS[tab].load();
    if (tab !== state.tab) return; // the operator moved on meanwhile
    const json = JSON.stringify(data);
    if (force || json !== state.shown) {
      $('view').replaceChildren(...[VIEWS[tab].render(data)].flat());
      state.shown = json;
      state.data = data;
    }
    status(`Updated ${new Date().toLocaleTimeString()}`);
  } catch (e) {
    if (e.status !== 401) status(`Cannot update: ${e.message}`, true);
  }
}

async function poll() {
  clearTimeout(state.timer);
  if (!state.busy && !document.hidden) {
    state.busy = true;
    await refresh();
    state.busy = false;
  }
  state.timer = setTimeout(poll, POLL_MS);
}

function showTab() {
  const tab = location.hash.slice(1);
  state.tab = tab in VIEWS ? tab : 'servers';
  for (const a of $('tabs').querySelectorAll('a')) {
    a.classList.toggle('current', a.getAttribute('href') === `#${state.tab}`);
  }
  state.shown = '';
  $('view').replaceChildren();
  closeEditor();
  notice('');
  refresh(true);
}

function logout(why = '') {
  sessionStorage.removeItem(KEY);
  clearTimeout(state.timer);
  state.revealed.clear();
  $('app').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = why;
  $('key').value = '';
  $('key').focus();
}

function start() {
  $('login').hidden = true;
  $('app').hidden = false;
  showTab();
  state.timer = setTimeout(poll, POLL_MS);
}

$('login').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('login-error').textContent = '';
  sessionStorage.setItem(KEY, $('key').value.trim());
  try {
    await api('GET', '/media-servers');
    start();
  } catch (e) {
    // A refused key has logged out already, saying why.
    if (e.status !== 401) {
      sessionStorage.removeItem(KEY);
      $('login-error').textContent = e.message;
    }
  }
});
$('logout').addEventListener('click', () => logout());
window.addEventListener('hashchange', showTab);

if (sessionStorage.getItem(KEY)) start();
else logout();
