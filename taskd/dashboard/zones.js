// @ts-check
// Each task's time zone, for the views that show runs of tasks they do not otherwise read (the run
// search, a run's page): asked of GET /tasks only while times are written in each task's zone, and
// kept for a minute.

import { tasks } from "./api.js";
import { getChoice } from "./times.js";

/** Tasks read at once; a task beyond them has its times in the browser's zone. */
const READ = 1000;
const KEEP = 60e3;

/** @type {{ at: number, zones: Promise<Map<string, string>> } | null} */
let kept = null;

/** The zone of each task, by id; empty unless times are written in each task's zone. */
export async function taskZones() {
  if (getChoice() !== "task") return new Map();
  if (!kept || Date.now() - kept.at > KEEP) {
    const zones = tasks(READ, 0).then((page) => new Map(page.tasks.map((task) => [task.id, task.time_zone])));
    kept = { at: Date.now(), zones };
    zones.catch(() => { kept = null; }); // a failed read is tried again next time
  }
  return kept.zones;
}
