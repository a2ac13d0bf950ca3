// @ts-check
// The overview: slots, queued runs and the day's failures as cards; the runs that finished in each
// minute of the last hour and every task's fires in the next 24 hours as charts; the daemon's health
// and, when several share the store, its nodes; what runs hold of this node's capacity and of each
// pool; the next days' runs due per hour as a strip with the crowded hours in red; and each task's
// last runs as a strip coloured by outcome.

import { HOURS, nextDay, runsPerMinute } from "./activity.js";
import * as API from "./api.js";
import { h, message, PAGE, pages, render, scroller, taskLink, taskStatus } from "./dom.js";
import { healthFacts, nodesTable } from "./health.js";
import { keyedRows } from "./rows.js";
import { getView } from "./state.js";
import { exact, isoClock, isoDate, partsIn, zoneFor } from "./times.js";
import { bytes, cores } from "./usage.js";

/** Runs per task in a strip. */
const STRIP = 20;
/** Days the forecast shows, and how often it is asked again: it is some work for the daemon. */
const PLAN_DAYS = 7;
const PLAN_EVERY = 5 * 60e3;
/** How often the chart of the last hour moves on, and the fires of the next day are asked again. */
const MINUTE_EVERY = 60e3;
const UPCOMING_EVERY = 5 * 60e3;
const HOUR = 3600e3;
/** Crowded minutes named in an hour's title; the rest are counted. */
const NAMED = 5;

/** @typedef {{ task: API.Task, strip: HTMLElement | null }} Entry  a task, and its new strip if it changed */
/** @typedef {import("./state.js").View} View */

/**
 * @param {View} ctx
 * @param {URLSearchParams} query
 */
export async function overview(ctx, query) {
  const offset = Number(query.get("offset") || 0);
  const zone = zoneFor(null);
  const cards = h("ul", { class: "cards", "aria-label": "Now" });
  const tbody = h("tbody");
  const pager = h("div", { class: "pager" });
  const waiting = (/** @type {string} */ what) => h("p", { class: "muted" }, `Reading ${what}…`);
  const plan = h("div", { class: "plan" }, waiting("the forecast"));
  const lastHour = h("div", {}, waiting("the last hour"));
  const nextHours = h("div", {}, waiting("the next fires"));
  const daemon = h("div");
  const nodes = h("section", { "aria-labelledby": "nodes", hidden: true });
  const held = h("div");
  render(
    h("h1", {}, "Overview"),
    cards,
    h("div", { class: "columns" },
      h("section", { "aria-labelledby": "last-hour" }, h("h2", { id: "last-hour" }, "Runs finished in the last hour"), lastHour),
      h("section", { "aria-labelledby": "daemon" }, h("h2", { id: "daemon" }, "Daemon"), daemon)),
    h("h2", { id: "upcoming" }, `Next ${HOURS} hours`),
    nextHours,
    nodes,
    h("h2", { id: "capacity" }, "Capacity and pools"),
    held,
    h("h2", { id: "plan" }, `Next ${PLAN_DAYS} days`),
    plan,
    h("h2", { id: "history" }, "Recent runs by task"),
    scroller(h("table", { "aria-labelledby": "history" },
      h("caption", {}, `Each task's last ${STRIP} runs, oldest first: green completed, red failed or interrupted, amber stopped, blue active.`),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Task"), h("th", { scope: "col" }, "Status"), h("th", { scope: "col" }, "Recent runs"))),
      tbody)),
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
    const [health, queued, failures, cluster] = await Promise.all([
      API.health(),
      API.runs(new URLSearchParams({ state: "queued", limit: "1" })),
      API.runs(new URLSearchParams({ state: "failed", since, limit: "1" })),
      API.nodes().catch((error) => (error instanceof API.Unauthorized ? Promise.reject(error) : null)),
    ]);
    /** @param {string} label @param {string} value @param {string} id */
    const card = (label, value, id) => h("li", { class: "card" }, h("span", { class: "label", id }, label), h("span", { class: "value", "aria-labelledby": id }, value));
    cards.replaceChildren(
      card("Slots in use", `${health.slots.held} of ${health.slots.limit}`, "card-slots"),
      card("Queued runs", queued.total.toLocaleString(), "card-queued"),
      card("Failures in the last 24 hours", failures.total.toLocaleString(), "card-failures"),
    );
    daemon.replaceChildren(healthFacts(health, zone));
    held.replaceChildren(...holdings(health.resources));
    const several = cluster !== null && cluster.nodes.length > 1;
    nodes.hidden = !several;
    if (several) nodes.replaceChildren(h("h2", { id: "nodes" }, "Nodes"), nodesTable(cluster.nodes));
  }

  /** @param {Set<string> | undefined} only  the tasks whose strips changed; undefined: all of them */
  async function drawTasks(only) {
    const body = await API.tasks(PAGE, offset);
    const keep = (/** @type {API.Task} */ task) => only !== undefined && !only.has(task.id) && rows.has(task.id);
    const strips = await Promise.all(body.tasks.map((task) => (keep(task) ? null : strip(task))));
    rows.draw(body.tasks.map((task, i) => ({ task, strip: strips[i] })));
    pager.replaceChildren(...pages(body.total, offset, "#/"));
  }

  // Not awaited: the rest of the view does not wait for them, and one failing leaves the rest.
  const minutes = keepDrawn(ctx, lastHour, "The chart of the last hour", () => runsPerMinute(zone), MINUTE_EVERY);
  keepDrawn(ctx, nextHours, "The next fires", () => nextDay(zone), UPCOMING_EVERY);
  keepDrawn(ctx, plan, "The forecast", async () => planStrip(await API.plan(PLAN_DAYS), zone), PLAN_EVERY);

  await Promise.all([drawCards(), drawTasks(undefined)]);
  ctx.refresh = (tasks) => Promise.all([drawCards(), drawTasks(tasks), minutes()]);
}

/**
 * Fills `into` with what `make` draws now and every `every` ms while the view is on screen. A
 * failure is said in its place, and leaves the rest of the view as it was.
 * @param {View} ctx
 * @param {HTMLElement} into
 * @param {string} what  as the failure names it
 * @param {() => Promise<Node | Node[]>} make
 * @param {number} every
 * @returns {() => Promise<void>}  draws it again now
 */
function keepDrawn(ctx, into, what, make, every) {
  /** @type {ReturnType<typeof setTimeout> | null} */
  let next = null;
  async function draw() {
    if (next) clearTimeout(next);
    try {
      const made = await make();
      if (getView() === ctx) into.replaceChildren(...[made].flat());
    } catch (error) {
      if (getView() !== ctx) return;
      if (error instanceof API.Unauthorized) ctx.failed(error);
      else into.replaceChildren(h("p", { class: "muted" }, `${what} is not available: ${message(error)}`));
    }
    if (getView() === ctx) next = setTimeout(draw, every);
  }
  ctx.cleanups.push(() => {
    if (next) clearTimeout(next);
  });
  draw();
  return draw;
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
  const table = scroller(h("table", { class: "pools", "aria-label": "Pools" },
    h("thead", {}, h("tr", {}, ["Pool", "Held", "Holders", "Waiting"].map((name) => h("th", { scope: "col" }, name)))),
    h("tbody", {}, pools.map((pool) => h("tr", { "data-pool": pool.name },
      h("th", { scope: "row" }, h("code", {}, pool.name)),
      h("td", {}, `${pool.held.toLocaleString()} of ${pool.size.toLocaleString()}`),
      h("td", {}, pool.holders.toLocaleString()),
      h("td", { class: pool.waiting ? "state-waiting" : null }, pool.waiting.toLocaleString()))))));
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
  const zone = zoneFor(task.time_zone);
  const cells = runs.reverse().map((run) => {
    const queued = exact(run.queued_at, zone);
    return h("a", { href: `#/run/${encodeURIComponent(run.id)}`, class: run.state, title: `${run.state}, queued ${queued}`, "aria-label": `${run.state} run queued ${queued}` });
  });
  return h("div", { class: "strip" }, cells.length ? cells : h("span", { class: "muted" }, "no runs yet"));
}

/**
 * The forecast as a strip of hours, taller and darker as more runs are due in it, red when a minute
 * of it has more tasks due than there are slots; each hour's title says what it holds.
 * @param {API.Plan} plan
 * @param {string} zone  the days are marked in
 */
function planStrip(plan, zone) {
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
  let day = "";
  for (const hour of plan.hours) {
    const start = new Date(hour.hour);
    const minutes = crowded.get(Math.floor(start.getTime() / HOUR)) || [];
    const level = hour.runs ? Math.ceil((4 * hour.runs) / most) : 0;
    const parts = partsIn(start, zone);
    // A new day begins in this hour: at its midnight, or within it in a zone offset by a part of an hour.
    const midnight = day !== "" && isoDate(parts) !== day;
    day = isoDate(parts);
    const title = [
      `${parts.weekday} ${isoDate(parts)} ${isoClock(parts)} ${zone}: `
        + `${hour.runs.toLocaleString()} run${hour.runs === 1 ? "" : "s"} of ${hour.tasks.toLocaleString()} task${hour.tasks === 1 ? "" : "s"} due`,
      ...minutes.slice(0, NAMED).map((minute) => crowdedText(minute, zone)),
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
    days.append(h("span", { class: midnight ? "day" : null }, midnight ? `${parts.weekday} ${parts.day}` : ""));
    runs += hour.runs;
    if (marked) crowdedHours += 1;
  }
  const slots = `${plan.max_concurrent_tasks} slot${plan.max_concurrent_tasks === 1 ? "" : "s"}`;
  return [
    hours,
    days,
    h("p", { class: "legend muted" },
      `${runs.toLocaleString()} runs due, by hour (days in ${zone}): the taller and darker, the more. `,
      crowdedHours
        ? [h("span", { class: "swatch crowded", "aria-hidden": "true" }), ` red: ${crowdedHours} hour${crowdedHours === 1 ? " has" : "s have"} a minute`
          + ` with more tasks due than the ${slots} (max_concurrent_tasks); point at one to see which.`]
        : `No minute has more tasks due than the ${slots} (max_concurrent_tasks).`),
    ...plan.cut_short.map((why) => h("p", { class: "muted" }, `Counted in part: ${why}`)),
  ];
}

/** @param {API.Crowded} minute @param {string} zone */
function crowdedText(minute, zone) {
  const more = minute.tasks_due - minute.tasks.length;
  const time = isoClock(partsIn(new Date(minute.minute), zone));
  return `${time}: ${minute.tasks_due} tasks due, ${minute.over_by} over: ${minute.tasks.join(", ")}${more > 0 ? ` and ${more} more` : ""}`;
}
