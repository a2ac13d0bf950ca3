// @ts-check
// One run: Stop while it is active and Re-run with the same params (as the caller's role allows),
// its facts (what it waits for while queued, what it used, the runs that triggered it and those it
// triggered), its attempts with their steps, and its log, followed as it is written until the run ends.

import { ACTIVE } from "./actions.js";
import * as API from "./api.js";
import { h, notice, render, runLink, scroller, seconds, stateBadge, taskLink } from "./dom.js";
import { may } from "./roles.js";
import { keyedRows } from "./rows.js";
import { events } from "./sse.js";
import { isoClock, partsIn, when, zoneFor } from "./times.js";
import { usedLine } from "./usage.js";
import { taskZones } from "./zones.js";

/** @typedef {import("./state.js").View} View */
/** @typedef {{ key: string, attempt: API.Attempt, step: API.Step | null }} Line  an attempt's row, or one of its steps' */
/** @typedef {{ seq: number, time: string, stream: string, line: string }} LogLine */

/**
 * @param {View} ctx
 * @param {string} id
 */
export async function runView(ctx, id) {
  const [first, zones] = await Promise.all([API.run(id), taskZones()]);
  const zone = zoneFor(zones.get(first.task_id));
  const facts = h("dl", { class: "facts" });
  const attempts = h("div");
  const log = h("pre", { class: "log", "aria-label": "Log", tabindex: "0" });
  const ending = h("p", { role: "status", id: "run-end" });
  const heading = h("h1", {}, "Run ", h("code", {}, id));
  const controls = runControls(id, ctx, () => draw());
  render(heading, controls.group, facts, h("h2", {}, "Attempts"), attempts,
    h("h2", {}, "Log ", h("span", { class: "muted small" }, `· times in ${zone}`)), log, ending);
  const tbody = h("tbody");
  const table = scroller(h("table", { "aria-label": "Attempts and steps" },
    h("thead", {}, h("tr", {}, ["Attempt", "Step", "Type", "State", "Duration", "Error"].map((name) => h("th", { scope: "col" }, name)))),
    tbody));
  const none = h("p", { class: "muted" }, "No attempt has begun yet.");
  const rows = keyedRows(tbody, (/** @type {Line} */ line) => line.key, () => {
    const row = h("tr", {});
    return { row, update: (line) => row.replaceChildren(...lineCells(line)) };
  });
  /** @param {API.RunDetail} [given]  the run as just read; else it is read again */
  async function draw(given) {
    const run = given ?? await API.run(id);
    controls.update(ACTIVE.has(run.state));
    /** @param {string} label @param {import("./dom.js").Child[]} value */
    const fact = (label, ...value) => [h("dt", {}, label), h("dd", {}, ...value)];
    facts.replaceChildren(
      ...fact("Task", taskLink(run.task_id)),
      ...fact("State", stateBadge(run.state)),
      ...(run.waiting_for.length ? fact("Waiting for", run.waiting_for.join(", ")) : []),
      ...fact("Trigger", run.trigger),
      ...(run.upstream_runs.length ? fact("Triggered by", upstreamRuns(run.upstream_runs, zone)) : []),
      ...(run.downstream_runs.length ? fact("Triggered", downstreamRuns(run.downstream_runs)) : []),
      ...fact("Params", Object.keys(run.params).length ? h("code", {}, JSON.stringify(run.params)) : h("span", { class: "muted" }, "none")),
      ...fact("Scheduled", when(run.scheduled_at, zone)),
      ...fact("Queued", when(run.queued_at, zone)),
      ...fact("Started", when(run.started_at, zone)),
      ...fact("Finished", when(run.finished_at, zone)),
      ...fact("Duration", seconds(run.duration)),
      ...(run.usage ? fact("Used", usedLine(run.usage, ACTIVE.has(run.state))) : []),
      ...(run.error ? fact("Error", h("span", { class: "error" }, run.error)) : []),
    );
    rows.draw(run.attempt_list.flatMap((attempt) => [
      { key: `${attempt.number}`, attempt, step: null },
      ...attempt.steps.map((step) => ({ key: `${attempt.number}.${step.index}`, attempt, step })),
    ]));
    attempts.replaceChildren(run.attempt_list.length ? table : none);
  }
  await draw(first);
  ctx.refresh = () => draw();
  const controller = new AbortController();
  ctx.cleanups.push(() => controller.abort());
  follow(id, { log, ending, draw: () => draw(), failed: ctx.failed, zone }, controller.signal);
}

/**
 * Stop (enabled while the run is active) and Re-run, as the caller's role allows.
 * @param {string} id
 * @param {View} ctx
 * @param {() => Promise<void>} redraw
 */
function runControls(id, ctx, redraw) {
  let active = false;
  /** @param {() => Promise<void>} fn */
  const act = (fn) => async (/** @type {Event} */ event) => {
    const button = /** @type {HTMLButtonElement} */ (event.currentTarget);
    button.disabled = true;
    try {
      await fn();
    } catch (error) {
      ctx.failed(error);
    } finally {
      button.disabled = button === stop && !active;
    }
  };
  const stop = h("button", { type: "button", disabled: true, onclick: act(async () => {
    const body = await API.stopRun(id);
    notice(body.stopped ? `Stopped ${id}.` : `Stopping ${id}…`);
    await redraw();
  }) }, "Stop");
  const rerun = h("button", { type: "button", title: "A new run of its task, with the same params", onclick: act(async () => {
    const body = await API.rerun(id);
    const dropped = body.params_not_repeated ?? [];
    notice("Re-ran as ", runLink({ id: body.run_id }), dropped.length ? `; secret params take their defaults: ${dropped.join(", ")}.` : ".");
    location.hash = `#/run/${encodeURIComponent(body.run_id)}`;
  }) }, "Re-run");
  const buttons = [may("stop") ? stop : null, may("rerun") ? rerun : null].filter((button) => button !== null);
  return {
    group: buttons.length ? h("div", { class: "toolbar", role: "group", "aria-label": "Actions" }, buttons) : null,
    /** @param {boolean} now  whether the run is active */
    update(now) {
      active = now;
      stop.disabled = !active;
    },
  };
}

/**
 * The upstream runs whose end started this one (trigger dependency), each linked to its page.
 * @param {API.UpstreamRun[]} runs
 * @param {string} zone
 */
function upstreamRuns(runs, zone) {
  return h("ul", { class: "inline", "aria-label": "Triggered by" }, runs.map((up) =>
    h("li", {}, runLink({ id: up.run_id }, `run of ${up.task_id}`), " ", stateBadge(up.state), " ", h("span", { class: "muted" }, "ended ", when(up.finished_at, zone)))));
}

/**
 * The downstream tasks this run's end started, each with its run, or waiting for one.
 * @param {API.DownstreamRun[]} runs
 */
function downstreamRuns(runs) {
  return h("ul", { class: "inline", "aria-label": "Triggered" }, runs.map((down) =>
    h("li", {}, down.run_id ? runLink({ id: down.run_id }, `run of ${down.task_id}`) : [taskLink(down.task_id), " ", h("span", { class: "muted" }, "waiting")])));
}

/** @param {Line} line */
function lineCells({ attempt, step }) {
  if (!step) {
    return [h("th", { scope: "row" }, `#${attempt.number}`), h("td", {}, "—"), h("td", {}, ""), h("td", {}, stateBadge(attempt.state)), h("td", {}, seconds(attempt.duration)), h("td", {}, attempt.error || "")];
  }
  return [h("td", {}, ""), h("td", {}, String(step.index + 1)), h("td", {}, step.type), h("td", {}, stateBadge(step.state)), h("td", {}, seconds(step.duration)), h("td", {}, step.error || "")];
}

/**
 * Appends the run's log lines as they are written; at the end, says how the run ended and draws it
 * once more. A dropped stream is taken up again after the last line shown, a few times.
 * @param {string} id
 * @param {{ log: HTMLElement, ending: HTMLElement, draw: () => Promise<void>, failed: (error: unknown) => void, zone: string }} into
 * @param {AbortSignal} signal
 */
async function follow(id, { log, ending, draw, failed, zone }, signal) {
  let last = 0;
  for (let tries = 0; tries < 5 && !signal.aborted; tries++) {
    try {
      /** @type {Record<string, string>} */
      const headers = last ? { "Last-Event-ID": String(last) } : {};
      for await (const event of events(`/run/${encodeURIComponent(id)}/log?follow=1`, signal, headers)) {
        if (event.event === "end") {
          const end = /** @type {{ state: string, error: string | null }} */ (JSON.parse(event.data));
          ending.replaceChildren("The run ended: ", stateBadge(end.state), end.error ? ` — ${end.error}` : "");
          await draw();
          return;
        }
        if (event.event === "error") break;
        const data = /** @type {LogLine} */ (JSON.parse(event.data));
        last = data.seq;
        const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
        log.append(h("span", { class: data.stream }, `${isoClock(partsIn(new Date(data.time), zone), true)} [${data.stream}] ${data.line}\n`));
        if (atBottom) log.scrollTop = log.scrollHeight;
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof API.Unauthorized) return failed(error);
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}
