// @ts-check
// The audit trail: who did what, when and from where (starts, stops, re-runs, deletions, reloads,
// refused tokens and refused actions), newest first, filtered by action and actor, a page at a time.

import * as API from "./api.js";
import { h, PAGE, pages, render, scroller } from "./dom.js";
import { vocabulary } from "./schema.js";
import { when, zoneFor } from "./times.js";

const COLUMNS = ["When", "Action", "Actor", "Target", "Status", "From", "Detail"];

/**
 * @param {import("./state.js").View} ctx
 * @param {URLSearchParams} query
 */
export async function auditView(ctx, query) {
  const offset = Number(query.get("offset") || 0);
  const zone = zoneFor(null);
  const { actions } = await vocabulary();
  const action = h("select", { id: "f-action", name: "action" },
    h("option", { value: "" }, "any"), actions.map((name) => h("option", { value: name, selected: query.get("action") === name }, name.replaceAll("_", " "))));
  const actor = h("input", { id: "f-actor", name: "actor", value: query.get("actor") || "", size: 16 });
  const form = h("form", {
    class: "filters",
    role: "search",
    "aria-label": "Filter the audit trail",
    onsubmit: (event) => {
      event.preventDefault();
      const next = new URLSearchParams();
      if (action.value) next.set("action", action.value);
      if (actor.value.trim()) next.set("actor", actor.value.trim());
      location.hash = `#/audit?${next}`;
    },
  },
    h("label", { for: action.id }, "Action", action),
    h("label", { for: actor.id }, "Actor", actor),
    h("button", { type: "submit", class: "primary" }, "Apply"),
    h("button", { type: "button", onclick: () => { location.hash = "#/audit"; } }, "Clear"));
  const tbody = h("tbody");
  const summary = h("p", { class: "muted", role: "status" });
  const pager = h("div", { class: "pager" });
  render(
    h("h1", {}, "Audit"),
    form,
    summary,
    scroller(h("table", { "aria-label": "Audit trail" },
      h("caption", {}, `Newest first; times in ${zone}.`),
      h("thead", {}, h("tr", {}, COLUMNS.map((name) => h("th", { scope: "col" }, name)))),
      tbody)),
    pager,
  );
  const params = new URLSearchParams();
  for (const name of ["action", "actor"]) {
    const value = query.get(name);
    if (value) params.set(name, value);
  }
  params.set("limit", String(PAGE));
  params.set("offset", String(offset));
  async function draw() {
    const body = await API.audit(params);
    // Entries never change, and a row holds nothing of the operator's: each page is drawn anew.
    tbody.replaceChildren(...body.entries.map((entry) => h("tr", { "data-action": entry.action }, entryCells(entry, zone))));
    summary.textContent = `${body.total.toLocaleString()} ${body.total === 1 ? "entry matches" : "entries match"}.`;
    const base = new URLSearchParams(query);
    base.delete("offset");
    pager.replaceChildren(...pages(body.total, offset, "#/audit", base));
  }
  await draw();
  ctx.refresh = draw;
}

/** @param {API.AuditEntry} entry @param {string} zone */
function entryCells(entry, zone) {
  const refused = entry.action === "forbidden" || entry.action === "sign_in_failed";
  return [
    h("td", {}, when(entry.at, zone)),
    h("th", { scope: "row" }, h("span", { class: refused ? "state state-failed" : "state" }, entry.action.replaceAll("_", " "))),
    h("td", {}, entry.actor ?? h("span", { class: "muted" }, "unknown"), entry.role ? h("span", { class: "muted" }, ` (${entry.role})`) : null),
    h("td", {}, entry.target ? h("code", {}, entry.target) : ""),
    h("td", { class: entry.status >= 400 ? "error" : null }, String(entry.status)),
    h("td", {}, entry.remote ?? ""),
    h("td", { class: entry.detail ? "long" : null }, entry.detail ?? ""),
  ];
}
