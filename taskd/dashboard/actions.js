// @ts-check
// What can be done to a task, from its row or its page: Start, Start with params (a form of its
// params), Stop while it has a run to stop, and Delete once confirmed; each offered only when the
// caller's role may do it.

import * as API from "./api.js";
import { confirmDialog, h, notice, runLink } from "./dom.js";
import { may } from "./roles.js";

/** @typedef {import("./state.js").View} View */

/** The states of a run that has not ended, and so the statuses of a task with a run to stop. */
export const ACTIVE = new Set(["queued", "running", "retrying"]);

/**
 * @typedef {object} Controls
 * @property {HTMLElement[]} buttons  what the role may do, in order
 * @property {(active: boolean) => void} update  whether the task has a run to stop now
 */

/**
 * @param {API.Task} task
 * @param {View} ctx
 * @param {object} place
 * @param {(form: HTMLFormElement | null) => void} place.form  shows the params form under the controls, or takes it away
 * @param {() => void} [place.deleted]  after the task was deleted
 * @returns {Controls}
 */
export function taskControls(task, ctx, place) {
  let active = false;
  /** @param {Record<string, unknown> | null} params  null: the task's defaults */
  const start = async (params) => {
    const body = await API.startTask(task.id, params);
    notice("Started ", runLink({ id: body.run_id }), ` of ${task.id}.`);
  };
  // A button stays disabled until its action and the redraw after it are done; Stop then stays
  // disabled unless a run is left to stop. An action that changed nothing, or left the view,
  // answers false: nothing is redrawn.
  /** @param {() => Promise<boolean | void>} fn */
  const act = (fn) => async (/** @type {Event} */ event) => {
    const button = /** @type {HTMLButtonElement} */ (event.currentTarget);
    button.disabled = true;
    try {
      if ((await fn()) !== false) await ctx.refresh?.();
    } catch (error) {
      ctx.failed(error);
    } finally {
      button.disabled = button === stop && !active;
    }
  };
  const stop = h("button", { type: "button", disabled: true, title: "Stops its runs that have not ended", onclick: act(async () => {
    const body = await API.stopTask(task.id);
    const still = body.stopping.length ? `; ${body.stopping.length} still stopping` : "";
    notice(`Stopped ${body.stopped.length} run(s) of ${task.id}${still}.`);
  }) }, "Stop");
  /** @type {HTMLElement[]} */
  const buttons = [];
  if (may("start")) {
    buttons.push(h("button", { type: "button", onclick: act(() => start(null)) }, "Start"));
    if (Object.keys(task.params || {}).length) {
      buttons.push(h("button", {
        type: "button",
        "aria-expanded": "false",
        onclick: (event) => toggleParams(/** @type {HTMLButtonElement} */ (event.currentTarget), task, start, ctx, place.form),
      }, "Start with params"));
    }
  }
  if (may("stop")) buttons.push(stop);
  if (may("delete")) {
    buttons.push(h("button", { type: "button", class: "danger", onclick: act(async () => {
      const ok = await confirmDialog(`Delete the task ${task.id}? Its active runs are stopped, and it stays deleted until its YAML definition changes.`, "Delete");
      if (!ok) return false;
      await API.deleteTask(task.id);
      notice(`Deleted ${task.id}.`);
      if (!place.deleted) return true;
      place.deleted();
      return false;
    }) }, "Delete"));
  }
  return {
    buttons,
    update(now) {
      active = now;
      stop.disabled = !active;
    },
  };
}

/**
 * Opens or closes the form of the task's params.
 * @param {HTMLButtonElement} button
 * @param {API.Task} task
 * @param {(params: Record<string, unknown>) => Promise<void>} start
 * @param {View} ctx
 * @param {(form: HTMLFormElement | null) => void} place
 */
function toggleParams(button, task, start, ctx, place) {
  if (button.getAttribute("aria-expanded") === "true") {
    place(null);
    button.setAttribute("aria-expanded", "false");
    return;
  }
  button.setAttribute("aria-expanded", "true");
  const inputs = Object.entries(task.params).map(([name, value], i) => {
    const inputId = `param-${task.id}-${i}`;
    const input = h("input", { id: inputId, name, value: typeof value === "string" ? value : JSON.stringify(value) });
    return { name, value, input, label: h("label", { for: inputId }, name, input) };
  });
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
        place(null);
        button.setAttribute("aria-expanded", "false");
        button.focus();
      } catch (error) {
        ctx.failed(error);
      }
    },
  }, inputs.map((i) => i.label), h("button", { type: "submit", class: "primary" }, "Start run"));
  place(form);
  inputs[0]?.input.focus();
}
