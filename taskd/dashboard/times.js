// @ts-check
// Times as the page writes them: an ISO date and a 24-hour clock in one chosen time zone, with the
// zone written beside them, and relative times ("in 4 min") that keep the exact instant in their
// title. The choice (the browser's zone, UTC, or each task's own) is kept in localStorage.

import { h } from "./dom.js";

/** @typedef {"browser" | "utc" | "task"} ZoneChoice */
/** @typedef {{ year: number, month: number, day: number, hour: number, minute: number, second: number, weekday: string }} Parts */

const KEY = "taskd-zone";
const MINUTE = 60e3;
const HOUR = 3600e3;

/** @type {ZoneChoice[]} */
export const CHOICES = ["browser", "utc", "task"];

/** @returns {ZoneChoice} */
export function getChoice() {
  const kept = localStorage.getItem(KEY);
  return CHOICES.find((choice) => choice === kept) ?? "browser";
}

/** @param {ZoneChoice} choice */
export function setChoice(choice) {
  localStorage.setItem(KEY, choice);
}

export function browserZone() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
}

/**
 * The zone to write times in: where a task is in context, its own when that is the choice; else
 * the browser's.
 * @param {string | null} [taskZone]
 */
export function zoneFor(taskZone) {
  const choice = getChoice();
  if (choice === "utc") return "UTC";
  if (choice === "task" && taskZone) return taskZone;
  return browserZone();
}

/** @type {Map<string, Intl.DateTimeFormat>} */
const formats = new Map();

/**
 * An instant's calendar date and clock in a zone.
 * @param {Date | number} instant
 * @param {string} zone
 * @returns {Parts}
 */
export function partsIn(instant, zone) {
  let format = formats.get(zone);
  if (!format) {
    format = new Intl.DateTimeFormat("en-US", {
      timeZone: zone, hourCycle: "h23", weekday: "short",
      year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
    });
    formats.set(zone, format);
  }
  /** @type {Record<string, string>} */
  const found = {};
  for (const part of format.formatToParts(instant)) found[part.type] = part.value;
  return {
    year: Number(found.year), month: Number(found.month), day: Number(found.day),
    hour: Number(found.hour) % 24, minute: Number(found.minute), second: Number(found.second),
    weekday: found.weekday,
  };
}

const pad = (/** @type {number} */ n) => String(n).padStart(2, "0");

/** 2026-12-01 @param {Parts} parts */
export function isoDate(parts) {
  return `${parts.year}-${pad(parts.month)}-${pad(parts.day)}`;
}

/** 14:05, or 14:05:09 with seconds. @param {Parts} parts @param {boolean} [seconds] */
export function isoClock(parts, seconds = false) {
  return `${pad(parts.hour)}:${pad(parts.minute)}${seconds ? `:${pad(parts.second)}` : ""}`;
}

/** 2026-12-01 14:05:09 UTC @param {Date | number | string} instant @param {string} zone */
export function exact(instant, zone) {
  const parts = partsIn(new Date(instant), zone);
  return `${isoDate(parts)} ${isoClock(parts, true)} ${zone}`;
}

/**
 * An instant as the page shows it: its date and clock in the zone, the zone beside them.
 * @param {string | null | undefined} iso
 * @param {string} zone
 */
export function when(iso, zone) {
  if (!iso) return "—";
  const parts = partsIn(new Date(iso), zone);
  return h("time", { datetime: iso, title: exact(iso, zone) },
    h("span", { class: "nowrap" }, `${isoDate(parts)} ${isoClock(parts, true)}`), " ", h("span", { class: "zone" }, zone));
}

/**
 * How far an instant is from now, in words: "in 4 min", "3 h ago", "now".
 * @param {number} ms  the instant minus now
 */
export function distance(ms) {
  const size = Math.abs(ms);
  if (size < 5e3) return "now";
  /** @type {string} */
  let amount;
  if (size < MINUTE) amount = `${Math.round(size / 1e3)} s`;
  else if (size < 90 * MINUTE) amount = `${Math.round(size / MINUTE)} min`;
  else if (size < 48 * HOUR) amount = `${Math.round(size / HOUR)} h`;
  else amount = `${Math.round(size / (24 * HOUR))} days`;
  return ms > 0 ? `in ${amount}` : `${amount} ago`;
}

/**
 * An instant relative to now; the exact one, with its zone, is its title. It is kept current by
 * refreshRelative().
 * @param {string | null | undefined} iso
 * @param {string} zone
 */
export function relative(iso, zone) {
  if (!iso) return "—";
  return h("time", { datetime: iso, title: exact(iso, zone), "data-relative": true }, distance(Date.parse(iso) - Date.now()));
}

/** Brings every relative time on the page up to date. */
export function refreshRelative() {
  const now = Date.now();
  for (const el of document.querySelectorAll("time[data-relative]")) {
    el.textContent = distance(Date.parse(el.getAttribute("datetime") || "") - now);
  }
}

/** What an instant typed in a field looks like: 2026-12-01, 2026-12-01 14:05 (or with a T). */
const TYPED = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2}))?$/;

/**
 * An instant as a field shows it, in a zone: 2026-12-01 14:05. Anything else the field was given
 * (a time ago such as 2h, which the API reads) is shown as it is.
 * @param {string | null} value
 * @param {string} zone
 */
export function toInput(value, zone) {
  if (!value) return "";
  const date = new Date(value);
  if (!value.includes("-") || Number.isNaN(date.getTime())) return value;
  const parts = partsIn(date, zone);
  return `${isoDate(parts)} ${isoClock(parts)}`;
}

/**
 * The instant a field's date and time name in a zone; null when it holds no date.
 * @param {string} value  2026-12-01 14:05, or 2026-12-01 for its midnight
 * @param {string} zone
 */
export function fromInput(value, zone) {
  const found = TYPED.exec(value.trim());
  if (!found) return null;
  const [year, month, day, hour, minute] = found.slice(1).map((part) => Number(part ?? 0));
  const wall = Date.UTC(year, month - 1, day, hour, minute);
  // The zone's offset at the instant guessed, then again at the instant it gives (they differ
  // across a change of offset).
  let guess = wall;
  for (let i = 0; i < 2; i++) {
    const parts = partsIn(guess, zone);
    const shown = Date.UTC(parts.year, parts.month - 1, parts.day, parts.hour, parts.minute, parts.second);
    guess = wall - (shown - guess);
  }
  return new Date(guess);
}
