// @ts-check
// What the daemon did and will do: the runs that finished in each minute of the last hour, stacked
// by outcome, and every task's fires in the next 24 hours, a lane per task and a tick per fire.

import * as API from "./api.js";
import { OUTCOMES, stackedBars, timeline } from "./charts.js";
import { h, taskLink } from "./dom.js";
import { exact, isoClock, isoDate, partsIn, zoneFor } from "./times.js";

/** Minutes of finished runs shown, and hours of fires. */
export const MINUTES = 60;
export const HOURS = 24;
/** Lanes drawn at most: the tasks that fire first. */
const LANES = 40;
const HOUR = 3600e3;

/** @param {string} zone */
export async function runsPerMinute(zone) {
  const stats = await API.runStats(MINUTES);
  const clock = (/** @type {string} */ iso) => isoClock(partsIn(new Date(iso), zone));
  const n = stats.buckets.length;
  const marks = stats.buckets
    .map((bucket, i) => ({ bucket, i }))
    // Each quarter of an hour, and the last minute: a quarter too close to it is left out.
    .filter(({ bucket, i }) => i === n - 1 || (i < n - 6 && partsIn(new Date(bucket.at), zone).minute % 15 === 0))
    .map(({ bucket, i }) => ({ at: (i + 0.5) / n, label: clock(bucket.at), minor: i < n - 1 && partsIn(new Date(bucket.at), zone).minute % 30 !== 0 }));
  // The outcomes the daemon counts: those its answer names.
  const series = OUTCOMES.filter(({ key }) => stats.buckets.some((bucket) => key in bucket));
  const figure = stackedBars({
    label: `Runs finished per minute, the last ${MINUTES} minutes`,
    series,
    columns: stats.buckets.map((bucket) => ({
      title: `${clock(bucket.at)} ${zone}`,
      values: Object.fromEntries(OUTCOMES.map(({ key }) => [key, Number(/** @type {Record<string, unknown>} */ (bucket)[key]) || 0])),
    })),
    axis: marks,
    unit: "runs",
  });
  figure.querySelector("figcaption")?.append(h("span", { class: "muted" }, `by the minute they finished, ${zone}`));
  return figure;
}

/** @param {string} zone  the axis's; each fire's tooltip is in its task's zone when that is the choice */
export async function nextDay(zone) {
  const body = await API.upcoming(HOURS);
  const from = Date.parse(body.from);
  const until = Date.parse(body.until);
  const firing = body.tasks.filter((task) => task.fires.length)
    .sort((a, b) => Date.parse(a.fires[0]) - Date.parse(b.fires[0]) || a.task_id.localeCompare(b.task_id));
  if (!firing.length) return h("p", { class: "muted" }, `No task fires in the next ${HOURS} hours.`);
  const lanes = firing.slice(0, LANES).map((task) => {
    const own = zoneFor(task.time_zone);
    const count = `${task.fires.length}${task.more ? "+" : ""}`;
    return {
      name: taskLink(task.task_id),
      label: `${task.task_id}: ${count} fire${count === "1" ? "" : "s"}, the first at ${exact(task.fires[0], own)}`,
      ticks: task.fires.map((iso) => ({ at: Date.parse(iso), title: `${task.task_id}: ${exact(iso, own)}` })),
      note: `×${count}`,
    };
  });
  /** @type {Array<{ at: number, label: string, minor: boolean }>} every third hour of the zone, the date at midnight */
  const marks = [];
  for (let at = Math.ceil(from / HOUR) * HOUR; at < until; at += HOUR) {
    const parts = partsIn(at, zone);
    if (parts.hour % 3) continue;
    marks.push({ at, label: parts.hour === 0 ? `${isoDate(parts).slice(5)} ${isoClock(parts)}` : isoClock(parts), minor: parts.hour % 6 !== 0 });
  }
  const left = firing.length - lanes.length;
  return timeline({
    label: `Fires in the next ${HOURS} hours, a lane per task`,
    from,
    until,
    lanes,
    marks,
    legend: [
      h("span", { class: "key" }, h("span", { class: "swatch series-fire", "aria-hidden": "true" }), " a fire"),
      h("span", { class: "muted" }, `${firing.length} task${firing.length === 1 ? "" : "s"}, the first to fire first; hours in ${zone}`),
      left > 0 ? h("span", { class: "muted" }, ` · ${left} more not drawn`) : null,
      body.truncated ? h("span", { class: "muted" }, " · the daemon cut the list short") : null,
    ],
  });
}
