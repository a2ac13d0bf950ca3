// @ts-check
// The daemon's health as GET /health tells a signed-in caller (its version and uptime, whether it
// refuses new runs, the results waiting to be written, the last reload and any fault), and the
// nodes sharing its store when there are several.

import * as API from "./api.js";
import { h, scroller } from "./dom.js";
import { when } from "./times.js";

/** @typedef {import("./dom.js").Child} Child */

/** A long span in days, hours and minutes: 3 d 4 h, 5 h 12 min, 42 s. @param {number} value  seconds */
export function uptime(value) {
  const minutes = Math.floor(value / 60);
  if (minutes < 1) return `${Math.floor(value)} s`;
  const [days, hours, rest] = [Math.floor(minutes / 1440), Math.floor(minutes / 60) % 24, minutes % 60];
  if (days) return `${days} d ${hours} h`;
  return hours ? `${hours} h ${rest} min` : `${rest} min`;
}

/**
 * @param {API.Health} health
 * @param {string} zone
 */
export function healthFacts(health, zone) {
  /** @param {string} label @param {Child[]} value */
  const fact = (label, ...value) => [h("dt", {}, label), h("dd", {}, ...value)];
  const muted = (/** @type {string} */ text) => h("span", { class: "muted" }, text);
  const started = new Date(Date.now() - health.uptime_s * 1000).toISOString();
  const reload = health.reload;
  const applied = reload ? reload.applied ?? reload.outcome === "applied" : false;
  const changes = Object.entries(reload?.changes ?? {}).filter(([, ids]) => ids.length).map(([kind, ids]) => `${ids.length} ${kind}`);
  return h("dl", { class: "facts", "aria-label": "Daemon" },
    ...fact("Status", h("span", { class: `state state-${health.status === "ok" ? "completed" : "failed"}` }, health.status)),
    ...fact("Version", h("code", {}, health.version)),
    ...fact("Up for", uptime(health.uptime_s), muted(" · since "), h("span", { class: "muted" }, when(started, zone))),
    ...fact("New runs", health.overloaded
      ? h("span", { class: "error" }, `refused: ${typeof health.overloaded === "string" ? health.overloaded : "overloaded"}`)
      : "accepted"),
    ...fact("Pending writes", health.pending_writes.toLocaleString(), muted(" results waiting to be written to the store")),
    ...fact("Last reload", reload
      ? [
        h("span", { class: `state state-${applied ? "completed" : "failed"}` }, applied ? "applied" : "refused"), " ",
        when(reload.at, zone),
        changes.length ? muted(` · ${changes.join(", ")}`) : null,
        reload.errors.length ? h("ul", { class: "errors" }, reload.errors.map((error) => h("li", { class: "error" }, error))) : null,
      ]
      : muted("none since it started")),
    ...fact("Faults", health.faults.length
      ? h("ul", { class: "errors" }, health.faults.map((fault) =>
        h("li", {}, h("strong", { class: "error" }, fault.kind), `: ${fault.reason} `, h("span", { class: "muted" }, "since "), when(fault.since, zone))))
      : muted("none")),
  );
}

/**
 * The nodes sharing the store: whether each is alive, its slots, labels and configuration.
 * @param {API.Node[]} nodes
 */
export function nodesTable(nodes) {
  const columns = ["Node", "Alive", "Slots in use", "Labels", "Configuration", "Draining"];
  return scroller(h("table", { "aria-labelledby": "nodes" },
    h("thead", {}, h("tr", {}, columns.map((name) => h("th", { scope: "col" }, name)))),
    h("tbody", {}, nodes.map((node) => h("tr", { "data-node": node.name },
      h("th", { scope: "row" }, h("code", {}, node.name), node.this ? h("span", { class: "muted" }, " (this one)") : null),
      h("td", {}, h("span", { class: `state state-${node.alive ? "completed" : "failed"}` }, node.alive ? "alive" : "lost")),
      h("td", {}, `${node.slots_in_use.toLocaleString()} of ${node.slots.toLocaleString()}`),
      h("td", {}, Object.keys(node.labels).length
        ? h("ul", { class: "inline" }, Object.entries(node.labels).map(([k, v]) => h("li", {}, h("code", {}, `${k}=${v}`))))
        : h("span", { class: "muted" }, "none")),
      h("td", {}, h("code", { title: node.config_digest }, node.config_digest.slice(0, 12)),
        node.config_differs ? h("span", { class: "state state-waiting" }, " differs from most") : null),
      h("td", {}, node.draining ? h("span", { class: "state state-waiting" }, "draining") : h("span", { class: "muted" }, "no")),
    )))));
}
