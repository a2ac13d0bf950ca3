// @ts-check
// The daemon's API: every call carries the token when there is one, a refused token becomes
// Unauthorized, which signs the page out, and a call the caller's role may not make becomes
// Forbidden, which names the role it needs. The shapes below are the parts of the answers the page reads.

import { getToken } from "./state.js";

/**
 * @typedef {object} LastRun
 * @property {string} id
 * @property {string} state
 * @property {number | null} duration
 * @property {string | null} [started_at]
 * @property {string | null} [finished_at]
 *
 * @typedef {object} Task
 * @property {string} id
 * @property {string} name
 * @property {string} status
 * @property {string | null} schedule
 * @property {string | null} schedule_text
 * @property {Record<string, unknown>} params  the defaults of the params a run may be given
 * @property {LastRun | null} last_run
 * @property {string | null} next_run
 * @property {string[]} after  the tasks it runs after (after:)
 * @property {string[]} waiting_on  upstream tasks (after:) that were deleted or disabled: it waits on them
 * @property {string} time_zone  the zone its schedule is read in
 *
 * @typedef {object} Upstream  a task's after:
 * @property {string[]} tasks
 * @property {"success" | "failure" | "always"} when
 * @property {"all" | "any"} mode
 *
 * @typedef {object} TaskStats
 * @property {number} runs
 * @property {number} finished_considered  the latest finished runs the rate and mean are of
 * @property {number | null} success_rate
 * @property {number | null} mean_duration
 * @property {number | null} [p50_duration]
 * @property {number | null} [p95_duration]
 *
 * @typedef {object} Finished  one of a task's latest finished runs, for the chart of durations
 * @property {string} id
 * @property {string} state
 * @property {string} finished_at
 * @property {number | null} duration
 *
 * @typedef {object} Definition  the task as written in taskd.yml, its secrets masked
 * @property {{ name: string, description?: string | null, processors: Array<Record<string, Record<string, unknown>>> }} pipeline
 * @property {string | null} [source]  the file it was read from
 *
 * @typedef {object} TaskDetailFields  what GET /task/{id} adds to a task's row
 * @property {string} pipeline
 * @property {Definition} [definition]
 * @property {TaskStats} stats
 * @property {string[]} next_runs  already shifted by the spread's offset
 * @property {Run[]} recent_runs  newest first
 * @property {Run[]} [active_runs]  the runs that have not ended
 * @property {Finished[]} [history]  the latest finished runs, oldest first
 * @property {Upstream | null} upstream
 * @property {string[]} downstream  the tasks that run after it
 * @property {string[]} waiting_for  with mode all, the upstream tasks with no run it has not taken yet
 * @property {{ spread_s: number, offset_s: number } | null} spread  its fires are shifted by offset_s
 *
 * @typedef {Task & TaskDetailFields} TaskDetail
 *
 * @typedef {object} Run
 * @property {string} id
 * @property {string} task_id
 * @property {string} state
 * @property {string} trigger
 * @property {string | null} scheduled_at
 * @property {string} queued_at
 * @property {string | null} started_at
 * @property {string | null} finished_at
 * @property {number | null} duration
 * @property {string | null} error
 * @property {Record<string, unknown>} params
 * @property {Usage | null} usage  null before its first attempt
 *
 * @typedef {object} Usage  what a run's step processes used; a null figure is unknown, never 0
 * @property {number | null} cpu_s  CPU seconds, user + system
 * @property {number | null} peak_memory_bytes  the largest resident set among them
 * @property {number} processes  the step processes it started
 * @property {"rusage" | "cgroup" | "none"} source
 * @property {string[]} unknown  steps whose use cannot be told ("python mod:func": it runs inside taskd)
 * @property {number | null} peak_memory_at_most  when the peak is unknown (at or under taskd's own): how
 *   large it could have been
 *
 * @typedef {object} Step
 * @property {number} index
 * @property {string} type
 * @property {string} state
 * @property {number | null} duration
 * @property {string | null} error
 *
 * @typedef {object} Attempt
 * @property {number} number
 * @property {string} state
 * @property {number | null} duration
 * @property {string | null} error
 * @property {Step[]} steps
 *
 * @typedef {object} UpstreamRun  a run that triggered this one
 * @property {string} run_id
 * @property {string} task_id
 * @property {string} state
 * @property {string} finished_at
 *
 * @typedef {object} DownstreamRun  a task this run triggered, and its run (null while it waits)
 * @property {string} task_id
 * @property {string | null} run_id
 *
 * @typedef {object} RunDetailFields  what GET /run/{id} adds to a run's row
 * @property {Attempt[]} attempt_list
 * @property {UpstreamRun[]} upstream_runs
 * @property {DownstreamRun[]} downstream_runs
 * @property {string[]} waiting_for  what a queued run waits for: "pool db", "memory", "cpu", "slot"
 *
 * @typedef {Run & RunDetailFields} RunDetail
 * @typedef {{ tasks: Task[], total: number }} TaskPage
 * @typedef {{ runs: Run[], total: number, total_exact?: boolean }} RunPage  total_exact false: an estimate
 *
 * @typedef {object} Held  one of this node's capacities: memory in bytes, cpu in millicores
 * @property {number} size
 * @property {number} held  by the requests of the runs that run
 * @property {number} free
 * @property {number} waiting  runs waiting for it
 * @property {string} from  where the size came from: "host", "cgroup limit", "node.capacity"
 *
 * @typedef {object} Pool  one of the top-level pools:
 * @property {string} name
 * @property {number} size
 * @property {number} held  units
 * @property {number} free
 * @property {number} holders  runs holding units of it
 * @property {number} waiting  runs waiting for units of it
 *
 * @typedef {object} Resources  what runs hold besides a slot
 * @property {{ node: string, memory?: Held, cpu?: Held }} capacity  this node's
 * @property {Pool[]} pools
 *
 * @typedef {object} Fault  something wrong that the daemon reports
 * @property {string} kind
 * @property {string} reason
 * @property {string} since
 *
 * @typedef {object} Reload  what the last reload of taskd.yml did
 * @property {string} at
 * @property {boolean} [applied]
 * @property {"applied" | "refused"} [outcome]
 * @property {string[]} errors  why a refused one was refused
 * @property {Record<string, string[]>} [changes]  task ids added, changed, removed
 *
 * @typedef {object} Health  GET /health as a signed-in caller reads it
 * @property {"ok" | "degraded"} status
 * @property {Fault[]} faults
 * @property {string} version
 * @property {number} uptime_s
 * @property {string} [store]
 * @property {string} [scheduler]
 * @property {{ held: number, limit: number, waiting?: number }} slots
 * @property {number} pending_writes  results waiting to be written to the store
 * @property {string | boolean | null} overloaded  why new runs are refused, when they are
 * @property {Reload | null} reload
 * @property {Resources} resources
 *
 * @typedef {object} Node  a taskd process sharing the store
 * @property {string} name
 * @property {boolean} this  the node that answers
 * @property {boolean} alive
 * @property {Record<string, string>} labels
 * @property {string} version
 * @property {string} config_digest
 * @property {boolean} config_differs  its tasks and pipelines differ from most nodes'
 * @property {number} slots
 * @property {number} slots_in_use
 * @property {string | null} last_heartbeat
 * @property {boolean} [draining]  it takes no new runs
 *
 * @typedef {object} Bucket  a minute of finished runs, counted by outcome
 * @property {string} at
 * @property {number} [completed]
 * @property {number} [failed]
 * @property {number} [timeout]
 * @property {number} [stopped]
 * @property {number} [interrupted]
 *
 * @typedef {{ from: string, until: string, bucket_s: number, buckets: Bucket[] }} RunStats
 *
 * @typedef {object} TaskFires  a task's fires in the span GET /upcoming asks for
 * @property {string} task_id
 * @property {string} time_zone
 * @property {string[]} fires
 * @property {boolean} more  it fires more often than listed
 *
 * @typedef {{ from: string, until: string, tasks: TaskFires[], truncated: boolean }} Upcoming
 *
 * @typedef {"viewer" | "operator" | "admin"} Role
 * @typedef {{ name: string | null, role: Role, auth: boolean }} Caller  who the token is, as GET /whoami answers
 *
 * @typedef {object} AuditEntry  something a caller did, or tried to
 * @property {string} at
 * @property {string} action
 * @property {string | null} actor
 * @property {string | null} role
 * @property {string | null} remote
 * @property {string | null} target  the task or run acted on
 * @property {number} status  the answer's HTTP status
 * @property {string | null} detail
 *
 * @typedef {{ entries: AuditEntry[], total: number }} AuditPage
 *
 * @typedef {object} PlanHour
 * @property {string} hour
 * @property {number} runs
 * @property {number} tasks
 *
 * @typedef {object} Crowded  a minute with more tasks due than max_concurrent_tasks
 * @property {string} minute
 * @property {number} tasks_due
 * @property {number} over_by
 * @property {string[]} tasks  the first 20 of them
 *
 * @typedef {object} Plan  the forecast of GET /plan
 * @property {number} max_concurrent_tasks
 * @property {PlanHour[]} hours  one per hour from the current one
 * @property {Crowded[]} crowded
 * @property {string[]} cut_short  why some fires were not counted
 */

export class Unauthorized extends Error {}

/** An answer other than a success: its status, and the message the API gave. */
export class Refused extends Error {
  /** @param {string} text @param {number} status */
  constructor(text, status) {
    super(text);
    this.status = status;
  }
}

/** The caller's role may not do this: `role` is the one it needs. */
export class Forbidden extends Refused {
  /** @param {string} text @param {string | null} role */
  constructor(text, role) {
    super(text, 403);
    this.role = role;
  }
}

/** @returns {Record<string, string>} */
export function authHeaders() {
  const token = getToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/**
 * @param {string} path
 * @param {RequestInit & { headers?: Record<string, string> }} [options]
 * @returns {Promise<unknown>}
 */
export async function api(path, options = {}) {
  const resp = await fetch(path, { ...options, headers: { Accept: "application/json", ...authHeaders(), ...(options.headers || {}) } });
  if (resp.status === 401) throw new Unauthorized("the API refused the token");
  const body = await resp.json().catch(() => null);
  const text = body?.error?.message || `${resp.status} ${resp.statusText}`;
  if (resp.status === 403) throw new Forbidden(text, body?.error?.required_role ?? null);
  if (!resp.ok) throw new Refused(text, resp.status);
  return body;
}

// Whether the API accepts the current token (or needs none). Asked of /health, which answers
// without a token but shows its details only to an accepted one: no request is refused on the way.
export async function accepted() {
  const resp = await fetch("/health", { headers: { Accept: "application/json", ...authHeaders() } });
  const body = await resp.json().catch(() => ({}));
  return "version" in body;
}

/** @returns {Promise<Health>} */
export function health() {
  return /** @type {Promise<Health>} */ (api("/health"));
}

/**
 * Who the token is. A daemon older than GET /whoami has one token, which may do everything.
 * @returns {Promise<Caller>}
 */
export async function whoami() {
  try {
    return /** @type {Caller} */ (await api("/whoami"));
  } catch (error) {
    if (error instanceof Refused && error.status === 404) return { name: null, role: "admin", auth: Boolean(getToken()) };
    throw error;
  }
}

/** @param {number} limit @param {number} offset @returns {Promise<TaskPage>} */
export function tasks(limit, offset) {
  return /** @type {Promise<TaskPage>} */ (api(`/tasks?limit=${limit}&offset=${offset}`));
}

/** @param {string} taskId @returns {Promise<TaskDetail>} */
export function task(taskId) {
  return /** @type {Promise<TaskDetail>} */ (api(`/task/${encodeURIComponent(taskId)}`));
}

/** The run search of GET /runs. @param {URLSearchParams} query @returns {Promise<RunPage>} */
export function runs(query) {
  return /** @type {Promise<RunPage>} */ (api(`/runs?${query}`));
}

/** A task's last runs, newest first. @param {string} taskId @param {number} limit @returns {Promise<RunPage>} */
export function taskRuns(taskId, limit) {
  return /** @type {Promise<RunPage>} */ (api(`/task/${encodeURIComponent(taskId)}/runs?limit=${limit}`));
}

/** @param {string} runId @returns {Promise<RunDetail>} */
export function run(runId) {
  return /** @type {Promise<RunDetail>} */ (api(`/run/${encodeURIComponent(runId)}`));
}

/** @returns {Promise<{ nodes: Node[] }>} */
export function nodes() {
  return /** @type {Promise<{ nodes: Node[] }>} */ (api("/nodes"));
}

/** Finished runs per minute by outcome. @param {number} minutes @returns {Promise<RunStats>} */
export function runStats(minutes) {
  return /** @type {Promise<RunStats>} */ (api(`/stats/runs?minutes=${minutes}`));
}

/** Every task's fires in the next hours. @param {number} hours @returns {Promise<Upcoming>} */
export function upcoming(hours) {
  return /** @type {Promise<Upcoming>} */ (api(`/upcoming?hours=${hours}`));
}

/** The audit trail, newest first. @param {URLSearchParams} query @returns {Promise<AuditPage>} */
export function audit(query) {
  return /** @type {Promise<AuditPage>} */ (api(`/audit?${query}`));
}

/** The forecast of the next days' fires. @param {number} days @returns {Promise<Plan>} */
export function plan(days) {
  return /** @type {Promise<Plan>} */ (api(`/plan?days=${days}`));
}

/**
 * @param {string} taskId
 * @param {Record<string, unknown> | null} params  null: the task's defaults
 * @returns {Promise<{ run_id: string }>}
 */
export function startTask(taskId, params) {
  return /** @type {Promise<{ run_id: string }>} */ (api(`/task/${encodeURIComponent(taskId)}/_start`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(params ? { params } : {}),
  }));
}

/**
 * Stopped: the runs that have ended; stopping: those that have not yet (the answer is then 202).
 * @param {string} taskId @returns {Promise<{ stopped: string[], stopping: string[] }>}
 */
export function stopTask(taskId) {
  return /** @type {Promise<{ stopped: string[], stopping: string[] }>} */ (api(`/task/${encodeURIComponent(taskId)}/_stop`, { method: "POST" }));
}

/** @param {string} taskId */
export async function deleteTask(taskId) {
  await api(`/task/${encodeURIComponent(taskId)}`, { method: "DELETE" });
}

/**
 * Stopped: the run has ended; stopping: it has been asked to and has not yet.
 * @param {string} runId @returns {Promise<{ run_id: string, stopped: boolean, stopping: boolean }>}
 */
export function stopRun(runId) {
  return /** @type {Promise<{ run_id: string, stopped: boolean, stopping: boolean }>} */ (api(`/run/${encodeURIComponent(runId)}/_stop`, { method: "POST" }));
}

/**
 * @typedef {object} Rerun  the run started again
 * @property {string} run_id
 * @property {string | null} task_id
 * @property {string[]} [params_not_repeated]  secret params, never stored: the new run has their defaults
 */

/** A new run of the same task with the same params. @param {string} runId @returns {Promise<Rerun>} */
export function rerun(runId) {
  return /** @type {Promise<Rerun>} */ (api(`/run/${encodeURIComponent(runId)}/_rerun`, { method: "POST" }));
}
