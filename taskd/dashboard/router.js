// @ts-check
// Which view the location's hash asks for, and signing in and out: the token is asked for when the
// API refuses the one the page has, and kept only once the API accepts it; then the page asks who
// it is, and shows only what that role may do.

import { accepted, Forbidden, Unauthorized, whoami } from "./api.js";
import { auditView } from "./audit.js";
import { byId, h, message, notice, render } from "./dom.js";
import { showCaller } from "./header.js";
import { liveStream } from "./live.js";
import { overview } from "./overview.js";
import { refusal, setCaller } from "./roles.js";
import { runView } from "./run.js";
import { runsView } from "./runs.js";
import { forgetToken, getToken, getView, keepToken, setToken, setView } from "./state.js";
import { taskView } from "./task.js";
import { tasksView } from "./tasks.js";

const REFUSED = "That token was refused. Try again.";

const live = liveStream(signOut);

/** Signs in with the token the page has (or none, when the API needs none). */
export async function enter() {
  live.start();
  try {
    setCaller(await whoami());
  } catch (error) {
    if (error instanceof Unauthorized) return signOut();
    // Left unknown: the page offers no action until it is known; the view says what failed.
  }
  showCaller();
  await route();
}

/** The API refused the token: forget it, and ask for it again. */
export function signOut() {
  const had = Boolean(getToken());
  leaveSession();
  login(had ? REFUSED : null);
}

/** The operator signs out: the token is forgotten. */
export function signOff() {
  leaveSession();
  login(null);
}

function leaveSession() {
  byId("notice").replaceChildren(); // what the last caller was told is not for the next
  forgetToken();
  live.stop();
  setCaller(null);
  showCaller();
}

/** @param {string | null} problem  shown above the form */
function login(problem) {
  leave();
  const input = h("input", { type: "password", name: "token", id: "token", autocomplete: "current-password", required: true });
  const form = h(
    "form",
    {
      class: "login",
      onsubmit: async (event) => {
        event.preventDefault();
        setToken(input.value.trim());
        let ok = false;
        try {
          ok = await accepted();
        } catch (error) {
          forgetToken();
          login(message(error));
          return;
        }
        if (!ok) {
          forgetToken();
          login(REFUSED);
          return;
        }
        keepToken();
        enter();
      },
    },
    h("label", { for: "token" }, "Token", input),
    h("button", { type: "submit", class: "primary" }, "Sign in"),
  );
  render(
    h("h1", {}, "Sign in"),
    h("p", {}, "This taskd asks for an API token (", h("code", {}, "api.token"), " or one of ", h("code", {}, "api.tokens"),
      "); its role says what you may do. It is kept for this browser tab only."),
    problem ? h("p", { class: "error", role: "alert" }, problem) : null,
    form,
  );
  input.focus();
}

/** Whether the sign-in form is what the page shows. */
export function signingIn() {
  return !getToken() && document.querySelector("form.login") !== null;
}

/** @param {unknown} error */
function failed(error) {
  if (error instanceof Unauthorized) signOut();
  else if (error instanceof Forbidden) forbidden(error);
  else notice(h("span", { class: "error" }, message(error)));
}

/**
 * The role was short of an action the page offered: the token's role may have changed since the
 * page asked. It asks again, says which role the action needs, and redraws with what the role may do.
 * @param {Forbidden} error
 */
async function forbidden(error) {
  try {
    setCaller(await whoami());
  } catch {
    // The refusal is said all the same, with the role the page knew.
  }
  showCaller();
  notice(h("span", { class: "error", role: "alert" }, refusal(error.role)));
  await route();
}

function leave() {
  const view = getView();
  if (!view) return;
  for (const cleanup of view.cleanups) cleanup();
  if (view.pending) clearTimeout(view.pending);
  setView(null);
}

/** Draws the view the hash names: #/, #/tasks, #/task/ID, #/runs?…, #/run/ID or #/audit?…. */
export async function route() {
  leave();
  const hash = location.hash || "#/";
  const [path] = hash.split("?");
  const at = hash.indexOf("?");
  const query = new URLSearchParams(at < 0 ? "" : hash.slice(at + 1));
  for (const link of document.querySelectorAll("nav a")) {
    const target = link.getAttribute("href") || "";
    const current = target === "#/" ? path === "#/" || path === "#" : path.startsWith(target);
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  /** @type {import("./state.js").View} */
  const view = { cleanups: [], refresh: null, changes: new Set(), pending: null, failed };
  setView(view);
  try {
    const run = path.match(/^#\/run\/(.+)$/);
    const task = path.match(/^#\/task\/(.+)$/);
    if (run) await runView(view, decodeURIComponent(run[1]));
    else if (task) await taskView(view, decodeURIComponent(task[1]));
    else if (path.startsWith("#/tasks")) await tasksView(view, query);
    else if (path.startsWith("#/runs")) await runsView(view, query);
    else if (path.startsWith("#/audit")) await auditView(view, query);
    else await overview(view, query);
  } catch (error) {
    if (getView() !== view) return; // the operator went elsewhere meanwhile
    if (error instanceof Unauthorized) signOut();
    else if (error instanceof Forbidden) render(h("h1", {}, "Not allowed"), h("p", { class: "error", role: "alert" }, refusal(error.role)));
    else render(h("h1", {}, "Something went wrong"), h("p", { class: "error", role: "alert" }, message(error)));
  }
}
