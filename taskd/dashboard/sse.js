// @ts-check
// Server-sent events read with fetch rather than EventSource, which cannot send the token.

import { authHeaders, Unauthorized } from "./api.js";

/** @typedef {{ event: string, data: string, id: string | null }} ServerEvent */

/**
 * The stream's events as they arrive, until it ends or `signal` aborts it.
 * @param {string} path
 * @param {AbortSignal} signal
 * @param {Record<string, string>} [headers]
 * @returns {AsyncGenerator<ServerEvent, void, undefined>}
 */
export async function* events(path, signal, headers = {}) {
  const resp = await fetch(path, { signal, headers: { Accept: "text/event-stream", ...authHeaders(), ...headers } });
  if (resp.status === 401) throw new Unauthorized("the API refused the token");
  if (!resp.ok || !resp.body) throw new Error(`${resp.status} ${resp.statusText}`);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = parse(buffer.slice(0, cut));
      buffer = buffer.slice(cut + 2);
      if (event.data) yield event;
    }
  }
}

/** One event's block of lines; comment lines (the heartbeats) are skipped. @param {string} block */
function parse(block) {
  /** @type {ServerEvent} */
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
  return event;
}
