// @ts-check
// One task: its status, schedule and spread, the tasks it runs after and those that run after it,
// its next fires, and its latest runs with what they used.

import * as API from "./api.js";
import { h, render, runLink, seconds, stateBadge, taskLink, taskRunsLink, taskStatus, when } from "./dom.js";
import { keyedRows } from "./rows.js";
import { cpuCell, memoryCell } from "./usage.js";

/** @typedef {import("./state.js").View} View */
/** @typedef {import("./dom.js").Child} Child */

/**
 * @param {View} ctx
 * @param {string} id
 */
export async function taskView(ctx, id) {
  const facts = h("dl", { class: "facts" });
  const recent = h("div");
  render(h("h1", {}, "Task ", h("code", {}, id)), facts, h("h2", { id: "recent" }, "Latest runs"), recent);
  const tbody = h("tbody");
  const table = h("table", { "aria-labelledby": "recent" },
    h("thead", {}, h("tr", {}, ["Run", "State", "Trigger", "Queued", "Duration", "CPU", "Memory", "Error"].map((name) => h("th", { scope: "col" }, name)))),
    tbody);
  const none = h("p", { class: "muted" }, "It has not run yet.");
  const rows = keyedRows(tbody, (/** @type {API.Run} */ run) => run.id, () => {
    const row = h("tr", {});
    return { row, update: (run) => row.replaceChildren(...runCells(run)) };
  });
  /** The task, and those it runs after or before: their runs change what the page shows. */
  let related = new Set([id]);
  async function draw() {
    const task = await API.task(id);
    related = new Set([id, ...(task.upstream?.tasks || []), ...task.downstream]);
    facts.replaceChildren(...taskFacts(task));
    rows.draw(task.recent_runs);
    recent.replaceChildren(task.recent_runs.length ? table : none);
  }
  await draw();
  ctx.refresh = async (tasks) => {
    if (!tasks || [...tasks].some((taskId) => related.has(taskId))) await draw();
  };
}

/** @param {API.TaskDetail} task */
function taskFacts(task) {
  /** @param {string} label @param {Child[]} value */
  const fact = (label, ...value) => [h("dt", {}, label), h("dd", {}, ...value)];
  const none = (/** @type {string} */ text) => h("span", { class: "muted" }, text);
  /** @param {string[]} ids */
  const links = (ids) => ids.flatMap((taskId, i) => [i ? ", " : "", taskLink(taskId)]);
  const { upstream, spread, stats } = task;
  const last = task.last_run;
  return [
    ...(task.name !== task.id ? fact("Name", task.name) : []),
    ...fact("Status", taskStatus(task, taskLink)),
    ...fact("Schedule", task.schedule
      ? [h("code", {}, task.schedule), " ", h("span", { class: "muted" }, task.schedule_text)]
      : none(upstream ? "runs after its upstream tasks" : "started by hand")),
    ...(spread ? fact("Spread", `fires shifted by ${written(spread.offset_s)}, spread ${written(spread.spread_s)}`) : []),
    ...(task.schedule ? fact("Next fires", task.next_runs.length ? list(task.next_runs.map((iso) => when(iso))) : none("none")) : []),
    ...fact("Upstream", upstream
      ? [
        "after ", links(upstream.tasks), " ",
        h("span", { class: "muted" }, `(when ${upstream.when}, mode ${upstream.mode})`),
        upstream.mode === "all" && task.waiting_for.length
          ? h("div", { class: "muted" }, "its next run waits for a run of ", links(task.waiting_for))
          : null,
      ]
      : none("none")),
    ...fact("Downstream", task.downstream.length ? links(task.downstream) : none("none")),
    ...fact("Pipeline", h("code", {}, task.pipeline)),
    ...fact("Last run", last ? [runLink(last, stateBadge(last.state)), " ", h("span", { class: "muted" }, seconds(last.duration))] : none("never ran")),
    ...fact("Runs", `${stats.runs.toLocaleString()} run${stats.runs === 1 ? "" : "s"}`,
      stats.success_rate === null ? "" : ` · ${Math.round(stats.success_rate * 100)}% of the last ${stats.finished_considered} completed`,
      stats.mean_duration === null ? "" : ` · ${seconds(stats.mean_duration)} on average`,
      " · ", taskRunsLink(task.id, "all its runs")),
  ];
}

/** @param {Child[]} items */
function list(items) {
  return h("ul", { class: "inline" }, items.map((item) => h("li", {}, item)));
}

/**
 * A duration as taskd.yml writes it: 45s, 10m, 3m12s, 1h30m.
 * @param {number} value  seconds
 */
function written(value) {
  if (!Number.isInteger(value)) return `${value}s`;
  /** @type {Array<[number, string]>} */
  const parts = [[Math.floor(value / 3600), "h"], [Math.floor(value / 60) % 60, "m"], [value % 60, "s"]];
  return parts.filter(([n]) => n).map(([n, unit]) => `${n}${unit}`).join("") || "0s";
}

/** @param {API.Run} run */
function runCells(run) {
  return [
    h("th", { scope: "row" }, runLink(run, h("code", {}, run.id))),
    h("td", {}, stateBadge(run.state)),
    h("td", {}, run.trigger),
    h("td", {}, when(run.queued_at)),
    h("td", {}, seconds(run.duration)),
    h("td", { class: "figure" }, cpuCell(run.usage)),
    h("td", { class: "figure" }, memoryCell(run.usage)),
    h("td", {}, run.error || ""),
  ];
}
