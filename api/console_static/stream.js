// The live stream (GET /api/v1/stream, Server-Sent Events) read with fetch() so that the token
// travels in the Authorization header (EventSource cannot send one). After a drop it reconnects
// with Last-Event-ID: the server resumes after the last alarm event seen, without gaps.

import { accessToken, refresh } from "./api.js";

// handlers: {alarm(data, id), value(data), status("open" | "closed" | "error"), resync()}
export function openStream(handlers) {
  const abort = new AbortController();
  let lastId = null;
  let resync = false;
  let opened = false; // a stream was open before: a reconnect without a position must reload
  let delay = 1000;

  async function once() {
    const headers = { Accept: "text/event-stream", Authorization: `Bearer ${accessToken()}` };
    if (lastId) headers["Last-Event-ID"] = lastId;
    // No alarm event seen yet (a quiet plant) and this is a reconnect: the server can only start
    // from now, so whatever changed while we were away comes from reloading the list.
    if (!lastId && opened) resync = true;
    const r = await fetch("/api/v1/stream", { headers, signal: abort.signal, cache: "no-store" });
    if (r.status === 401) {
      await refresh();
      return;
    }
    if (r.status === 422 && lastId) {
      // a position this database never had (restored, or another one): start afresh from now,
      // and have the list reloaded once connected
      lastId = null;
      resync = true;
      return;
    }
    if (!r.ok || !r.body) throw new Error(`stream: HTTP ${r.status}`);
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let event = { type: "message", data: [], id: null };
    let first = true;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      if (first) {
        // the server's first bytes come once it is subscribed: from here on nothing is missed
        first = false;
        delay = 1000;
        handlers.status?.("open");
        opened = true;
        if (resync) {
          resync = false;
          handlers.resync?.();
        }
      }
      buffer += value;
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop(); // an incomplete line waits for the next chunk
      for (const line of lines) {
        if (line === "") {
          if (event.id !== null) lastId = event.id;
          if (event.data.length) dispatch(event.type, event.data.join("\n"), event.id);
          event = { type: "message", data: [], id: null };
          continue;
        }
        if (line.startsWith(":")) continue; // keepalive
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event.type = val;
        else if (field === "data") event.data.push(val);
        else if (field === "id") event.id = val;
        else if (field === "retry" && /^\d+$/.test(val)) delay = Number(val);
      }
    }
  }

  function dispatch(type, data, id) {
    let parsed;
    try {
      parsed = JSON.parse(data);
    } catch {
      return;
    }
    if (type === "alarm") handlers.alarm?.(parsed, id);
    else if (type === "value") handlers.value?.(parsed);
  }

  (async () => {
    while (!abort.signal.aborted) {
      try {
        await once();
        handlers.status?.("closed");
      } catch (err) {
        if (abort.signal.aborted) return;
        handlers.status?.("error", err);
      }
      if (abort.signal.aborted) return;
      await new Promise((ok) => setTimeout(ok, delay));
      delay = Math.min(delay * 2, 15000);
    }
  })();

  return { close: () => abort.abort() };
}
