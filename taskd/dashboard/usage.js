// @ts-check
// What runs use and hold: CPU seconds, memory and cores, in the unit that reads best. A figure the
// daemon could not tell is said to be unknown, with why when it knows, and never shown as 0.

import { h, seconds } from "./dom.js";

/** @typedef {import("./api.js").Usage} Usage */

/** @type {Array<[string, number]>} */
const UNITS = [["TiB", 2 ** 40], ["GiB", 2 ** 30], ["MiB", 2 ** 20], ["KiB", 2 ** 10]];
/** Why a peak at or under taskd's own is not known. */
const AT_MOST = "unknown: rusage counts a process's peak from taskd's own size, and this one was no larger";

/** Bytes as taskd writes them: 512 MiB, 1.5 GiB, 210.4 MiB. @param {number} value */
export function bytes(value) {
  for (const [unit, factor] of UNITS) {
    if (value >= factor) return `${Number((value / factor).toPrecision(4))} ${unit}`;
  }
  return `${value} B`;
}

/** Millicores as cores: 2, 0.5. @param {number} value */
export function cores(value) {
  return String(Number((value / 1000).toFixed(3)));
}

/** CPU seconds: 0.24 s, 12.3 s, 3 min 5 s. @param {number} value */
export function cpuSeconds(value) {
  if (value >= 120) return seconds(value);
  if (value > 0 && value < 0.005) return "< 0.01 s";
  return `${value.toFixed(value < 10 ? 2 : 1)} s`;
}

/** The steps whose use cannot be told, as a sentence. @param {string[]} steps */
function inside(steps) {
  const names = steps.length > 1 ? `${steps.slice(0, -1).join(", ")} and ${steps[steps.length - 1]}` : steps[0];
  return `${names} run${steps.length === 1 ? "s" : ""} inside taskd`;
}

/** @param {string} text @param {string | null} [why]  its title */
function muted(text, why = null) {
  return h("span", { class: "muted", title: why }, text);
}

/** A figure that is missing: unknown when steps ran whose use cannot be told, else nothing yet. @param {Usage | null} usage */
function missing(usage) {
  if (usage?.unknown.length) return muted("unknown", inside(usage.unknown));
  if (usage?.processes) return muted("unknown", "not measured on this system");
  return muted("—");
}

/** A run's CPU seconds, for a table. @param {Usage | null} usage */
export function cpuCell(usage) {
  return usage && usage.cpu_s !== null ? cpuSeconds(usage.cpu_s) : missing(usage);
}

/** A run's peak memory, for a table; an unknown peak says how large it could have been. @param {Usage | null} usage */
export function memoryCell(usage) {
  if (usage && usage.peak_memory_bytes !== null) return bytes(usage.peak_memory_bytes);
  if (usage && usage.peak_memory_at_most !== null) return muted(`≤ ${bytes(usage.peak_memory_at_most)}`, AT_MOST);
  return missing(usage);
}

/**
 * What a run used, in a line: 1.23 s CPU · 210.4 MiB peak · 1 process (rusage); each unknown part
 * says so, and why.
 * @param {Usage} usage
 * @param {boolean} active  the run has not ended: the figures are so far
 * @returns {import("./dom.js").Child}
 */
export function usedLine(usage, active) {
  const told = usage.unknown.length ? inside(usage.unknown) : "";
  if (!usage.processes) {
    if (told) return muted(`CPU and memory unknown: ${told}`);
    return muted(active ? "nothing yet: the figures come as its step processes end" : "nothing measured: no step started a process");
  }
  const peak = usage.peak_memory_at_most === null
    ? muted("peak unknown")
    : muted(`peak unknown, at most ${bytes(usage.peak_memory_at_most)}`, AT_MOST);
  const parts = [
    usage.cpu_s === null ? muted(told ? `CPU unknown: ${told}` : "CPU unknown") : `${cpuSeconds(usage.cpu_s)} CPU`,
    usage.peak_memory_bytes === null ? peak : `${bytes(usage.peak_memory_bytes)} peak`,
    `${usage.processes.toLocaleString()} process${usage.processes === 1 ? "" : "es"}${usage.source === "none" ? "" : ` (${usage.source})`}`,
    told && usage.cpu_s !== null ? muted(`not counted: ${told}`) : null,
    active ? muted("so far") : null,
  ];
  return parts.filter((part) => part !== null).map((part, i) => [i ? " · " : "", part]);
}
