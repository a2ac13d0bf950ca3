// @ts-check
// The header's controls: who is signed in, with Sign out, and the time zone the page writes times in.

import { byId, h } from "./dom.js";
import { describe, getCaller } from "./roles.js";
import { browserZone, CHOICES, getChoice, setChoice } from "./times.js";

/** @param {import("./times.js").ZoneChoice} choice */
function choiceName(choice) {
  if (choice === "utc") return "UTC";
  if (choice === "task") return "each task's zone";
  return `this browser's (${browserZone()})`;
}

/**
 * Fills the zone switch; a change is kept, and `changed` redraws the view in the new zone.
 * @param {() => void} changed
 */
export function zonePicker(changed) {
  const select = /** @type {HTMLSelectElement} */ (byId("zone"));
  select.replaceChildren(...CHOICES.map((choice) => h("option", { value: choice }, choiceName(choice))));
  select.value = getChoice();
  select.addEventListener("change", () => {
    setChoice(CHOICES.find((choice) => choice === select.value) ?? "browser");
    changed();
  });
}

/** Says who is signed in; Sign out shows when a token was given. */
export function showCaller() {
  const who = getCaller();
  byId("who").textContent = who ? describe(who) : "";
  byId("sign-out").hidden = !who?.auth;
}
