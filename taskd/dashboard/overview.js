// @ts-check
// The overview: slots, queued runs and the day's failures as cards, and each task's last runs as a
// strip coloured by outcome.

import * as API from "./api.js";
import { h, PAGE, pages, render, stateBadge, taskRunsLink } from "./dom.js";
import { keyedRows } from "./rows.js";

/** Runs per task in a strip. */
const STRIP = 20;

/** @typedef {{ task: API.Task, strip: HTMLElement | null }} Entry  a task, and its new strip if it changed */

/**
 * @param {import("./state.js").View} ctx
 * @param {URLSearchParams} query
 */
export async function overview(ctx, query) {
  const offset = Number(query.get("offset") || 0);
  const cards = h("ul", { class: "cards", "aria-label": "Now" });
  const tbody = h("tbody");
  const pager = h("div", { class: "pager" });
  render(
    h("h1", {}, "Overview"),
    cards,
    h("h2", { id: "history" }, "Recent runs by task"),
    h("table", { "aria-labelledby": "history" },
      h("caption", {}, `Each task's last ${STRIP} runs, oldest first: green completed, red failed or interrupted, amber stopped, blue active.`),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Task"), h("th", { scope: "col" }, "Status"), h("th", { scope: "col" }, "Recent runs"))),
      tbody),
    pager,
  );
  const rows = keyedRows(tbody, (/** @type {Entry} */ entry) => entry.task.id, ({ task }) => {
    const status = h("td", {});
    const runs = h("td", {});
    return {
      row: h("tr", { "data-task": task.id }, h("th", { scope: "row" }, taskRunsLink(task.id)), status, runs),
      update({ task, strip }) {
        status.replaceChildren(stateBadge(task.status));
        if (strip) runs.replaceChildren(strip);
      },
    };
  });

  async function drawCards() {
    const since = new Date(Date.now() - 86400e3).toISOString();
    const [health, queued, failures] = await Promise.all([
      API.health(),
      API.runs(new URLSearchParams({ state: "queued", limit: "1" })),
      API.runs(new URLSearchParams({ state: "failed", since, limit: "1" })),
    ]);
    /** @param {string} label @param {string} value @param {string} id */
    const card = (label, value, id) => h("li", { class: "card" }, h("span", { class: "label", id }, label), h("span", { class: "value", "aria-labelledby": id }, value));
    cards.replaceChildren(
      card("Slots in use", `${health.slots.held} of ${health.slots.limit}`, "card-slots"),
      card("Queued runs", queued.total.toLocaleString(), "card-queued"),
      card("Failures in the last 24 hours", failures.total.toLocaleString(), "card-failures"),
    );
  }

  /** @param {Set<string> | undefined} only  the tasks whose strips changed; undefined: all of them */
  async function drawTasks(only) {
    const body = await API.tasks(PAGE, offset);
    const keep = (/** @type {API.Task} */ task) => only !== undefined && !only.has(task.id) && rows.has(task.id);
    const strips = await Promise.all(body.tasks.map((task) => (keep(task) ? null : strip(task))));
    rows.draw(body.tasks.map((task, i) => ({ task, strip: strips[i] })));
    pager.replaceChildren(...pages(body.total, offset, "#/"));
  }

  await Promise.all([drawCards(), drawTasks(undefined)]);
  ctx.refresh = (tasks) => Promise.all([drawCards(), drawTasks(tasks)]);
}

/** @param {API.Task} task */
async function strip(task) {
  const { runs } = await API.taskRuns(task.id, STRIP);
  const cells = runs.reverse().map((run) =>
    h("a", { href: `#/run/${encodeURIComponent(run.id)}`, class: run.state, title: `${run.state}, ${run.queued_at}`, "aria-label": `${run.state} run of ${run.queued_at}` }),
  );
  return h("div", { class: "strip" }, cells.length ? cells : h("span", { class: "muted" }, "no runs yet"));
}
