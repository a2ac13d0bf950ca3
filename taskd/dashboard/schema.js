// @ts-check
// The API's own lists of run states, triggers and audit actions, read once per page load from
// GET /openapi.json (which needs no token), so that the page never holds a copy that could fall
// behind the server.

import { api } from "./api.js";

/** @typedef {{ states: string[], triggers: string[], actions: string[] }} Vocabulary */

/** @type {Promise<Vocabulary> | null} */
let loading = null;

/** @returns {Promise<Vocabulary>} */
export function vocabulary() {
  if (!loading) {
    loading = load();
    loading.catch(() => { loading = null; }); // a failed read is tried again next time
  }
  return loading;
}

async function load() {
  const doc = /** @type {any} */ (await api("/openapi.json"));
  const schemas = doc?.components?.schemas;
  return {
    states: strings(schemas?.Run?.properties?.state?.enum, "run states"),
    triggers: strings(schemas?.Run?.properties?.trigger?.enum, "triggers"),
    actions: strings(schemas?.AuditEntry?.properties?.action?.enum, "audit actions"),
  };
}

/**
 * @param {unknown} list
 * @param {string} what
 * @returns {string[]}
 */
function strings(list, what) {
  if (!Array.isArray(list) || !list.every((item) => typeof item === "string")) {
    throw new Error(`GET /openapi.json lists no ${what}`);
  }
  return list;
}
