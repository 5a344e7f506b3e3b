"""The page as text: an accessibility-style tree with a stable id on every interactive element.

A script installed in every document (`INIT_SCRIPT`) keeps track of what the page is doing
(DOM mutations, pending fetch/XHR requests, which elements got click listeners) and assigns ids.
`SNAPSHOT_SCRIPT` waits until the page is idle, then walks the DOM once and returns the tree as
text plus a description of every interactive element, which the environment uses to check
actions before they reach the browser.

Ids: an element's own HTML `id` when it is a short identifier unique on the page (so scenario
authors choose them, e.g. `add-to-cart`), otherwise `e1`, `e2`, ... in document order. An element
keeps its id for as long as it stays in the page. Ids are kept in a JavaScript map, not written
into the DOM, so pages that read their own markup see it unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

SELECTOR_ENGINE_NAME = "trajalign-id"

# Runs in the page's main world: finds an element by the id the snapshot gave it.
SELECTOR_ENGINE = """{
  query(root, selector) {
    const t = window.__trajalign;
    return t ? t.find(selector) : null;
  },
  queryAll(root, selector) {
    const t = window.__trajalign;
    const element = t ? t.find(selector) : null;
    return element ? [element] : [];
  }
}"""

_INSTALL = r"""
function () {
  if (window.__trajalign) return window.__trajalign;
  const T = {lastMutation: performance.now(), pending: 0, clickable: new WeakSet(), ids: new WeakMap(),
             byId: new Map(), counter: 0};
  Object.defineProperty(window, '__trajalign', {value: T, enumerable: false, configurable: false, writable: false});
  new MutationObserver(() => { T.lastMutation = performance.now(); })
    .observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
  const CLICKY = new Set(['click', 'mousedown', 'mouseup', 'dblclick', 'pointerdown', 'pointerup', 'touchstart']);
  const addListener = EventTarget.prototype.addEventListener;
  EventTarget.prototype.addEventListener = function (type, listener, options) {
    if (CLICKY.has(type) && this instanceof Element) T.clickable.add(this);
    return addListener.call(this, type, listener, options);
  };
  if (window.fetch) {
    const originalFetch = window.fetch;
    window.fetch = function () {
      T.pending++;
      const done = () => { T.pending--; T.lastMutation = performance.now(); };
      const result = originalFetch.apply(this, arguments);
      result.then(done, done);
      return result;
    };
  }
  // A navigation away from this document has started: the next snapshot waits for the new one.
  window.addEventListener('beforeunload', () => { T.leaving = performance.now(); });
  const send = XMLHttpRequest.prototype.send;
  XMLHttpRequest.prototype.send = function () {
    T.pending++;
    this.addEventListener('loadend', () => { T.pending--; T.lastMutation = performance.now(); }, {once: true});
    return send.apply(this, arguments);
  };

  // Only a script can change a document once it has loaded. A loaded document with no script of its
  // own (no <script>, no inline handler, no javascript: URL, no frame) is settled at once; the
  // quiet window below is for documents that have one. (Our own helpers never change the DOM.)
  const scriptless = () => {
    if (T.scriptless === undefined) {
      const handlers = document.evaluate("count(//@*[starts-with(name(), 'on')])", document, null,
                                         XPathResult.NUMBER_TYPE, null).numberValue;
      T.scriptless = document.scripts.length === 0 && window.frames.length === 0 && handlers === 0
        && !document.querySelector('[href^="javascript:" i], [action^="javascript:" i]');
    }
    return T.scriptless;
  };

  // Resolves once the document is loaded, no fetch/XHR is pending and the DOM has not changed for
  // quietMs since the call (so a change an action's handler schedules for a few ms later is seen;
  // not waited for in a scriptless document); gives up (resolving false) after maxMs so an
  // always-animating page cannot stall a step.
  T.idle = (quietMs, maxMs) => new Promise((resolve) => {
    const start = performance.now();
    const check = () => {
      const now = performance.now();
      if (T.leaving) resolve('leaving');
      else if (document.readyState === 'complete' && T.pending <= 0
               && (now - Math.max(T.lastMutation, start) >= quietMs || scriptless())) resolve(true);
      else if (now - start >= maxMs) resolve(false);
      else setTimeout(check, Math.max(2, Math.min(10, quietMs / 2)));
    };
    setTimeout(check, 0);
  });

  T.find = (id) => {
    const ref = T.byId.get(String(id));
    const element = ref && ref.deref();
    return element && element.isConnected ? element : null;
  };
  const OWN_ID = /^[A-Za-z][A-Za-z0-9_-]{0,47}$/;
  T.idOf = (element) => {
    let id = T.ids.get(element);
    if (id) return id;
    const own = element.id;
    if (own && OWN_ID.test(own) && !/^e[0-9]+$/.test(own) && !T.find(own)) id = own;
    else { do { id = 'e' + (++T.counter); } while (T.find(id)); }
    T.ids.set(element, id);
    T.byId.set(id, new WeakRef(element));
    return id;
  };

  const INTERACTIVE_ROLES = new Set(['button', 'link', 'checkbox', 'radio', 'tab', 'menuitem', 'menuitemcheckbox',
    'menuitemradio', 'option', 'switch', 'textbox', 'searchbox', 'combobox', 'listbox', 'slider', 'spinbutton',
    'treeitem']);
  const CONTAINER_ROLES = new Set(['list', 'table', 'row', 'rowgroup', 'navigation', 'form', 'main', 'banner',
    'contentinfo', 'complementary', 'dialog', 'alertdialog', 'group', 'region', 'search', 'menu', 'menubar',
    'tablist', 'toolbar', 'tree', 'grid', 'alert', 'status', 'tabpanel', 'article']);
  const LEAF_ROLES = new Set(['heading', 'cell', 'columnheader', 'rowheader', 'listitem', 'img', 'caption']);
  const SKIP_TAGS = new Set(['SCRIPT', 'STYLE', 'NOSCRIPT', 'TEMPLATE', 'HEAD', 'META', 'LINK', 'TITLE']);
  const norm = (text) => (text || '').replace(/\s+/g, ' ').trim();

  function roleOf(el) {
    const explicit = (el.getAttribute('role') || '').trim().split(/\s+/)[0].toLowerCase();
    if (explicit && explicit !== 'presentation' && explicit !== 'none' && explicit !== 'generic') return explicit;
    switch (el.tagName) {
      case 'A': return el.hasAttribute('href') ? 'link' : null;
      case 'BUTTON': return 'button';
      case 'INPUT': {
        const type = (el.type || 'text').toLowerCase();
        const map = {checkbox: 'checkbox', radio: 'radio', button: 'button', submit: 'button', reset: 'button',
                     image: 'button', file: 'button', color: 'button', range: 'slider', number: 'spinbutton',
                     search: 'searchbox', hidden: null};
        return type in map ? map[type] : 'textbox';
      }
      case 'SELECT': return el.multiple || el.size > 1 ? 'listbox' : 'combobox';
      case 'TEXTAREA': return 'textbox';
      case 'H1': case 'H2': case 'H3': case 'H4': case 'H5': case 'H6': return 'heading';
      case 'UL': case 'OL': case 'MENU': return 'list';
      case 'LI': return 'listitem';
      case 'TABLE': return 'table';
      case 'TR': return 'row';
      case 'TH': return el.closest('thead') || el.getAttribute('scope') !== 'row' ? 'columnheader' : 'rowheader';
      case 'TD': return 'cell';
      case 'CAPTION': return 'caption';
      case 'NAV': return 'navigation';
      case 'MAIN': return 'main';
      case 'FORM': return 'form';
      case 'HEADER': return el.closest('article, section, main') ? null : 'banner';
      case 'FOOTER': return el.closest('article, section, main') ? null : 'contentinfo';
      case 'ASIDE': return 'complementary';
      case 'IMG': return 'img';
      case 'DIALOG': return 'dialog';
      case 'FIELDSET': return 'group';
      case 'OPTION': return 'option';
      case 'ARTICLE': return 'article';
      default: return null;
    }
  }

  function isInteractive(el, role, style) {
    const tag = el.tagName;
    if (tag === 'BODY' || tag === 'HTML') return false;
    if (tag === 'A' && el.hasAttribute('href')) return true;
    if (tag === 'BUTTON' || tag === 'SELECT' || tag === 'TEXTAREA') return true;
    if (tag === 'INPUT') return (el.type || '').toLowerCase() !== 'hidden';
    if (tag === 'OPTION') return false;  // part of its select
    if (role && INTERACTIVE_ROLES.has(role)) return true;
    if (el.isContentEditable && !(el.parentElement && el.parentElement.isContentEditable)) return true;
    if (T.clickable.has(el) || typeof el.onclick === 'function' || el.hasAttribute('onclick')) return true;
    if (el.hasAttribute('tabindex') && el.tabIndex >= 0) return true;
    if (style.cursor === 'pointer') {
      const parent = el.parentElement;
      return !parent || getComputedStyle(parent).cursor !== 'pointer';
    }
    return false;
  }

  function textOf(el) {
    return norm(el.innerText !== undefined ? el.innerText : el.textContent);
  }

  function labelsOf(el) {
    if (!el.labels || !el.labels.length) return '';
    return norm(Array.from(el.labels).map((label) => {
      const copy = label.cloneNode(true);
      copy.querySelectorAll('input, select, textarea, button').forEach((c) => c.remove());
      return copy.textContent;
    }).join(' '));
  }

  function nameOf(el, role) {
    const aria = el.getAttribute('aria-label');
    if (aria && norm(aria)) return norm(aria);
    const by = el.getAttribute('aria-labelledby');
    if (by) {
      const text = norm(by.split(/\s+/).map((id) => {
        const target = document.getElementById(id);
        return target ? target.textContent : '';
      }).join(' '));
      if (text) return text;
    }
    const tag = el.tagName;
    if (tag === 'INPUT' || tag === 'SELECT' || tag === 'TEXTAREA') {
      const type = (el.type || '').toLowerCase();
      if (tag === 'INPUT' && ['submit', 'button', 'reset'].includes(type)) return norm(el.value) || labelsOf(el);
      if (tag === 'INPUT' && type === 'image') return norm(el.alt || el.value);
      return labelsOf(el) || norm(el.getAttribute('placeholder')) || norm(el.title);
    }
    if (tag === 'IMG') return norm(el.alt) || norm(el.title);
    if (role && CONTAINER_ROLES.has(role)) {
      if (tag === 'TABLE' && el.caption) return norm(el.caption.textContent);
      if (tag === 'FIELDSET') { const legend = el.querySelector('legend'); return legend ? norm(legend.textContent) : ''; }
      return norm(el.title);
    }
    return textOf(el) || norm(el.title) || norm(el.getAttribute('value'));
  }

  function describe(el, role, name) {
    const tag = el.tagName.toLowerCase();
    const type = tag === 'input' ? (el.type || 'text').toLowerCase() : tag === 'textarea' ? 'textarea' : '';
    const textLike = tag === 'textarea' || (tag === 'input' &&
      !['checkbox', 'radio', 'submit', 'button', 'reset', 'image', 'file', 'color', 'range', 'hidden'].includes(type));
    const info = {role: role || 'generic', name: name, tag: tag, type: type,
                  editable: (textLike && !el.readOnly) || (el.isContentEditable === true),
                  disabled: el.disabled === true || el.getAttribute('aria-disabled') === 'true'};
    if (tag === 'select') {
      info.options = Array.from(el.options).map((o) => norm(o.label || o.text));
      info.values = Array.from(el.options).map((o) => o.value);
      info.multiple = el.multiple;
    }
    return info;
  }

  function states(el, role, info, maxValue) {
    const out = [];
    const tag = el.tagName;
    if (tag === 'INPUT' || tag === 'TEXTAREA') {
      const type = (el.type || '').toLowerCase();
      if (type === 'checkbox' || type === 'radio') out.push(el.checked ? 'checked' : 'unchecked');
      else if (type === 'password') out.push('value=' + JSON.stringify('*'.repeat(Math.min(el.value.length, 32))));
      else if (info.editable || type === 'range' || type === 'number') {
        let value = el.value || '';
        if (value.length > maxValue) value = value.slice(0, maxValue) + '…';
        out.push('value=' + JSON.stringify(value));
      }
      if (type && !['text', 'checkbox', 'radio', 'submit', 'button', 'textarea', 'password'].includes(type)) out.push('type=' + type);
      if (type === 'password') out.push('type=password');
    } else if (tag === 'SELECT') {
      const chosen = Array.from(el.selectedOptions).map((o) => norm(o.label || o.text));
      out.push('value=' + JSON.stringify(el.multiple ? chosen : (chosen[0] || '')));
      const shown = info.options.slice(0, 40);
      out.push('options=' + JSON.stringify(shown) + (info.options.length > 40 ? '+' + (info.options.length - 40) : ''));
    } else if (role === 'checkbox' || role === 'radio' || role === 'switch' || role === 'menuitemcheckbox') {
      const checked = el.getAttribute('aria-checked');
      if (checked) out.push(checked === 'true' ? 'checked' : 'unchecked');
    } else if (el.isContentEditable) {
      out.push('value=' + JSON.stringify(textOf(el).slice(0, maxValue)));
    }
    if (info.disabled) out.push('disabled');
    if (el.required) out.push('required');
    if (el.getAttribute('aria-invalid') === 'true') out.push('invalid');
    const expanded = el.getAttribute('aria-expanded');
    if (expanded) out.push(expanded === 'true' ? 'expanded' : 'collapsed');
    if (el.getAttribute('aria-selected') === 'true') out.push('selected');
    if (document.activeElement === el) out.push('focused');
    return out.length ? ' ' + out.join(' ') : '';
  }

  // Get an element ready for an action, waiting (frame by frame, up to timeoutMs) until it is
  // visible, enabled, editable for 'type', and not covered by another element at its centre.
  // 'click' and 'type' return the point for a trusted mouse click or focus it for typing;
  // 'select' chooses the option and fires input/change events as a user's choice would.
  const DIRECT_VALUE = new Set(['date', 'time', 'datetime-local', 'month', 'week', 'color', 'range']);
  const describeElement = (el) => {
    let text = '<' + el.tagName.toLowerCase();
    if (el.id) text += ' id="' + el.id + '"';
    else if (el.className && typeof el.className === 'string') text += ' class="' + el.className.slice(0, 40) + '"';
    return text + '>';
  };
  function blocker(el, mode) {
    if (!el.isConnected) return 'the element is no longer on the page';
    const rect0 = el.getBoundingClientRect();
    if (rect0.top < 0 || rect0.left < 0 || rect0.bottom > innerHeight || rect0.right > innerWidth)
      el.scrollIntoView({block: 'center', inline: 'center', behavior: 'instant'});
    const rect = el.getBoundingClientRect();
    const style = getComputedStyle(el);
    if (rect.width === 0 || rect.height === 0 || style.visibility !== 'visible' ||
        (el.checkVisibility && !el.checkVisibility())) return 'the element is not visible';
    if (el.disabled || el.getAttribute('aria-disabled') === 'true') return 'the element is not enabled';
    if (mode === 'type') {
      const editable = el.isContentEditable || ((el.tagName === 'INPUT' || el.tagName === 'TEXTAREA') && !el.readOnly);
      if (!editable) return 'the element is not editable';
    }
    if (mode === 'select') return '';
    const x = Math.min(Math.max(rect.left + rect.width / 2, 0), innerWidth - 1);
    const y = Math.min(Math.max(rect.top + rect.height / 2, 0), innerHeight - 1);
    const hit = document.elementFromPoint(x, y);
    if (!hit) return 'the element is outside of the viewport';
    if (hit !== el && !el.contains(hit) && hit.control !== el && !(hit.shadowRoot && hit.contains(el)))
      return describeElement(hit) + ' intercepts pointer events';
    return '';
  }
  T.prepare = async (o) => {
    const deadline = performance.now() + o.timeoutMs;
    while (true) {
      const el = T.find(o.id);
      if (!el) return {ok: false, reason: 'element ' + o.id + ' is no longer on the page'};
      const reason = blocker(el, o.mode);
      if (!reason) {
        const rect = el.getBoundingClientRect();
        const point = {ok: true, x: rect.left + rect.width / 2, y: rect.top + rect.height / 2, direct: false};
        if (o.mode === 'select') {
          if (el.tagName !== 'SELECT' || o.optionIndex >= el.options.length) return {ok: false, reason: 'the option is gone'};
          el.focus();
          if (el.multiple) el.options[o.optionIndex].selected = !el.options[o.optionIndex].selected;
          else el.selectedIndex = o.optionIndex;
          el.dispatchEvent(new Event('input', {bubbles: true, composed: true}));
          el.dispatchEvent(new Event('change', {bubbles: true}));
        } else if (o.mode === 'type') {
          el.focus();
          const type = (el.type || '').toLowerCase();
          if (el.tagName === 'INPUT' && DIRECT_VALUE.has(type)) {
            el.value = o.text;
            el.dispatchEvent(new Event('input', {bubbles: true, composed: true}));
            el.dispatchEvent(new Event('change', {bubbles: true}));
            point.direct = true;
          } else if (el.isContentEditable) {
            const range = document.createRange();
            range.selectNodeContents(el);
            const selection = getSelection();
            selection.removeAllRanges();
            selection.addRange(range);
          } else {
            try { el.select(); } catch (error) { el.value = ''; }
          }
        }
        return point;
      }
      if (performance.now() >= deadline) return {ok: false, timeout: true, reason: reason};
      await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
    }
  };

  T.snapshot = (opts) => {
    const lines = [];
    const elements = {};
    const skip = new Set(opts.skipIds || []);
    const maxName = opts.maxName || 160;
    const maxLines = opts.maxLines || 3000;
    const quote = (text) => JSON.stringify(text.length > maxName ? text.slice(0, maxName - 1) + '…' : text);
    const pad = (depth) => '  '.repeat(Math.min(depth, 40));
    const hasInteractive = new WeakSet();
    const interactive = new WeakSet();
    const styles = new WeakMap();
    const styleOf = (el) => { let s = styles.get(el); if (!s) { s = getComputedStyle(el); styles.set(el, s); } return s; };

    // First pass: which elements are interactive, and which have an interactive descendant.
    for (const el of document.body ? document.body.querySelectorAll('*') : []) {
      if (SKIP_TAGS.has(el.tagName) || (el.id && skip.has(el.id))) continue;
      const style = styleOf(el);
      if (style.visibility === 'hidden' || style.display === 'none') continue;
      if (isInteractive(el, roleOf(el), style)) {
        interactive.add(el);
        for (let p = el.parentElement; p && !hasInteractive.has(p); p = p.parentElement) hasInteractive.add(p);
      }
    }

    let pendingText = [];
    let pendingDepth = 0;
    const flush = () => {
      const text = norm(pendingText.join(' '));
      if (text) lines.push(pad(pendingDepth) + 'text ' + quote(text));
      pendingText = [];
    };
    const addText = (text, depth) => {
      if (!norm(text)) return;
      if (pendingText.length && pendingDepth !== depth) flush();
      pendingDepth = depth;
      pendingText.push(text);
    };
    const emit = (line) => { flush(); if (lines.length < maxLines) lines.push(line); };

    function walkChildren(el, depth, covered) {
      const children = el.shadowRoot ? [...el.shadowRoot.childNodes, ...el.childNodes] : el.childNodes;
      for (const child of children) {
        if (child.nodeType === Node.TEXT_NODE) { if (!covered) addText(child.data, depth); }
        else if (child.nodeType === Node.ELEMENT_NODE) walk(child, depth, covered);
      }
    }

    function walk(el, depth, covered) {
      if (lines.length >= maxLines) return;
      if (SKIP_TAGS.has(el.tagName) || (el.id && skip.has(el.id))) return;
      const style = styleOf(el);
      if (style.display === 'none') return;
      if (el.getAttribute('aria-hidden') === 'true' && !hasInteractive.has(el)) return;
      const hidden = style.visibility === 'hidden' || style.visibility === 'collapse';
      const role = roleOf(el);
      if (interactive.has(el)) {
        const id = T.idOf(el);
        const name = nameOf(el, role);
        const info = describe(el, role, name);
        elements[id] = info;
        emit(pad(depth) + '[' + id + '] ' + info.role + ' ' + quote(name) + states(el, role, info, opts.maxValue || 200));
        if (el.tagName === 'SELECT' || el.tagName === 'TEXTAREA' || el.tagName === 'INPUT') return;
        if (hasInteractive.has(el)) walkChildren(el, depth + 1, true);
        return;
      }
      if (hidden) { walkChildren(el, depth, true); return; }
      if (el.tagName === 'LABEL' && el.control) { walkChildren(el, depth, true); return; }
      if (el.tagName === 'IFRAME' || el.tagName === 'FRAME') {
        emit(pad(depth) + 'iframe ' + quote(norm(el.title || el.getAttribute('src') || '')));
        return;
      }
      if (role && LEAF_ROLES.has(role) && !hasInteractive.has(el)) {
        const name = nameOf(el, role);
        if (name || role === 'img') {
          const level = role === 'heading' ? ' level=' + el.tagName.slice(1) : '';
          if (!covered) emit(pad(depth) + role + ' ' + quote(name) + level);
        }
        return;
      }
      if (role && (CONTAINER_ROLES.has(role) || LEAF_ROLES.has(role))) {
        if (!covered) {
          const name = CONTAINER_ROLES.has(role) ? nameOf(el, role) : '';
          emit(pad(depth) + role + (name ? ' ' + quote(name) : ''));
        }
        walkChildren(el, depth + 1, covered);
        flush();
        return;
      }
      const block = !style.display.startsWith('inline') && style.display !== 'contents';
      if (block || el.tagName === 'BR') flush();
      walkChildren(el, depth, covered);
      if (block) flush();
    }

    if (document.body) walk(document.body, 0, false);
    flush();
    const doc = document.documentElement;
    const goalElement = opts.goalSelector ? document.querySelector(opts.goalSelector) : null;
    const globals = {};
    for (const name of opts.globals || []) {
      try { globals[name] = window[name] === undefined ? null : JSON.parse(JSON.stringify(window[name])); }
      catch (error) { globals[name] = null; }
    }
    return {
      url: location.href,
      title: norm(document.title),
      tree: lines.join('\n'),
      truncated: lines.length >= maxLines,
      elements: elements,
      scrollY: Math.round(window.scrollY),
      pageHeight: Math.round(Math.max(doc ? doc.scrollHeight : 0, document.body ? document.body.scrollHeight : 0)),
      viewportHeight: Math.round(window.innerHeight),
      goal: goalElement ? norm(goalElement.textContent) : null,
      globals: globals,
    };
  };
  // Wait until the page is idle, then read it. While a navigation away is under way, wait for the
  // new document to replace this one (the evaluation then fails and is retried on the new
  // document); if it never does (a cancelled navigation, a download), read this document.
  T.observe = async (opts) => {
    const waitForUnload = async () => {
      const start = performance.now();
      while (T.leaving && performance.now() - start < opts.maxNavigationMs)
        await new Promise((resolve) => setTimeout(resolve, 5));
      T.leaving = 0;
    };
    if (T.leaving) await waitForUnload();
    let idle = await T.idle(opts.quietMs, opts.maxIdleMs);
    while (idle === 'leaving') {
      await waitForUnload();
      idle = await T.idle(opts.quietMs, opts.maxIdleMs);
    }
    const snapshot = T.snapshot(opts);
    snapshot.idle = idle === true;
    return snapshot;
  };
  return T;
}
"""

INIT_SCRIPT = f"({_INSTALL})();"

# Prepares an element for an action (see T.prepare).
PREPARE_SCRIPT = "async (o) => window.__trajalign ? window.__trajalign.prepare(o) : null"
PREPARE_SCRIPT_FULL = f"async (o) => ({_INSTALL})().prepare(o)"

# Waits for the page to be idle, then returns the snapshot as JSON text: one round trip per
# observation. One string crosses to Python far faster than the same nested object, which
# Playwright would serialize and rebuild value by value (measured: ~30 ms of a ~40 ms snapshot
# on the shop pages). The helpers are installed in every document by INIT_SCRIPT; the _FULL
# variants (which carry their code) are for the rare document that lacks them.
SNAPSHOT_SCRIPT = "async (o) => window.__trajalign ? JSON.stringify(await window.__trajalign.observe(o)) : null"
SNAPSHOT_SCRIPT_FULL = f"async (o) => JSON.stringify(await ({_INSTALL})().observe(o))"


@dataclass
class PageSnapshot:
    """What the agent sees of a page, and what the env needs to check actions against it."""

    url: str
    title: str
    tree: str
    elements: dict[str, dict[str, Any]] = field(default_factory=dict)
    scroll_y: int = 0
    page_height: int = 0
    viewport_height: int = 0
    truncated: bool = False
    idle: bool = True
    goal: str | None = None
    globals: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_script(cls, text: str) -> PageSnapshot:
        """The snapshot from the JSON text `SNAPSHOT_SCRIPT` returns."""
        data = json.loads(text)
        return cls(url=data["url"], title=data["title"], tree=data["tree"], elements=data["elements"],
                   scroll_y=data["scrollY"], page_height=data["pageHeight"], viewport_height=data["viewportHeight"],
                   truncated=data["truncated"], idle=data.get("idle", True), goal=data.get("goal"),
                   globals=data.get("globals") or {})

    def scroll_line(self) -> str | None:
        """Where the viewport is, when the page is taller than it."""
        if self.page_height <= self.viewport_height or self.page_height <= 0:
            return None
        top = round(100 * self.scroll_y / self.page_height)
        bottom = min(100, round(100 * (self.scroll_y + self.viewport_height) / self.page_height))
        return f"showing {top}%-{bottom}% of the page"


def render_observation(snapshot: PageSnapshot | None, goal: str, error: str | None, max_chars: int,
                       note: str | None = None) -> str:
    """The observation text: goal, URL, the last action's error, then the page tree (cut to `max_chars`)."""
    header = [f"Goal: {goal}"]
    if snapshot is not None:
        header.append(f"URL: {snapshot.url}")
        if snapshot.title:
            header.append(f"Title: {snapshot.title}")
        scroll = snapshot.scroll_line()
        if scroll:
            header.append(f"Scroll: {scroll}")
    header.append(f"Last action error: {error if error else 'none'}")
    if note:
        header.append(note)
    text = "\n".join(header) + "\n\n" + (snapshot.tree if snapshot is not None else "(no page)")
    if snapshot is not None and snapshot.truncated:
        text += "\n... [page cut: too many elements]"
    if len(text) > max_chars:
        text = text[: max_chars - 24] + "\n... [observation cut]"
    return text
