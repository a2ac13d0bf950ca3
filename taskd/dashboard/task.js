// @ts-check
// One task: what its role lets the caller do to it (Start, Stop while a run of it is active,
// Delete), its status, schedule and spread, the tasks it runs after and those that run after it,
// how its runs went (success rate, median and 95th percentile durations, a chart of its latest
// finished runs), its next fires, its pipeline as written, and its latest runs with what they used.

import { ACTIVE, taskControls } from "./actions.js";
import * as API from "./api.js";
import { OUTCOMES, valueBars } from "./charts.js";
import { h, render, runLink, scroller, seconds, stateBadge, taskLink, taskRunsLink, taskStatus } from "./dom.js";
import { keyedRows } from "./rows.js";
import { isoClock, isoDate, partsIn, relative, when, zoneFor } from "./times.js";
import { cpuCell, memoryCell } from "./usage.js";

/** @typedef {import("./state.js").View} View */
/** @typedef {import("./dom.js").Child} Child */

/**
 * @param {View} ctx
 * @param {string} id
 */
export async function taskView(ctx, id) {
  const first = await API.task(id);
  const zone = zoneFor(first.time_zone);
  const facts = h("dl", { class: "facts" });
  const fires = h("div");
  const chart = h("div");
  const recent = h("div");
  const formPlace = h("div");
  const controls = taskControls(first, ctx, {
    form: (form) => formPlace.replaceChildren(...(form ? [form] : [])),
    deleted: () => { location.hash = "#/tasks"; },
  });
  const tbody = h("tbody");
  const table = scroller(h("table", { "aria-labelledby": "recent" },
    h("thead", {}, h("tr", {}, ["Run", "State", "Trigger", "Queued", "Duration", "CPU", "Memory", "Error"].map((name) => h("th", { scope: "col" }, name)))),
    tbody));
  render(
    h("h1", {}, "Task ", h("code", {}, id)),
    controls.buttons.length ? h("div", { class: "toolbar", role: "group", "aria-label": "Actions" }, controls.buttons) : null,
    formPlace,
    facts,
    h("h2", { id: "durations" }, "Durations"),
    chart,
    first.schedule ? [h("h2", { id: "fires" }, "Next fires"), fires] : null,
    h("h2", { id: "pipeline" }, "Pipeline"),
    pipelineView(first),
    h("h2", { id: "recent" }, "Latest runs"),
    recent,
  );
  const none = h("p", { class: "muted" }, "It has not run yet.");
  const rows = keyedRows(tbody, (/** @type {API.Run} */ run) => run.id, () => {
    const row = h("tr", {});
    return { row, update: (run) => row.replaceChildren(...runCells(run, zone)) };
  });
  /** The task, and those it runs after or before: their runs change what the page shows. */
  let related = new Set([id]);
  /** @param {API.TaskDetail} task */
  function show(task) {
    related = new Set([id, ...(task.upstream?.tasks || []), ...task.downstream]);
    const active = task.active_runs ?? task.recent_runs.filter((run) => ACTIVE.has(run.state));
    controls.update(active.length > 0);
    facts.replaceChildren(...taskFacts(task, active, zone));
    fires.replaceChildren(task.next_runs.length
      ? h("ol", { class: "fires", "aria-labelledby": "fires" }, task.next_runs.map((iso) => h("li", {}, when(iso, zone), " ", h("span", { class: "muted" }, relative(iso, zone)))))
      : h("p", { class: "muted" }, task.status === "disabled" ? "None: it is disabled." : "None."));
    chart.replaceChildren(durations(task, zone));
    rows.draw(task.recent_runs);
    recent.replaceChildren(task.recent_runs.length ? table : none);
  }
  show(first);
  ctx.refresh = async (tasks) => {
    if (!tasks || [...tasks].some((taskId) => related.has(taskId))) show(await API.task(id));
  };
}

/**
 * @param {API.TaskDetail} task
 * @param {API.Run[]} active
 * @param {string} zone
 */
function taskFacts(task, active, zone) {
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
    ...fact("Time zone", task.time_zone, zone === task.time_zone ? "" : h("span", { class: "muted" }, ` · times here are in ${zone}`)),
    ...(spread ? fact("Spread", `fires shifted by ${written(spread.offset_s)}, spread ${written(spread.spread_s)}`) : []),
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
    ...fact("Active runs", active.length
      ? h("ul", { class: "inline" }, active.map((run) => h("li", {}, runLink(run, h("code", {}, run.id)), " ", stateBadge(run.state))))
      : none("none")),
    ...fact("Last run", last
      ? [runLink(last, stateBadge(last.state)), " ", h("span", { class: "muted" }, seconds(last.duration)),
        last.finished_at ? h("span", { class: "muted" }, " · ended ", relative(last.finished_at, zone)) : null]
      : none("never ran")),
    ...fact("Runs", `${stats.runs.toLocaleString()} run${stats.runs === 1 ? "" : "s"}`, " · ", taskRunsLink(task.id, "all its runs")),
    ...fact("Success rate", stats.success_rate === null
      ? none("no finished run yet")
      : [`${Math.round(stats.success_rate * 100)}%`, h("span", { class: "muted" }, ` of the last ${stats.finished_considered} finished`)]),
    ...fact("Duration", stats.mean_duration === null && stats.p50_duration == null
      ? none("no finished run yet")
      : [
        stats.p50_duration == null ? null : `median ${seconds(stats.p50_duration)}`,
        stats.p95_duration == null ? null : ` · 95% within ${seconds(stats.p95_duration)}`,
        stats.mean_duration === null ? null : h("span", { class: "muted" }, ` · mean ${seconds(stats.mean_duration)}`),
      ]),
  ];
}

/**
 * The latest finished runs' durations, oldest first, coloured by outcome, with the median and the
 * 95th percentile across.
 * @param {API.TaskDetail} task
 * @param {string} zone
 */
function durations(task, zone) {
  const history = (task.history ?? []).filter((run) => run.duration !== null);
  if (!history.length) return h("p", { class: "muted" }, task.history ? "No finished run yet." : "Not available from this taskd.");
  /** @param {string} iso */
  const label = (iso) => {
    const parts = partsIn(new Date(iso), zone);
    return `${isoDate(parts)} ${isoClock(parts)}`;
  };
  const { p50_duration: p50, p95_duration: p95 } = task.stats;
  // The last one's date is left out when it is the first one's.
  const [first, last] = [label(history[0].finished_at), label(history[history.length - 1].finished_at)];
  return valueBars({
    label: `Durations of the last ${history.length} finished runs of ${task.id}, oldest first`,
    items: history.map((run) => ({
      kind: run.state,
      value: run.duration ?? 0,
      title: `${run.id}: ${run.state} in ${seconds(run.duration)}, ended ${label(run.finished_at)} ${zone}`,
      href: `#/run/${encodeURIComponent(run.id)}`,
    })),
    series: OUTCOMES,
    lines: [...(p50 == null ? [] : [{ value: p50, label: "median" }]), ...(p95 == null ? [] : [{ value: p95, label: "95th percentile" }])],
    format: seconds,
    ends: [first, `${last.startsWith(first.slice(0, 10)) ? last.slice(11) : last} ${zone}`],
  });
}

/** The pipeline's steps as written, and the whole definition on demand. @param {API.TaskDetail} task */
function pipelineView(task) {
  const definition = task.definition;
  const steps = definition?.pipeline.processors ?? [];
  return h("div", {},
    h("p", {}, h("code", {}, task.pipeline), definition?.pipeline.description ? h("span", { class: "muted" }, ` · ${definition.pipeline.description}`) : null),
    steps.length
      ? h("ol", { class: "steps" }, steps.map((step) => Object.entries(step).map(([type, options]) =>
        h("li", {}, h("strong", {}, type), Object.keys(options).length ? [" ", h("code", {}, JSON.stringify(options))] : null))))
      : null,
    definition
      ? h("details", {}, h("summary", {}, "Definition as written", definition.source ? ` in ${definition.source}` : ""),
        h("pre", { class: "definition" }, JSON.stringify(definition, null, 2)))
      : null);
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

/** @param {API.Run} run @param {string} zone */
function runCells(run, zone) {
  return [
    h("th", { scope: "row" }, runLink(run, h("code", {}, run.id))),
    h("td", {}, stateBadge(run.state)),
    h("td", {}, run.trigger),
    h("td", {}, when(run.queued_at, zone)),
    h("td", {}, seconds(run.duration)),
    h("td", { class: "figure" }, cpuCell(run.usage)),
    h("td", { class: "figure" }, memoryCell(run.usage)),
    h("td", { class: run.error ? "long" : null }, run.error || ""),
  ];
}
