// @ts-check
// What the modules share: the API token (kept in the tab's sessionStorage once accepted) and the
// view on screen. Everything else is passed as parameters.

/**
 * The view on screen, as the router and the live stream see it.
 * @typedef {object} View
 * @property {Array<() => void>} cleanups  called when the view is left
 * @property {((tasks?: Set<string>) => Promise<unknown>) | null} refresh  redraws from the API, told which tasks'
 *   runs changed when that is known; null until drawn once
 * @property {Set<string>} changes  the tasks whose runs changed since the last refresh
 * @property {ReturnType<typeof setTimeout> | null} pending  the refresh waiting for more changes
 * @property {(error: unknown) => void} failed  shows an error, or signs out when the token is refused
 */

const TOKEN_KEY = "taskd-token";

let token = sessionStorage.getItem(TOKEN_KEY) || "";
/** @type {View | null} */
let view = null;

export function getToken() {
  return token;
}

/**
 * Uses a token for the next calls without keeping it: it is kept only once the API accepts it.
 * @param {string} value
 */
export function setToken(value) {
  token = value;
}

export function keepToken() {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function forgetToken() {
  token = "";
  sessionStorage.removeItem(TOKEN_KEY);
}

export function getView() {
  return view;
}

/** @param {View | null} next */
export function setView(next) {
  view = next;
}
