// @ts-check
// Building the page: h() and render(), notices, the confirm dialog, state badges, durations, links,
// the pager and the box a wide table scrolls in. Data always enters the page as text, never as HTML.

/** Rows asked of the API per page, and shown per page. */
export const PAGE = 50;

/**
 * What h() and render() accept as content: null, undefined and false are left out, arrays are flattened.
 * @typedef {Node | string | number | null | undefined | false | Children} Child
 */
/** @typedef {Child[]} Children */
/**
 * Attributes, or listeners under on* names; null, undefined and false leave the attribute out.
 * @typedef {Record<string, string | number | boolean | null | undefined | ((event: Event) => unknown)>} Attrs
 */

/**
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Attrs | null} [attrs]
 * @param {...Child} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = String(value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

/**
 * @param {Element} el
 * @param {Child[]} children
 */
function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/**
 * An element the page cannot do without.
 * @param {string} id
 */
export function byId(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page has no #${id}`);
  return el;
}

/** Replaces what the main area shows. @param {...Child} nodes */
export function render(...nodes) {
  const main = byId("main");
  main.replaceChildren();
  append(main, nodes);
}

/** A message in the corner that goes away by itself. @param {...Child} content */
export function notice(...content) {
  const item = h("p", {}, ...content);
  byId("notice").append(item);
  setTimeout(() => item.remove(), 6000);
}

/** @param {unknown} error */
export function message(error) {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Asks before something that cannot be undone; true when the operator confirms.
 * @param {string} text
 * @param {string} label  the confirming button's
 * @returns {Promise<boolean>}
 */
export function confirmDialog(text, label) {
  const dialog = /** @type {HTMLDialogElement} */ (byId("confirm"));
  byId("confirm-text").textContent = text;
  byId("confirm-ok").textContent = label;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true }));
}

/** A run's, a step's or a task's state, coloured by the stylesheet. @param {string} state */
export function stateBadge(state) {
  return h("span", { class: `state state-${state}` }, state);
}

/**
 * A task's status; one waiting on upstream tasks (deleted or disabled) says on which.
 * @param {{ status: string, waiting_on: string[] }} task
 * @param {(taskId: string) => Child} [name]  how each upstream task is shown: its id when left out
 */
export function taskStatus(task, name = (taskId) => taskId) {
  const on = task.waiting_on.flatMap((taskId, i) => [i ? ", " : "", name(taskId)]);
  if (!on.length) return stateBadge(task.status);
  if (task.status === "waiting") return h("span", { class: "state state-waiting" }, "waiting on ", on);
  // Running or overdue comes first, but what it waits on still shows.
  return h("span", {}, stateBadge(task.status), " ", h("span", { class: "state-waiting" }, "waiting on ", on));
}

/**
 * A table in a box of its own that scrolls sideways when the screen is narrower than the table,
 * so that the page itself never does.
 * @param {HTMLTableElement} table
 */
export function scroller(table) {
  return h("div", { class: "scroll" }, table);
}

/** A duration in the unit that reads best. @param {number | null | undefined} value */
export function seconds(value) {
  if (value === null || value === undefined) return "—";
  if (value < 1) return `${Math.round(value * 1000)} ms`;
  if (value < 120) return `${value.toFixed(1)} s`;
  const minutes = Math.floor(value / 60);
  return minutes < 120 ? `${minutes} min ${Math.round(value % 60)} s` : `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/**
 * @param {{ id: string }} run
 * @param {Child} [text]  the run's id when left out
 */
export function runLink(run, text) {
  return h("a", { href: `#/run/${encodeURIComponent(run.id)}` }, text ?? run.id);
}

/** @param {string} taskId */
export function taskLink(taskId) {
  return h("a", { href: `#/task/${encodeURIComponent(taskId)}` }, taskId);
}

/**
 * The run search of a task's runs.
 * @param {string} taskId
 * @param {Child} [text]  the task's id when left out
 */
export function taskRunsLink(taskId, text) {
  return h("a", { href: `#/runs?task_id=${encodeURIComponent(taskId)}` }, text ?? taskId);
}

/**
 * The pager under a table: previous, the rows shown of how many, next.
 * @param {number} total
 * @param {number} offset
 * @param {string} base  the view's hash, without its query
 * @param {URLSearchParams} [query]  the view's other parameters, kept on every page
 */
export function pages(total, offset, base, query = new URLSearchParams()) {
  /** @param {number} to @param {string} label */
  const link = (to, label) => {
    const params = new URLSearchParams(query);
    params.set("offset", String(to));
    return h("a", { href: `${base}?${params}` }, label);
  };
  const first = total ? offset + 1 : 0;
  const last = Math.min(offset + PAGE, total);
  return [
    offset > 0 ? link(Math.max(0, offset - PAGE), "Previous page") : null,
    h("span", { class: "muted" }, `${first.toLocaleString()}–${last.toLocaleString()} of ${total.toLocaleString()}`),
    last < total ? link(offset + PAGE, "Next page") : null,
  ].filter((el) => el !== null);
}
