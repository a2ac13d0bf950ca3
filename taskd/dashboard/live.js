// @ts-check
// The page's one GET /events stream: it reconnects with a growing pause, and asks the view on screen
// to refresh, shortly after, when runs change.

import { Unauthorized } from "./api.js";
import { byId } from "./dom.js";
import { events } from "./sse.js";
import { getView } from "./state.js";

/** Changes closer together than this are drawn in one refresh. */
const SETTLE = 300;

/**
 * @param {() => void} refused  called when the API refuses the token; the stream has stopped then
 * @returns {{ start(): Promise<void>, stop(): void }}
 */
export function liveStream(refused) {
  /** @type {AbortController | null} */
  let controller = null;
  let running = false;
  return {
    async start() {
      if (running) return;
      running = true;
      let pause = 500;
      const status = byId("connection");
      while (running) {
        controller = new AbortController();
        try {
          status.textContent = "live";
          for await (const event of events("/events", controller.signal)) {
            pause = 500;
            if (event.event === "run") changed(/** @type {{ task_id: string }} */ (JSON.parse(event.data)).task_id);
          }
        } catch (error) {
          if (error instanceof Unauthorized) {
            running = false;
            refused();
            return;
          }
        }
        if (!running) return;
        status.textContent = "reconnecting…";
        await new Promise((resolve) => setTimeout(resolve, pause));
        pause = Math.min(pause * 2, 10000);
      }
    },
    stop() {
      running = false;
      controller?.abort();
    },
  };
}

/** @param {string} taskId  the task whose run changed */
function changed(taskId) {
  const view = getView();
  if (!view?.refresh) return;
  view.changes.add(taskId);
  if (view.pending) return;
  view.pending = setTimeout(async () => {
    view.pending = null;
    const tasks = view.changes;
    view.changes = new Set();
    try {
      await view.refresh?.(tasks);
    } catch (error) {
      view.failed(error);
    }
  }, SETTLE);
}
