// @ts-check
// Who is signed in and what their role lets them do. The page leaves out the controls of what the
// role may not do; the API refuses it all the same, and a refusal names the role it needs.

/** @typedef {import("./api.js").Caller} Caller */
/** @typedef {import("./api.js").Role} Role */
/** @typedef {"start" | "stop" | "rerun" | "delete"} Action */

/** @type {Role[]} the roles from the least to the most allowed */
const RANKS = ["viewer", "operator", "admin"];

/** @type {Record<Action, Role>} */
const NEEDS = { start: "operator", stop: "operator", rerun: "operator", delete: "admin" };

/** @type {Caller | null} null until GET /whoami has answered */
let caller = null;

/** @param {Caller | null} next */
export function setCaller(next) {
  caller = next;
}

export function getCaller() {
  return caller;
}

/** Whether the caller's role may do this; nothing until it is known. @param {Action} action */
export function may(action) {
  return caller !== null && RANKS.indexOf(caller.role) >= RANKS.indexOf(NEEDS[action]);
}

/** Who the caller is, in words: "signed in as bob (operator)". @param {Caller} who */
export function describe(who) {
  if (!who.auth) return `no sign-in needed (${who.role})`;
  return who.name ? `signed in as ${who.name} (${who.role})` : `signed in (${who.role})`;
}

/**
 * Why the API refused: the role it needs, and the caller's own.
 * @param {string | null} role  the role needed, when the API said
 */
export function refusal(role) {
  const needed = role ? `this needs the ${role} role` : "your role may not do this";
  return `Not allowed: ${needed}; ${caller ? describe(caller) : "your role is not known"}.`;
}
