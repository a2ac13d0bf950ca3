// @ts-check
// The tasks: each one's status, schedule, next fire and last run, with Start, Stop, Delete and, for
// tasks with params, a form to start a run with other values.

import * as API from "./api.js";
import { confirmDialog, h, notice, PAGE, pages, render, runLink, seconds, stateBadge, taskLink, taskStatus, when } from "./dom.js";
import { keyedRows } from "./rows.js";

/** @typedef {import("./state.js").View} View */

/**
 * @param {View} ctx
 * @param {URLSearchParams} query
 */
export async function tasksView(ctx, query) {
  const offset = Number(query.get("offset") || 0);
  const tbody = h("tbody");
  const pager = h("div", { class: "pager" });
  render(
    h("h1", {}, "Tasks"),
    h("table", { "aria-label": "Tasks" },
      h("thead", {}, h("tr", {}, ["Task", "Status", "Schedule", "Next fire", "Last run", "Actions"].map((name) => h("th", { scope: "col" }, name)))),
      tbody),
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
 * The row of a task; a redraw updates what changes as it runs (status, next fire, last run).
 * @param {API.Task} task
 * @param {View} ctx
 * @returns {import("./rows.js").Keyed<API.Task>}
 */
function taskRow(task, ctx) {
  const status = h("td", {});
  const next = h("td", {});
  const last = h("td", {});
  const row = h("tr", { "data-task": task.id },
    h("th", { scope: "row" }, taskLink(task.id), task.name !== task.id ? h("div", { class: "muted" }, task.name) : null),
    status,
    h("td", {}, task.schedule ? [h("code", {}, task.schedule), h("div", { class: "muted" }, task.schedule_text)] : h("span", { class: "muted" }, task.after.length ? `after ${task.after.join(", ")}` : "started by hand")),
    next,
    last,
    taskActions(task, ctx),
  );
  return {
    row,
    update(task) {
      const run = task.last_run;
      status.replaceChildren(taskStatus(task));
      next.replaceChildren(when(task.next_run));
      last.replaceChildren(...(run ? [runLink(run, stateBadge(run.state)), " ", h("span", { class: "muted" }, seconds(run.duration))] : [h("span", { class: "muted" }, "never ran")]));
    },
  };
}

/**
 * @param {API.Task} task
 * @param {View} ctx
 */
function taskActions(task, ctx) {
  /** @param {Record<string, unknown> | null} params  null: the task's defaults */
  const start = async (params) => {
    const body = await API.startTask(task.id, params);
    notice("Started ", runLink({ id: body.run_id }), ` of ${task.id}.`);
  };
  // The button stays disabled until the action and the redraw after it are done.
  /** @param {() => Promise<void>} fn */
  const act = (fn) => async (/** @type {Event} */ event) => {
    const button = /** @type {HTMLButtonElement} */ (event.currentTarget);
    button.disabled = true;
    try {
      await fn();
      await ctx.refresh?.();
    } catch (error) {
      ctx.failed(error);
    } finally {
      button.disabled = false;
    }
  };
  const cell = h("td", { class: "actions" },
    h("button", { type: "button", onclick: act(() => start(null)) }, "Start"), " ",
    h("button", { type: "button", onclick: act(async () => {
      const body = await API.stopTask(task.id);
      const still = body.stopping.length ? `; ${body.stopping.length} still stopping` : "";
      notice(`Stopped ${body.stopped.length} run(s) of ${task.id}${still}.`);
    }) }, "Stop"), " ",
    h("button", { type: "button", class: "danger", onclick: act(async () => {
      const ok = await confirmDialog(`Delete the task ${task.id}? Its active runs are stopped, and it stays deleted until its YAML definition changes.`, "Delete");
      if (!ok) return;
      await API.deleteTask(task.id);
      notice(`Deleted ${task.id}.`);
    }) }, "Delete"),
  );
  if (Object.keys(task.params || {}).length) {
    cell.append(" ", h("button", {
      type: "button",
      "aria-expanded": "false",
      onclick: (event) => toggleParams(/** @type {HTMLButtonElement} */ (event.currentTarget), task, start, ctx),
    }, "Start with params"));
  }
  return cell;
}

/**
 * Opens or closes the params form in a row under the task's.
 * @param {HTMLButtonElement} button
 * @param {API.Task} task
 * @param {(params: Record<string, unknown>) => Promise<void>} start
 * @param {View} ctx
 */
function toggleParams(button, task, start, ctx) {
  const row = /** @type {HTMLTableRowElement} */ (button.closest("tr"));
  const open = row.nextElementSibling;
  if (open?.classList.contains("params-row")) {
    open.remove();
    button.setAttribute("aria-expanded", "false");
    return;
  }
  button.setAttribute("aria-expanded", "true");
  const inputs = Object.entries(task.params).map(([name, value], i) => {
    const inputId = `param-${task.id}-${i}`;
    const input = h("input", { id: inputId, name, value: typeof value === "string" ? value : JSON.stringify(value) });
    return { name, value, input, label: h("label", { for: inputId }, name, input) };
  });
  const paramsRow = h("tr", { class: "params-row" });
  const form = h("form", {
    class: "params",
    "aria-label": `Params for ${task.id}`,
    onsubmit: async (event) => {
      event.preventDefault();
      /** @type {Record<string, unknown>} */
      const params = {};
      for (const { name, value, input } of inputs) {
        // A default that is not text (a number, a list) is read back as JSON, or kept as text.
        if (typeof value === "string") params[name] = input.value;
        else {
          try { params[name] = JSON.parse(input.value); } catch { params[name] = input.value; }
        }
      }
      try {
        await start(params);
        paramsRow.remove();
        button.setAttribute("aria-expanded", "false");
        button.focus();
      } catch (error) {
        ctx.failed(error);
      }
    },
  }, inputs.map((i) => i.label), h("button", { type: "submit", class: "primary" }, "Start run"));
  paramsRow.append(h("td", { colspan: 6 }, form));
  row.after(paramsRow);
  inputs[0]?.input.focus();
}
