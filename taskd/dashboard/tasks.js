// @ts-check
// The tasks: each one's status, schedule, next fire and last run, with what the caller's role may do
// to it: Start, Stop (while it has a run to stop), Delete and, for tasks with params, a form to
// start a run with other values.

import { ACTIVE, taskControls } from "./actions.js";
import * as API from "./api.js";
import { h, PAGE, pages, render, runLink, scroller, seconds, stateBadge, taskLink, taskStatus } from "./dom.js";
import { may } from "./roles.js";
import { keyedRows } from "./rows.js";
import { relative, when, zoneFor } from "./times.js";

/** @typedef {import("./state.js").View} View */

/**
 * @param {View} ctx
 * @param {URLSearchParams} query
 */
export async function tasksView(ctx, query) {
  const offset = Number(query.get("offset") || 0);
  const tbody = h("tbody");
  const pager = h("div", { class: "pager" });
  const columns = ["Task", "Status", "Schedule", "Next fire", "Last run", may("start") ? "Actions" : null];
  render(
    h("h1", {}, "Tasks"),
    scroller(h("table", { "aria-label": "Tasks", class: "stacks" },
      h("thead", {}, h("tr", {}, columns.map((name) => name && h("th", { scope: "col" }, name)))),
      tbody)),
    pager,
  );
  const rows = keyedRows(tbody, (/** @type {API.Task} */ task) => task.id, (task) => taskRow(task, ctx));
  async function draw() {
    const body = await API.tasks(PAGE, offset);
    rows.draw(body.tasks);
    pager.replaceChildren(...pages(body.total, offset, "#/tasks"));
  }
  await draw();
  ctx.refresh = draw;
}

/**
 * The row of a task; a redraw updates what changes as it runs (status, next fire, last run, Stop).
 * @param {API.Task} task
 * @param {View} ctx
 * @returns {import("./rows.js").Keyed<API.Task>}
 */
function taskRow(task, ctx) {
  const status = h("td", { "data-label": "Status" });
  const next = h("td", { "data-label": "Next fire" });
  const last = h("td", { "data-label": "Last run" });
  const zone = zoneFor(task.time_zone);
  /** @type {HTMLTableRowElement} */
  let row;
  const controls = taskControls(task, ctx, {
    form(form) {
      const open = row.nextElementSibling;
      if (open?.classList.contains("params-row")) open.remove();
      if (form) row.after(h("tr", { class: "params-row" }, h("td", { colspan: 6 }, form)));
    },
  });
  row = h("tr", { "data-task": task.id },
    h("th", { scope: "row" }, taskLink(task.id), task.name !== task.id ? h("div", { class: "muted" }, task.name) : null),
    status,
    h("td", { "data-label": "Schedule" }, task.schedule
      ? [h("code", {}, task.schedule), h("div", { class: "muted" }, task.schedule_text)]
      : h("span", { class: "muted" }, task.after.length ? `after ${task.after.join(", ")}` : "started by hand")),
    next,
    last,
    controls.buttons.length ? h("td", { class: "actions" }, controls.buttons.flatMap((button, i) => [i ? " " : "", button])) : null,
  );
  return {
    row,
    update(task) {
      const run = task.last_run;
      status.replaceChildren(taskStatus(task));
      next.replaceChildren(...(task.next_run ? [relative(task.next_run, zone), h("div", { class: "muted small" }, when(task.next_run, zone))] : ["—"]));
      last.replaceChildren(run
        ? h("span", {}, runLink(run, stateBadge(run.state)), " ", h("span", { class: "muted" }, seconds(run.duration)),
          run.finished_at ? h("div", { class: "muted small" }, "ended ", relative(run.finished_at, zone)) : null)
        : h("span", { class: "muted" }, "never ran"));
      controls.update(ACTIVE.has(task.status));
    },
  };
}
