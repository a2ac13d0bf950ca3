// The taskd dashboard: one page, four views (overview, tasks, runs, a run), all drawn from the
// daemon's own API. The token, when the API has one, is kept in sessionStorage and sent on every
// call. Live updates come from GET /events and the run log's event stream, read with fetch (an
// EventSource cannot send the token). Every piece of data enters the page as text, never as HTML.

const TOKEN_KEY = "taskd-token";
const PAGE = 50;
const STRIP = 20;
const STATES = ["queued", "running", "retrying", "completed", "failed", "stopped", "interrupted"];
const TRIGGERS = ["schedule", "manual", "catch_up"];

let token = sessionStorage.getItem(TOKEN_KEY) || "";
let view = null; // the view on screen: { refresh, cleanups }

class Unauthorized extends Error {}

// -- DOM ---------------------------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

const main = () => document.getElementById("main");

function render(...nodes) {
  main().replaceChildren(...nodes.flat());
}

function notice(...content) {
  const item = h("p", {}, ...content);
  document.getElementById("notice").append(item);
  setTimeout(() => item.remove(), 6000);
}

function stateBadge(state) {
  return h("span", { class: `state state-${state}` }, state);
}

function when(iso) {
  if (!iso) return "—";
  return h("time", { datetime: iso, title: iso }, new Date(iso).toLocaleString());
}

function seconds(value) {
  if (value === null || value === undefined) return "—";
  if (value < 1) return `${Math.round(value * 1000)} ms`;
  if (value < 120) return `${value.toFixed(1)} s`;
  const minutes = Math.floor(value / 60);
  return minutes < 120 ? `${minutes} min ${Math.round(value % 60)} s` : `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

function runLink(run, text) {
  return h("a", { href: `#/run/${encodeURIComponent(run.id)}` }, text ?? run.id);
}

function confirmDialog(text, label) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = label;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true }));
}

// -- the API -----------------------------------------------------------------------------------
function authHeaders() {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function api(path, options = {}) {
  const resp = await fetch(path, { ...options, headers: { Accept: "application/json", ...authHeaders(), ...(options.headers || {}) } });
  if (resp.status === 401) throw new Unauthorized("the API refused the token");
  const body = await resp.json().catch(() => null);
  if (!resp.ok) {
    const error = new Error(body?.error?.message || `${resp.status} ${resp.statusText}`);
    error.status = resp.status;
    throw error;
  }
  return body;
}

// Whether the API accepts the current token (or needs none). Asked of /health, which answers
// without a token but shows its details only to an accepted one: no request is refused on the way.
async function accepted() {
  const resp = await fetch("/health", { headers: { Accept: "application/json", ...authHeaders() } });
  const body = await resp.json().catch(() => ({}));
  return "version" in body;
}

// Server-sent events over fetch, so that the token can go in a header.
async function* events(path, signal, headers = {}) {
  const resp = await fetch(path, { signal, headers: { Accept: "text/event-stream", ...authHeaders(), ...headers } });
  if (resp.status === 401) throw new Unauthorized("the API refused the token");
  if (!resp.ok) throw new Error(`${resp.status} ${resp.statusText}`);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const event = { event: "message", data: "", id: null };
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "data") event.data += (event.data ? "\n" : "") + text;
        else if (field === "event") event.event = text;
        else if (field === "id") event.id = text;
      }
      if (event.data) yield event;
    }
  }
}

// One /events stream for the whole page: views ask to be refreshed when runs change.
const live = {
  controller: null,
  running: false,
  async start() {
    if (this.running) return;
    this.running = true;
    let pause = 500;
    const status = document.getElementById("connection");
    while (this.running) {
      this.controller = new AbortController();
      try {
        status.textContent = "live";
        for await (const event of events("/events", this.controller.signal)) {
          pause = 500;
          if (event.event === "run") changed(JSON.parse(event.data));
        }
      } catch (error) {
        if (error instanceof Unauthorized) {
          this.running = false;
          signOut(true);
          return;
        }
      }
      if (!this.running) return;
      status.textContent = "reconnecting…";
      await new Promise((resolve) => setTimeout(resolve, pause));
      pause = Math.min(pause * 2, 10000);
    }
  },
  stop() {
    this.running = false;
    this.controller?.abort();
  },
};

let pending = null;
function changed(event) {
  if (!view?.refresh) return;
  view.changes = view.changes || new Set();
  view.changes.add(event.task_id);
  if (pending) return;
  pending = setTimeout(async () => {
    pending = null;
    const current = view;
    const tasks = current.changes;
    current.changes = new Set();
    try {
      await current.refresh(tasks);
    } catch (error) {
      failed(error);
    }
  }, 300);
}

// -- signing in --------------------------------------------------------------------------------
function signOut(refused) {
  const had = Boolean(token);
  token = "";
  sessionStorage.removeItem(TOKEN_KEY);
  live.stop();
  login(refused && had ? "That token was refused. Try again." : null);
}

function login(message) {
  leave();
  const input = h("input", { type: "password", name: "token", id: "token", autocomplete: "current-password", required: true });
  const form = h(
    "form",
    {
      class: "login",
      onsubmit: async (event) => {
        event.preventDefault();
        token = input.value.trim();
        let ok = false;
        try {
          ok = await accepted();
        } catch (error) {
          token = "";
          login(error.message);
          return;
        }
        if (!ok) {
          token = "";
          login("That token was refused. Try again.");
          return;
        }
        sessionStorage.setItem(TOKEN_KEY, token);
        live.start();
        route();
      },
    },
    h("label", { for: "token" }, "Token", input),
    h("button", { type: "submit", class: "primary" }, "Sign in"),
  );
  render(
    h("h1", {}, "Sign in"),
    h("p", {}, "This taskd asks for its API token (", h("code", {}, "api.token"), "). It is kept for this browser tab only."),
    message ? h("p", { class: "error", role: "alert" }, message) : null,
    form,
  );
  input.focus();
}

function failed(error) {
  if (error instanceof Unauthorized) signOut(true);
  else notice(h("span", { class: "error" }, error.message));
}

// -- routing -----------------------------------------------------------------------------------
function hashQuery() {
  const hash = location.hash || "#/";
  const at = hash.indexOf("?");
  return new URLSearchParams(at < 0 ? "" : hash.slice(at + 1));
}

function leave() {
  for (const cleanup of view?.cleanups || []) cleanup();
  view = null;
}

async function route() {
  leave();
  const hash = location.hash || "#/";
  const path = hash.split("?")[0];
  for (const link of document.querySelectorAll("nav a")) {
    const target = link.getAttribute("href");
    const current = target === "#/" ? path === "#/" || path === "#" : path.startsWith(target);
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  view = { cleanups: [], refresh: null };
  try {
    const run = path.match(/^#\/run\/(.+)$/);
    if (run) await runView(view, decodeURIComponent(run[1]));
    else if (path.startsWith("#/tasks")) await tasksView(view);
    else if (path.startsWith("#/runs")) await runsView(view);
    else await overview(view);
  } catch (error) {
    if (error instanceof Unauthorized) signOut(true);
    else render(h("h1", {}, "Something went wrong"), h("p", { class: "error", role: "alert" }, error.message));
  }
}

// -- overview ----------------------------------------------------------------------------------
async function overview(ctx) {
  const offset = Number(hashQuery().get("offset") || 0);
  const cards = h("ul", { class: "cards", "aria-label": "Now" });
  const rows = h("tbody");
  const pager = h("div", { class: "pager" });
  render(
    h("h1", {}, "Overview"),
    cards,
    h("h2", { id: "history" }, "Recent runs by task"),
    h("table", { "aria-labelledby": "history" },
      h("caption", {}, `Each task's last ${STRIP} runs, oldest first: green completed, red failed or interrupted, amber stopped, blue active.`),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Task"), h("th", { scope: "col" }, "Status"), h("th", { scope: "col" }, "Recent runs"))),
      rows),
    pager,
  );
  const strips = new Map();
  async function drawCards() {
    const since = new Date(Date.now() - 86400e3).toISOString();
    const [health, queued, failures] = await Promise.all([
      api("/health"),
      api("/runs?state=queued&limit=1"),
      api(`/runs?state=failed&since=${encodeURIComponent(since)}&limit=1`),
    ]);
    const card = (label, value, id) => h("li", { class: "card" }, h("span", { class: "label", id }, label), h("span", { class: "value", "aria-labelledby": id }, value));
    cards.replaceChildren(
      card("Slots in use", `${health.slots.held} of ${health.slots.limit}`, "card-slots"),
      card("Queued runs", queued.total.toLocaleString(), "card-queued"),
      card("Failures in the last 24 hours", failures.total.toLocaleString(), "card-failures"),
    );
  }
  async function strip(task) {
    const { runs } = await api(`/task/${encodeURIComponent(task.id)}/runs?limit=${STRIP}`);
    const cells = runs.reverse().map((run) =>
      h("a", { href: `#/run/${encodeURIComponent(run.id)}`, class: run.state, title: `${run.state}, ${run.queued_at}`, "aria-label": `${run.state} run of ${run.queued_at}` }),
    );
    return h("div", { class: "strip" }, cells.length ? cells : h("span", { class: "muted" }, "no runs yet"));
  }
  async function drawTasks(only) {
    const body = await api(`/tasks?limit=${PAGE}&offset=${offset}`);
    const keep = (task) => only && !only.has(task.id) && strips.has(task.id);
    const fresh = await Promise.all(body.tasks.map((task) => (keep(task) ? null : strip(task))));
    body.tasks.forEach((task, i) => {
      const drawn = fresh[i];
      if (drawn === null) {
        strips.get(task.id).status.replaceChildren(stateBadge(task.status));
        return;
      }
      let entry = strips.get(task.id);
      if (!entry) {
        entry = { status: h("td", {}), runs: h("td", {}) };
        strips.set(task.id, entry);
        rows.append(h("tr", { "data-task": task.id }, h("th", { scope: "row" }, h("a", { href: `#/runs?task_id=${encodeURIComponent(task.id)}` }, task.id)), entry.status, entry.runs));
      }
      entry.status.replaceChildren(stateBadge(task.status));
      entry.runs.replaceChildren(drawn);
    });
    pager.replaceChildren(...pages(body.total, offset, "#/"));
  }
  await Promise.all([drawCards(), drawTasks(null)]);
  ctx.refresh = (tasks) => Promise.all([drawCards(), drawTasks(tasks)]);
}

function pages(total, offset, base, query = new URLSearchParams()) {
  const link = (to, label) => {
    const params = new URLSearchParams(query);
    params.set("offset", String(to));
    return h("a", { href: `${base}?${params}` }, label);
  };
  const first = total ? offset + 1 : 0;
  const last = Math.min(offset + PAGE, total);
  return [
    offset > 0 ? link(Math.max(0, offset - PAGE), "Previous page") : null,
    h("span", { class: "muted" }, `${first.toLocaleString()}–${last.toLocaleString()} of ${total.toLocaleString()}`),
    last < total ? link(offset + PAGE, "Next page") : null,
  ].filter(Boolean);
}

// -- tasks -------------------------------------------------------------------------------------
async function tasksView(ctx) {
  const offset = Number(hashQuery().get("offset") || 0);
  const rows = h("tbody");
  const pager = h("div", { class: "pager" });
  render(
    h("h1", {}, "Tasks"),
    h("table", { "aria-label": "Tasks" },
      h("thead", {}, h("tr", {}, ["Task", "Status", "Schedule", "Next fire", "Last run", "Actions"].map((name) => h("th", { scope: "col" }, name)))),
      rows),
    pager,
  );
  const drawn = new Map();
  async function draw() {
    const body = await api(`/tasks?limit=${PAGE}&offset=${offset}`);
    const seen = new Set();
    for (const task of body.tasks) {
      seen.add(task.id);
      const old = drawn.get(task.id);
      const cells = taskCells(task);
      if (old) {
        old.status.replaceChildren(...cells.status.childNodes);
        old.next.replaceChildren(...cells.next.childNodes);
        old.last.replaceChildren(...cells.last.childNodes);
      } else {
        const row = h("tr", { "data-task": task.id }, cells.name, cells.status, cells.schedule, cells.next, cells.last, taskActions(task, ctx));
        drawn.set(task.id, { ...cells, row });
        rows.append(row);
      }
    }
    for (const [id, old] of drawn) {
      if (!seen.has(id)) {
        old.row.nextElementSibling?.classList.contains("params-row") && old.row.nextElementSibling.remove();
        old.row.remove();
        drawn.delete(id);
      }
    }
    pager.replaceChildren(...pages(body.total, offset, "#/tasks"));
  }
  await draw();
  ctx.refresh = draw;
}

function taskCells(task) {
  const last = task.last_run;
  return {
    name: h("th", { scope: "row" }, h("a", { href: `#/runs?task_id=${encodeURIComponent(task.id)}` }, task.id), task.name !== task.id ? h("div", { class: "muted" }, task.name) : null),
    status: h("td", {}, stateBadge(task.status)),
    schedule: h("td", {}, task.schedule ? [h("code", {}, task.schedule), h("div", { class: "muted" }, task.schedule_text)] : h("span", { class: "muted" }, "started by hand")),
    next: h("td", {}, when(task.next_run)),
    last: h("td", {}, last ? [runLink(last, stateBadge(last.state)), " ", h("span", { class: "muted" }, seconds(last.duration))] : h("span", { class: "muted" }, "never ran")),
  };
}

function taskActions(task, ctx) {
  const id = encodeURIComponent(task.id);
  const start = async (params) => {
    const body = await api(`/task/${id}/_start`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(params ? { params } : {}),
    });
    notice("Started ", runLink({ id: body.run_id }), ` of ${task.id}.`);
  };
  const act = (fn) => async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    try {
      await fn();
      await ctx.refresh?.();
    } catch (error) {
      failed(error);
    } finally {
      button.disabled = false;
    }
  };
  const cell = h("td", { class: "actions" },
    h("button", { type: "button", onclick: act(() => start(null)) }, "Start"), " ",
    h("button", { type: "button", onclick: act(async () => {
      const body = await api(`/task/${id}/_stop`, { method: "POST" });
      notice(`Stopped ${body.stopped.length} run(s) of ${task.id}.`);
    }) }, "Stop"), " ",
    h("button", { type: "button", class: "danger", onclick: act(async () => {
      const ok = await confirmDialog(`Delete the task ${task.id}? Its active runs are stopped, and it stays deleted until its YAML definition changes.`, "Delete");
      if (!ok) return;
      await api(`/task/${id}`, { method: "DELETE" });
      notice(`Deleted ${task.id}.`);
    }) }, "Delete"),
  );
  const names = Object.keys(task.params || {});
  if (names.length) {
    cell.append(" ", h("button", { type: "button", "aria-expanded": "false", onclick: (event) => toggleParams(event.currentTarget, task, start) }, "Start with params"));
  }
  return cell;
}

function toggleParams(button, task, start) {
  const row = button.closest("tr");
  const open = row.nextElementSibling?.classList.contains("params-row");
  if (open) {
    row.nextElementSibling.remove();
    button.setAttribute("aria-expanded", "false");
    return;
  }
  button.setAttribute("aria-expanded", "true");
  const inputs = Object.entries(task.params).map(([name, value], i) => {
    const inputId = `param-${task.id}-${i}`;
    const input = h("input", { id: inputId, name, value: typeof value === "string" ? value : JSON.stringify(value) });
    return { name, value, input, label: h("label", { for: inputId }, name, input) };
  });
  const form = h("form", {
    class: "params",
    "aria-label": `Params for ${task.id}`,
    onsubmit: async (event) => {
      event.preventDefault();
      const params = {};
      for (const { name, value, input } of inputs) {
        if (typeof value === "string") params[name] = input.value;
        else {
          try { params[name] = JSON.parse(input.value); } catch { params[name] = input.value; }
        }
      }
      try {
        await start(params);
        form.closest("tr").remove();
        button.setAttribute("aria-expanded", "false");
        button.focus();
      } catch (error) {
        failed(error);
      }
    },
  }, inputs.map((i) => i.label), h("button", { type: "submit", class: "primary" }, "Start run"));
  row.after(h("tr", { class: "params-row" }, h("td", { colspan: 6 }, form)));
  inputs[0]?.input.focus();
}

// -- runs --------------------------------------------------------------------------------------
const RUN_COLUMNS = [
  ["Run", null], ["Task", "task_id"], ["State", "state"], ["Trigger", null], ["Queued", "queued_at"],
  ["Started", "started_at"], ["Finished", "finished_at"], ["Duration", "duration"], ["Error", null],
];

function toLocalInput(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

async function runsView(ctx) {
  const query = hashQuery();
  const offset = Number(query.get("offset") || 0);
  const sort = query.get("sort") || "-queued_at";
  const field = (label, control) => h("label", { for: control.id }, label, control);
  const state = h("select", { id: "f-state", name: "state" }, h("option", { value: "" }, "any"), STATES.map((s) => h("option", { value: s, selected: query.get("state") === s }, s)));
  const trigger = h("select", { id: "f-trigger", name: "trigger" }, h("option", { value: "" }, "any"), TRIGGERS.map((t) => h("option", { value: t, selected: query.get("trigger") === t }, t)));
  const task = h("input", { id: "f-task", name: "task_id", value: query.get("task_id") || "", size: 16 });
  const since = h("input", { id: "f-since", name: "since", type: "datetime-local", value: toLocalInput(query.get("since")) });
  const until = h("input", { id: "f-until", name: "until", type: "datetime-local", value: toLocalInput(query.get("until")) });
  const text = h("input", { id: "f-q", name: "q", type: "search", value: query.get("q") || "", size: 18 });
  const form = h("form", {
    class: "filters",
    role: "search",
    "aria-label": "Filter runs",
    onsubmit: (event) => {
      event.preventDefault();
      const next = new URLSearchParams();
      for (const [name, control] of [["state", state], ["trigger", trigger], ["task_id", task], ["q", text]]) {
        if (control.value.trim()) next.set(name, control.value.trim());
      }
      for (const [name, control] of [["since", since], ["until", until]]) {
        if (control.value) next.set(name, new Date(control.value).toISOString());
      }
      if (sort !== "-queued_at") next.set("sort", sort);
      location.hash = `#/runs?${next}`;
    },
  },
    field("State", state), field("Task", task), field("Trigger", trigger), field("Since", since), field("Until", until), field("Search", text),
    h("button", { type: "submit", class: "primary" }, "Apply"),
    h("button", { type: "button", onclick: () => { location.hash = "#/runs"; } }, "Clear"),
  );
  const header = RUN_COLUMNS.map(([label, key]) => {
    if (!key) return h("th", { scope: "col" }, label);
    const active = sort.replace(/^-/, "") === key;
    const descending = sort.startsWith("-");
    const next = new URLSearchParams(query);
    next.delete("offset");
    next.set("sort", active && !descending ? `-${key}` : key);
    return h("th", { scope: "col", "aria-sort": active ? (descending ? "descending" : "ascending") : null },
      h("button", { type: "button", class: "sort", onclick: () => { location.hash = `#/runs?${next}`; } }, label, active ? (descending ? " ▼" : " ▲") : ""));
  });
  const rows = h("tbody");
  const pager = h("div", { class: "pager" });
  const summary = h("p", { class: "muted", role: "status" });
  render(h("h1", {}, "Runs"), form, summary, h("table", { "aria-label": "Runs" }, h("thead", {}, h("tr", {}, header)), rows), pager);
  const params = new URLSearchParams(query);
  params.set("limit", String(PAGE));
  params.set("offset", String(offset));
  params.set("sort", sort);
  async function draw() {
    const body = await api(`/runs?${params}`);
    rows.replaceChildren(...body.runs.map((run) => h("tr", { "data-run": run.id },
      h("th", { scope: "row" }, runLink(run, h("code", {}, run.id))),
      h("td", {}, h("a", { href: `#/runs?task_id=${encodeURIComponent(run.task_id)}` }, run.task_id)),
      h("td", {}, stateBadge(run.state)),
      h("td", {}, run.trigger),
      h("td", {}, when(run.queued_at)),
      h("td", {}, when(run.started_at)),
      h("td", {}, when(run.finished_at)),
      h("td", {}, seconds(run.duration)),
      h("td", {}, run.error || ""),
    )));
    summary.textContent = `${body.total.toLocaleString()} run${body.total === 1 ? "" : "s"} match.`;
    const base = new URLSearchParams(query);
    base.delete("offset");
    pager.replaceChildren(...pages(body.total, offset, "#/runs", base));
  }
  await draw();
  ctx.refresh = draw;
}

// -- one run -----------------------------------------------------------------------------------
async function runView(ctx, id) {
  const path = `/run/${encodeURIComponent(id)}`;
  const facts = h("dl", { class: "facts" });
  const attempts = h("div");
  const log = h("pre", { class: "log", "aria-label": "Log", tabindex: "0" });
  const ending = h("p", { role: "status", id: "run-end" });
  const heading = h("h1", {}, "Run ", h("code", {}, id));
  render(heading, facts, h("h2", {}, "Attempts"), attempts, h("h2", {}, "Log"), log, ending);
  async function draw() {
    const run = await api(path);
    const fact = (label, ...value) => [h("dt", {}, label), h("dd", {}, ...value)];
    facts.replaceChildren(
      ...fact("Task", h("a", { href: `#/runs?task_id=${encodeURIComponent(run.task_id)}` }, run.task_id)),
      ...fact("State", stateBadge(run.state)),
      ...fact("Trigger", run.trigger),
      ...fact("Params", Object.keys(run.params).length ? h("code", {}, JSON.stringify(run.params)) : h("span", { class: "muted" }, "none")),
      ...fact("Scheduled", when(run.scheduled_at)),
      ...fact("Queued", when(run.queued_at)),
      ...fact("Started", when(run.started_at)),
      ...fact("Finished", when(run.finished_at)),
      ...fact("Duration", seconds(run.duration)),
      ...(run.error ? fact("Error", h("span", { class: "error" }, run.error)) : []),
    );
    attempts.replaceChildren(
      run.attempt_list.length
        ? h("table", { "aria-label": "Attempts and steps" },
          h("thead", {}, h("tr", {}, ["Attempt", "Step", "Type", "State", "Duration", "Error"].map((name) => h("th", { scope: "col" }, name)))),
          h("tbody", {}, run.attempt_list.flatMap((attempt) => [
            h("tr", {}, h("th", { scope: "row" }, `#${attempt.number}`), h("td", {}, "—"), h("td", {}, ""), h("td", {}, stateBadge(attempt.state)), h("td", {}, seconds(attempt.duration)), h("td", {}, attempt.error || "")),
            ...attempt.steps.map((step) => h("tr", {},
              h("td", {}, ""), h("td", {}, String(step.index + 1)), h("td", {}, step.type), h("td", {}, stateBadge(step.state)), h("td", {}, seconds(step.duration)), h("td", {}, step.error || ""))),
          ])))
        : h("p", { class: "muted" }, "No attempt has begun yet."),
    );
    return run;
  }
  await draw();
  ctx.refresh = draw;
  const controller = new AbortController();
  ctx.cleanups.push(() => controller.abort());
  follow(path, log, ending, controller.signal, draw);
}

async function follow(path, log, ending, signal, draw) {
  let last = 0;
  for (let tries = 0; tries < 5 && !signal.aborted; tries++) {
    try {
      const headers = last ? { "Last-Event-ID": String(last) } : {};
      for await (const event of events(`${path}/log?follow=1`, signal, headers)) {
        const data = JSON.parse(event.data);
        if (event.event === "end") {
          ending.replaceChildren("The run ended: ", stateBadge(data.state), data.error ? ` — ${data.error}` : "");
          await draw();
          return;
        }
        if (event.event === "error") break;
        last = data.seq;
        const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
        log.append(h("span", { class: data.stream }, `${new Date(data.time).toLocaleTimeString()} [${data.stream}] ${data.line}\n`));
        if (atBottom) log.scrollTop = log.scrollHeight;
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof Unauthorized) return signOut(true);
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

// -- start -------------------------------------------------------------------------------------
async function boot() {
  window.addEventListener("hashchange", () => {
    if (token || !document.querySelector("form.login")) route();
  });
  let ok = true;
  try {
    ok = await accepted();
  } catch {
    // The daemon is not answering: the view says so when it tries.
  }
  if (!ok) {
    const had = Boolean(token);
    token = "";
    sessionStorage.removeItem(TOKEN_KEY);
    login(had ? "That token was refused. Try again." : null);
    return;
  }
  live.start();
  route();
}

boot();
