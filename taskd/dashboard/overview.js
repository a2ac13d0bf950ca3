// @ts-check
// The overview: slots, queued runs and the day's failures as cards, what runs hold of this node's
// capacity and of each pool, the next days' runs due per hour as a strip with the crowded hours in
// red, and each task's last runs as a strip coloured by outcome.

import * as API from "./api.js";
import { h, message, PAGE, pages, render, taskLink, taskStatus } from "./dom.js";
import { keyedRows } from "./rows.js";
import { getView } from "./state.js";
import { bytes, cores } from "./usage.js";

/** Runs per task in a strip. */
const STRIP = 20;
/** Days the forecast shows, and how often it is asked again: it is some work for the daemon. */
const PLAN_DAYS = 7;
const PLAN_EVERY = 5 * 60e3;
const HOUR = 3600e3;
/** Crowded minutes named in an hour's title; the rest are counted. */
const NAMED = 5;

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
  const plan = h("div", { class: "plan" }, h("p", { class: "muted" }, "Reading the forecast…"));
  const held = h("div");
  render(
    h("h1", {}, "Overview"),
    cards,
    h("h2", { id: "capacity" }, "Capacity and pools"),
    held,
    h("h2", { id: "plan" }, `Next ${PLAN_DAYS} days`),
    plan,
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
      row: h("tr", { "data-task": task.id }, h("th", { scope: "row" }, taskLink(task.id)), status, runs),
      update({ task, strip }) {
        status.replaceChildren(taskStatus(task));
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
    held.replaceChildren(...holdings(health.resources));
  }

  /** @param {Set<string> | undefined} only  the tasks whose strips changed; undefined: all of them */
  async function drawTasks(only) {
    const body = await API.tasks(PAGE, offset);
    const keep = (/** @type {API.Task} */ task) => only !== undefined && !only.has(task.id) && rows.has(task.id);
    const strips = await Promise.all(body.tasks.map((task) => (keep(task) ? null : strip(task))));
    rows.draw(body.tasks.map((task, i) => ({ task, strip: strips[i] })));
    pager.replaceChildren(...pages(body.total, offset, "#/"));
  }

  // Asked once when the view opens, then every PLAN_EVERY, not on every change of a run: it depends
  // on the schedules and the hour only. Not awaited: the rest of the view does not wait for it.
  /** @type {ReturnType<typeof setTimeout> | null} */
  let nextPlan = null;
  async function drawPlan() {
    try {
      const body = await API.plan(PLAN_DAYS);
      if (getView() === ctx) plan.replaceChildren(...planStrip(body));
    } catch (error) {
      if (getView() !== ctx) return;
      if (error instanceof API.Unauthorized) ctx.failed(error);
      else plan.replaceChildren(h("p", { class: "muted" }, `The forecast is not available: ${message(error)}`));
    }
    if (getView() === ctx) nextPlan = setTimeout(drawPlan, PLAN_EVERY);
  }
  ctx.cleanups.push(() => {
    if (nextPlan) clearTimeout(nextPlan);
  });
  drawPlan();

  await Promise.all([drawCards(), drawTasks(undefined)]);
  ctx.refresh = (tasks) => Promise.all([drawCards(), drawTasks(tasks)]);
}

/**
 * What runs' requests hold of this node's memory and CPU, and each pool's units and who waits for them.
 * @param {API.Resources} resources
 */
function holdings({ capacity, pools }) {
  /**
   * @param {string} label
   * @param {API.Held | undefined} figures
   * @param {(held: string, size: string, free: string) => string} text  given the figures in their unit
   * @param {(value: number) => string} unit
   */
  const line = (label, figures, text, unit) => figures
    ? [h("dt", {}, label), h("dd", {},
      `${text(unit(figures.held), unit(figures.size), unit(figures.free))}, `,
      h("span", { class: figures.waiting ? "state-waiting" : null }, `waiting ${figures.waiting.toLocaleString()}`),
      " ", h("span", { class: "muted" }, `· size from ${figures.from}`))]
    : [];
  const table = h("table", { class: "pools", "aria-label": "Pools" },
    h("thead", {}, h("tr", {}, ["Pool", "Held", "Holders", "Waiting"].map((name) => h("th", { scope: "col" }, name)))),
    h("tbody", {}, pools.map((pool) => h("tr", { "data-pool": pool.name },
      h("th", { scope: "row" }, h("code", {}, pool.name)),
      h("td", {}, `${pool.held.toLocaleString()} of ${pool.size.toLocaleString()}`),
      h("td", {}, pool.holders.toLocaleString()),
      h("td", { class: pool.waiting ? "state-waiting" : null }, pool.waiting.toLocaleString())))));
  return [
    h("dl", { class: "facts", "aria-label": "Capacity" },
      h("dt", {}, "Node"), h("dd", {}, h("code", {}, capacity.node), " ", h("span", { class: "muted" }, "· what its runs' requests hold of it")),
      line("Memory", capacity.memory, (held, size, free) => `${held} of ${size} (${free} free)`, bytes),
      line("CPU", capacity.cpu, (held, size, free) => `${held} of ${size} core${size === "1" ? "" : "s"} (${free} free)`, cores)),
    pools.length ? table : h("p", { class: "muted" }, "No pools: taskd.yml defines none under pools:."),
  ];
}

/** @param {API.Task} task */
async function strip(task) {
  const { runs } = await API.taskRuns(task.id, STRIP);
  const cells = runs.reverse().map((run) =>
    h("a", { href: `#/run/${encodeURIComponent(run.id)}`, class: run.state, title: `${run.state}, ${run.queued_at}`, "aria-label": `${run.state} run of ${run.queued_at}` }),
  );
  return h("div", { class: "strip" }, cells.length ? cells : h("span", { class: "muted" }, "no runs yet"));
}

/**
 * The forecast as a strip of hours, taller and darker as more runs are due in it, red when a minute
 * of it has more tasks due than there are slots; each hour's title says what it holds.
 * @param {API.Plan} plan
 */
function planStrip(plan) {
  /** @type {Map<number, API.Crowded[]>} the crowded minutes by hour */
  const crowded = new Map();
  for (const minute of plan.crowded) {
    const hour = Math.floor(Date.parse(minute.minute) / HOUR);
    const list = crowded.get(hour);
    if (list) list.push(minute);
    else crowded.set(hour, [minute]);
  }
  const most = Math.max(1, ...plan.hours.map((hour) => hour.runs));
  const hours = h("div", { class: "plan-hours", role: "group", "aria-labelledby": "plan" });
  const days = h("div", { class: "plan-days", "aria-hidden": "true" });
  let runs = 0;
  let crowdedHours = 0;
  for (const hour of plan.hours) {
    const start = new Date(hour.hour);
    const minutes = crowded.get(Math.floor(start.getTime() / HOUR)) || [];
    const level = hour.runs ? Math.ceil((4 * hour.runs) / most) : 0;
    const midnight = start.getHours() === 0;
    const title = [
      `${start.toLocaleString([], { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" })}: `
        + `${hour.runs.toLocaleString()} run${hour.runs === 1 ? "" : "s"} of ${hour.tasks.toLocaleString()} task${hour.tasks === 1 ? "" : "s"} due`,
      ...minutes.slice(0, NAMED).map(crowdedText),
      minutes.length > NAMED ? `and ${minutes.length - NAMED} more crowded minutes` : "",
    ].filter(Boolean).join("\n");
    const marked = minutes.length > 0;
    hours.append(h("span", {
      class: `l${level}${marked ? " crowded" : ""}${midnight ? " day" : ""}`,
      title,
      // The crowded hours are the ones to read: they are reached by keyboard too.
      role: marked ? "img" : null,
      "aria-label": marked ? title : null,
      tabindex: marked ? 0 : null,
    }));
    days.append(h("span", { class: midnight ? "day" : null }, midnight ? start.toLocaleDateString([], { weekday: "short", day: "numeric" }) : ""));
    runs += hour.runs;
    if (marked) crowdedHours += 1;
  }
  const slots = `${plan.max_concurrent_tasks} slot${plan.max_concurrent_tasks === 1 ? "" : "s"}`;
  return [
    hours,
    days,
    h("p", { class: "legend muted" },
      `${runs.toLocaleString()} runs due, by hour in your time zone: the taller and darker, the more. `,
      crowdedHours
        ? [h("span", { class: "swatch crowded", "aria-hidden": "true" }), ` red: ${crowdedHours} hour${crowdedHours === 1 ? " has" : "s have"} a minute`
          + ` with more tasks due than the ${slots} (max_concurrent_tasks); point at one to see which.`]
        : `No minute has more tasks due than the ${slots} (max_concurrent_tasks).`),
    ...plan.cut_short.map((why) => h("p", { class: "muted" }, `Counted in part: ${why}`)),
  ];
}

/** @param {API.Crowded} minute */
function crowdedText(minute) {
  const more = minute.tasks_due - minute.tasks.length;
  const time = new Date(minute.minute).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return `${time}: ${minute.tasks_due} tasks due, ${minute.over_by} over: ${minute.tasks.join(", ")}${more > 0 ? ` and ${more} more` : ""}`;
}
