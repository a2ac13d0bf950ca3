// @ts-check
// The run search: filters by state, task, trigger, time and text, columns sorted from their header
// (what each run used among them), and pages; each run links to its own page. Each run's times are
// in the chosen zone, its task's own when that is the choice.

import * as API from "./api.js";
import { h, PAGE, pages, render, runLink, scroller, seconds, stateBadge, taskRunsLink } from "./dom.js";
import { keyedRows } from "./rows.js";
import { vocabulary } from "./schema.js";
import { getView } from "./state.js";
import { fromInput, toInput, when, zoneFor } from "./times.js";
import { cpuCell, memoryCell } from "./usage.js";
import { taskZones } from "./zones.js";

/** @type {Array<[string, string | null]>} each column's label, and the sort key of GET /runs if it sorts */
const COLUMNS = [
  ["Run", null], ["Task", "task_id"], ["State", "state"], ["Trigger", null], ["Queued", "queued_at"],
  ["Started", "started_at"], ["Finished", "finished_at"], ["Duration", "duration"], ["CPU", "cpu_s"],
  ["Memory", "peak_memory"], ["Error", null],
];

/**
 * @param {import("./state.js").View} ctx
 * @param {URLSearchParams} query
 */
export async function runsView(ctx, query) {
  const [{ states, triggers }, zones] = await Promise.all([vocabulary(), taskZones()]);
  if (getView() !== ctx) return; // the operator went elsewhere while the lists were read
  // Since and Until are read in the zone of the one task searched for, else the browser's (or UTC).
  const only = query.get("task_id");
  const zone = zoneFor(only && !only.includes(",") ? zones.get(only) : null);
  const offset = Number(query.get("offset") || 0);
  const sort = query.get("sort") || "-queued_at";
  /** @param {string} label @param {HTMLInputElement | HTMLSelectElement} control */
  const field = (label, control) => h("label", { for: control.id }, label, control);
  /** @param {string[]} values @param {string | null} chosen */
  const options = (values, chosen) => [h("option", { value: "" }, "any"), values.map((v) => h("option", { value: v, selected: chosen === v }, v))];
  const state = h("select", { id: "f-state", name: "state" }, options(states, query.get("state")));
  const trigger = h("select", { id: "f-trigger", name: "trigger" }, options(triggers, query.get("trigger")));
  const task = h("input", { id: "f-task", name: "task_id", value: query.get("task_id") || "", size: 16 });
  const typed = { placeholder: "YYYY-MM-DD HH:MM or 2h", size: 20, autocomplete: "off" };
  const since = h("input", { id: "f-since", name: "since", value: toInput(query.get("since"), zone), ...typed });
  const until = h("input", { id: "f-until", name: "until", value: toInput(query.get("until"), zone), ...typed });
  const text = h("input", { id: "f-q", name: "q", type: "search", value: query.get("q") || "", size: 18 });
  const form = h("form", {
    class: "filters",
    role: "search",
    "aria-label": "Filter runs",
    onsubmit: (event) => {
      event.preventDefault();
      const next = new URLSearchParams();
      for (const [name, control] of /** @type {const} */ ([["state", state], ["trigger", trigger], ["task_id", task], ["q", text]])) {
        if (control.value.trim()) next.set(name, control.value.trim());
      }
      for (const [name, control] of /** @type {const} */ ([["since", since], ["until", until]])) {
        // A date and time is read in the zone shown; anything else (2h: two hours ago) goes to the API as it is.
        const value = control.value.trim();
        if (value) next.set(name, fromInput(value, zone)?.toISOString() ?? value);
      }
      if (sort !== "-queued_at") next.set("sort", sort);
      location.hash = `#/runs?${next}`;
    },
  },
    field("State", state), field("Task", task), field("Trigger", trigger), field(`Since (${zone})`, since), field(`Until (${zone})`, until), field("Search", text),
    h("button", { type: "submit", class: "primary" }, "Apply"),
    h("button", { type: "button", onclick: () => { location.hash = "#/runs"; } }, "Clear"),
  );
  const header = COLUMNS.map(([label, key]) => {
    if (!key) return h("th", { scope: "col" }, label);
    const active = sort.replace(/^-/, "") === key;
    const descending = sort.startsWith("-");
    const next = new URLSearchParams(query);
    next.delete("offset");
    next.set("sort", active && !descending ? `-${key}` : key);
    return h("th", { scope: "col", "aria-sort": active ? (descending ? "descending" : "ascending") : null },
      h("button", { type: "button", class: "sort", onclick: () => { location.hash = `#/runs?${next}`; } }, label, active ? (descending ? " ▼" : " ▲") : ""));
  });
  const tbody = h("tbody");
  const pager = h("div", { class: "pager" });
  const summary = h("p", { class: "muted", role: "status" });
  render(h("h1", {}, "Runs"), form, summary, scroller(h("table", { "aria-label": "Runs" }, h("thead", {}, h("tr", {}, header)), tbody)), pager);
  const rows = keyedRows(tbody, (/** @type {API.Run} */ run) => run.id, (run) => {
    const row = h("tr", { "data-run": run.id });
    return { row, update: (run) => row.replaceChildren(...runCells(run, zoneFor(zones.get(run.task_id)))) };
  });
  const params = new URLSearchParams(query);
  params.set("limit", String(PAGE));
  params.set("offset", String(offset));
  params.set("sort", sort);
  async function draw() {
    const body = await API.runs(params);
    rows.draw(body.runs);
    // Past 10,000 matches a PostgreSQL store estimates the total, and says so.
    const about = body.total_exact === false ? "about " : "";
    summary.textContent = `${about}${body.total.toLocaleString()} ${body.total === 1 ? "run matches" : "runs match"}.`;
    const base = new URLSearchParams(query);
    base.delete("offset");
    pager.replaceChildren(...pages(body.total, offset, "#/runs", base));
  }
  await draw();
  ctx.refresh = draw;
}

/** @param {API.Run} run @param {string} zone */
function runCells(run, zone) {
  return [
    h("th", { scope: "row" }, runLink(run, h("code", {}, run.id))),
    h("td", {}, taskRunsLink(run.task_id)),
    h("td", {}, stateBadge(run.state)),
    h("td", {}, run.trigger),
    h("td", {}, when(run.queued_at, zone)),
    h("td", {}, when(run.started_at, zone)),
    h("td", {}, when(run.finished_at, zone)),
    h("td", {}, seconds(run.duration)),
    h("td", { class: "figure" }, cpuCell(run.usage)),
    h("td", { class: "figure" }, memoryCell(run.usage)),
    h("td", { class: run.error ? "long" : null }, run.error || ""),
  ];
}
