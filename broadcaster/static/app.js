// rowcast web UI: the session list and a live session view.
// Plain JavaScript, no build step. Rows come from the paging API
// (api/sessions/S/rows) and live changes from the WebSocket (/ws), resumed
// from the last change seen after any disconnect.
'use strict';

(() => {
  const TOKEN = new URLSearchParams(location.search).get('token');
  const PAGE = 50;
  const LISTED = 200;
  const $ = (id) => document.getElementById(id);
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function apiUrl(path, query) {
    const u = new URL(path, document.baseURI);
    for (const [k, v] of Object.entries(query || {})) {
      if (v !== undefined && v !== null) u.searchParams.set(k, String(v));
    }
    if (TOKEN) u.searchParams.set('token', TOKEN);
    return u;
  }

  async function getJSON(path, query) {
    const r = await fetch(apiUrl(path, query), { cache: 'no-store' });
    if (!r.ok) {
      let why = `HTTP ${r.status}`;
      try { why = (await r.json()).error || why; } catch (_) { /* not JSON */ }
      const e = new Error(why);
      e.status = r.status;
      throw e;
    }
    return r.json();
  }

  function setConn(state, text) {
    const el = $('conn');
    el.dataset.state = state;
    el.textContent = text || state;
  }

  function ago(iso) {
    const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (s < 5) return 'just now';
    if (s < 60) return `${Math.floor(s)} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return new Date(iso).toLocaleString();
  }

  // Bidi controls in an id are shown, not obeyed: a session named with
  // U+202E would otherwise read backwards, and spoof what follows it.
  const BIDI = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
  function shownId(id) {
    return String(id).replace(BIDI, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`);
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }

  // ---------------------------------------------------------------- sessions

  class SessionList {
    constructor() {
      $('sessions-view').hidden = false;
      $('session-view').hidden = true;
      $('crumb').textContent = '';
      document.title = 'rowcast';
      this.stopped = false;
      this.timer = null;
      this.sessions = [];
      $('filter').oninput = () => this.render();
      setConn('connecting', 'connecting…');
      this.poll();
    }

    async poll() {
      if (this.stopped) return;
      try {
        const data = await getJSON('api/sessions', { limit: LISTED });
        if (this.stopped) return;
        this.sessions = data.sessions;
        setConn('live', 'live');
        this.render();
      } catch (e) {
        if (this.stopped) return;
        setConn('error', e.status === 401 || e.status === 403 ? 'not authorized' : 'offline');
      }
      // Newest activity first, refreshed every two seconds.
      this.timer = setTimeout(() => this.poll(), 2000);
    }

    render() {
      const filter = $('filter').value.trim().toLowerCase();
      const list = $('sessions');
      const frag = document.createDocumentFragment();
      for (const s of this.sessions) {
        if (filter && !s.session.toLowerCase().includes(filter)) continue;
        const li = el('li');
        li.dataset.session = s.session;
        if (Date.now() - Date.parse(s.updated_at) < 10000) li.classList.add('fresh');
        const a = el('a');
        a.href = `#/s/${encodeURIComponent(s.session)}`;
        a.append(
          el('span', 'name', shownId(s.session)),
          el('span', 'meta', `${s.row_count} rows · change ${s.last_change}`),
          el('span', 'when', ago(s.updated_at)),
        );
        li.append(a);
        frag.append(li);
      }
      list.replaceChildren(frag);
      $('sessions-empty').hidden = this.sessions.length > 0;
      // The list is the most recently active sessions only: say so.
      $('sessions-more').hidden = this.sessions.length < LISTED;
    }

    stop() {
      this.stopped = true;
      clearTimeout(this.timer);
      $('filter').oninput = null;
    }
  }

  // ---------------------------------------------------------------- rows

  const STATUS = new Set(['ok', 'done', 'success', 'completed', 'running', 'pending', 'started', 'error', 'failed']);

  function kindClass(kind) {
    if (kind === 'user' || kind === 'assistant') return kind;
    if (/^tool/.test(kind)) return 'tool';
    if (kind === 'error') return 'other error';
    return 'other';
  }

  function textOf(body) {
    if (typeof body === 'string') return body;
    if (body === null || typeof body !== 'object') return null;
    for (const key of ['text', 'content', 'message']) {
      if (typeof body[key] === 'string') return body[key];
    }
    if (Array.isArray(body.content)) {
      const parts = body.content
        .map((b) => (typeof b === 'string' ? b : b && typeof b.text === 'string' ? b.text : null))
        .filter((t) => t !== null);
      if (parts.length) return parts.join('\n');
    }
    return null;
  }

  function pre(value) {
    return el('pre', null, typeof value === 'string' ? value : JSON.stringify(value, null, 2));
  }

  function fillRow(li, c) {
    li.dataset.change = c.change;
    li.dataset.revision = c.revision;
    const cls = kindClass(c.kind);
    li.className = `row ${cls}`;
    const body = c.body;
    const head = el('div', 'head');
    head.append(el('span', 'kind', c.kind), el('span', 'seq', `#${c.sequence}`));
    if (c.revision > 0) head.append(el('span', 'rev', `rev ${c.revision}`));
    const bubble = el('div', 'bubble');
    if (cls === 'tool') {
      const b = body && typeof body === 'object' ? body : {};
      if (b.status !== undefined && b.status !== null && b.status !== '') {
        // The class comes from a fixed set: a body chooses a colour, never a class.
        const text = typeof b.status === 'object' ? JSON.stringify(b.status) : String(b.status);
        const known = STATUS.has(text.toLowerCase());
        const pill = el('span', known ? `status ${text.toLowerCase()}` : 'status', text);
        pill.title = text;
        head.append(pill);
      }
      bubble.append(el('span', 'tool-name', String(b.name || b.tool || c.kind)));
      const input = b.input ?? b.args ?? b.arguments;
      if (input !== undefined) {
        const short = JSON.stringify(input);
        if (short.length <= 160) {
          bubble.append(el('code', 'tool-input', short));
        } else {
          const d = el('details');
          d.append(el('summary', null, 'input'), pre(input));
          bubble.append(d);
        }
      }
      const output = b.output ?? b.result ?? textOf(b);
      if (output !== undefined && output !== null) bubble.append(pre(output));
      if (input === undefined && (output === undefined || output === null) && typeof body !== 'object') {
        bubble.append(pre(body));
      }
    } else {
      const text = textOf(body);
      if (text !== null) bubble.textContent = text;
      else bubble.append(pre(body));
    }
    li.replaceChildren(head, bubble);
  }

  class SessionView {
    constructor(session) {
      this.session = session;
      this.rows = new Map(); // row id -> {c, li}
      this.unloaded = new Map(); // newer revisions of rows older than what is loaded
      this.lowest = null; // lowest sequence shown
      this.hasMoreBefore = false;
      this.cursor = 0; // the last change received: resumed from after a disconnect
      this.ws = null;
      this.timer = null;
      this.retry = 0;
      this.stopped = false;
      this.loadingOlder = false;
      $('sessions-view').hidden = true;
      $('session-view').hidden = false;
      $('crumb').textContent = shownId(session);
      document.title = `${shownId(session)} · rowcast`;
      $('rows').replaceChildren();
      $('rows-empty').hidden = true;
      const sc = $('scroller');
      this.onScroll = () => {
        if (sc.scrollTop < 200) this.loadOlder();
        if (this.atBottom()) $('jump').hidden = true;
      };
      sc.addEventListener('scroll', this.onScroll);
      $('jump').onclick = () => this.toBottom();
      this.start();
    }

    path() {
      // "." and ".." cannot be a path segment: a browser resolves them away
      // (even percent-encoded), so such a session is read over the WebSocket only.
      if (this.session === '.' || this.session === '..') return null;
      return `api/sessions/${encodeURIComponent(this.session)}/rows`;
    }

    async start() {
      setConn('connecting', 'connecting…');
      for (let attempt = 0; !this.stopped && this.path() !== null; attempt++) {
        try {
          const page = await getJSON(this.path(), { limit: PAGE });
          if (this.stopped) return;
          // The page and its last_change are one snapshot: live changes start after it.
          this.cursor = page.last_change;
          this.hasMoreBefore = page.has_more_before;
          for (const c of page.rows) this.apply(c, false, true);
          break;
        } catch (e) {
          if (e.status === 404) break; // not created yet: everything will come live
          if (e.status === 401 || e.status === 403) {
            setConn('error', 'not authorized');
            return;
          }
          setConn('reconnecting', 'offline, retrying…');
          await sleep(Math.min(5000, 300 * 2 ** attempt));
        }
      }
      if (this.stopped) return;
      this.updateOlder();
      this.toBottom();
      this.connect();
      this.fill();
    }

    connect() {
      if (this.stopped) return;
      const u = apiUrl('ws');
      u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
      const ws = new WebSocket(u);
      this.ws = ws;
      let opened = false;
      setConn(this.retry ? 'reconnecting' : 'connecting', this.retry ? 'reconnecting…' : 'connecting…');
      ws.onopen = () => {
        // deltas: a streaming row's new text arrives alone, not its whole body again.
        ws.send(JSON.stringify({ type: 'subscribe', session: this.session, after: this.cursor, deltas: true }));
        opened = true;
        this.retry = 0;
        setConn('live', 'live');
      };
      ws.onmessage = (ev) => {
        const m = JSON.parse(ev.data);
        if (m.type === 'rows' && m.session === this.session) this.receive(m.changes);
        else if (m.type === 'resync') this.resync = true; // the server closes; we resume at once
        else if (m.type === 'error') console.warn('rowcast:', m.error);
      };
      ws.onclose = () => {
        if (this.ws !== ws || this.stopped) return;
        this.ws = null;
        const delay = this.resync ? 0 : Math.min(5000, 250 * 2 ** Math.min(this.retry, 5)) * (0.5 + Math.random() / 2);
        this.resync = false;
        this.retry += 1;
        setConn('reconnecting', 'reconnecting…');
        const again = () => { if (!this.stopped) this.timer = setTimeout(() => this.connect(), delay); };
        if (opened) { again(); return; }
        // A refused handshake does not say why: ask the API, which does. A
        // token that expired (or was never valid) is not worth retrying.
        getJSON(this.path(), { limit: 1 }).then(again, (e) => {
          if (this.stopped) return;
          if (e.status === 401 || e.status === 403) setConn('error', `not authorized: ${e.message}`);
          else again();
        });
      };
    }

    receive(changes) {
      const stick = this.atBottom();
      for (let c of changes) {
        const number = c.change;
        if (number <= this.cursor) continue;
        if (!('body' in c)) {
          c = this.undelta(c);
          if (c === null) {
            // Not on the revision we hold (the server never sends that):
            // resume from here, and the catch-up sends the row whole.
            this.resync = true;
            if (this.ws) this.ws.close();
            break;
          }
        }
        this.cursor = number;
        this.apply(c, true, false);
      }
      if (stick) this.toBottom();
      else $('jump').hidden = false;
      $('rows-empty').hidden = this.rows.size > 0;
    }

    // A delta (extend + base_revision, no body) as a whole change, built on the
    // row as we hold it; null when we do not hold it at base_revision.
    undelta(d) {
      const have = this.rows.get(d.row);
      const held = have ? have.c : this.unloaded.get(d.row);
      if (!held) return null;
      if (held.change >= d.change) return held; // a page already showed newer: apply() skips it
      if (held.revision !== d.base_revision || !held.body || typeof held.body !== 'object') return null;
      const body = Object.assign({}, held.body);
      for (const [k, v] of Object.entries(d.extend)) {
        body[k] = (typeof body[k] === 'string' ? body[k] : '') + v;
      }
      const c = Object.assign({}, d, { body });
      delete c.extend;
      delete c.base_revision;
      return c;
    }

    // A change or a paged row: replace the row in place when newer, insert it
    // by sequence when new, or keep it aside when it is older than what is
    // loaded (the page that loads it then shows its latest revision).
    apply(c, live, paged) {
      const have = this.rows.get(c.row);
      if (have) {
        if (have.c.change >= c.change) return;
        have.c = c;
        fillRow(have.li, c);
        if (live) {
          have.li.classList.remove('updated');
          void have.li.offsetWidth;
          have.li.classList.add('updated');
        }
        return;
      }
      if (!paged && this.hasMoreBefore && this.lowest !== null && c.sequence < this.lowest) {
        const kept = this.unloaded.get(c.row);
        if (!kept || kept.change < c.change) this.unloaded.set(c.row, c);
        return;
      }
      const kept = this.unloaded.get(c.row);
      if (kept) {
        this.unloaded.delete(c.row);
        if (kept.change > c.change) c = kept;
      }
      const li = el('li');
      li.dataset.row = c.row;
      li.dataset.seq = c.sequence;
      fillRow(li, c);
      this.rows.set(c.row, { c, li });
      this.insert(li, c.sequence);
      if (this.lowest === null || c.sequence < this.lowest) this.lowest = c.sequence;
    }

    insert(li, seq) {
      const list = $('rows');
      let after = list.lastElementChild;
      while (after && Number(after.dataset.seq) > seq) after = after.previousElementSibling;
      if (after) after.after(li);
      else list.prepend(li);
    }

    async loadOlder() {
      if (!this.hasMoreBefore || this.loadingOlder || this.lowest === null || this.stopped) return;
      this.loadingOlder = true;
      const older = $('older');
      older.dataset.state = 'loading';
      older.textContent = 'Loading older rows…';
      try {
        const page = await getJSON(this.path(), { before: this.lowest, limit: PAGE });
        if (this.stopped) return;
        const sc = $('scroller');
        const height = sc.scrollHeight;
        const top = sc.scrollTop;
        for (const c of page.rows) this.apply(c, false, true);
        this.hasMoreBefore = page.has_more_before;
        if (!this.hasMoreBefore) {
          for (const c of this.unloaded.values()) this.apply(c, false, true);
          this.unloaded.clear();
        }
        // Keep what the reader was looking at in place.
        sc.scrollTop = top + (sc.scrollHeight - height);
      } catch (e) {
        console.warn('rowcast: loading older rows:', e.message);
      } finally {
        this.loadingOlder = false;
        this.updateOlder();
      }
      this.fill();
    }

    // Until the view is full (or the session's start is shown).
    fill() {
      const sc = $('scroller');
      if (this.hasMoreBefore && sc.scrollTop < 200) setTimeout(() => this.loadOlder(), 0);
    }

    updateOlder() {
      const older = $('older');
      if (this.hasMoreBefore) {
        older.dataset.state = 'more';
        older.textContent = 'Scroll up for older rows';
      } else {
        older.dataset.state = 'start';
        older.textContent = this.rows.size ? 'Start of the session' : '';
      }
      $('rows-empty').hidden = this.rows.size > 0;
    }

    atBottom() {
      const sc = $('scroller');
      return sc.scrollHeight - sc.scrollTop - sc.clientHeight < 60;
    }

    toBottom() {
      const sc = $('scroller');
      sc.scrollTop = sc.scrollHeight;
      $('jump').hidden = true;
    }

    stop() {
      this.stopped = true;
      clearTimeout(this.timer);
      $('scroller').removeEventListener('scroll', this.onScroll);
      if (this.ws) {
        const ws = this.ws;
        this.ws = null;
        ws.close();
      }
    }
  }

  // ---------------------------------------------------------------- routing

  let view = null;
  function route() {
    if (view) view.stop();
    const m = location.hash.match(/^#\/s\/(.+)$/);
    let session = null;
    if (m) {
      try {
        session = decodeURIComponent(m[1]);
      } catch (_) {
        // A malformed link (#/s/%E0%A4%A): the list, not a blank page.
        session = null;
      }
    }
    view = session !== null ? new SessionView(session) : new SessionList();
  }
  window.addEventListener('hashchange', route);
  route();
})();
