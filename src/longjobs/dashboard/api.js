// The dashboard's way to the API: fetch with the session's key in a header, problems as errors,
// and Server-Sent Events read from a fetch body (EventSource cannot send headers, and the key
// must never go into a URL).

const KEY = "longjobs.apiKey";
const ROOT = new URL(".", document.baseURI);

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

export const session = {
  key() {
    return sessionStorage.getItem(KEY);
  },
  setKey(value) {
    if (value) sessionStorage.setItem(KEY, value);
    else sessionStorage.removeItem(KEY);
  },
  onUnauthorized: (_error) => {},
};

export function url(path) {
  return new URL(path.replace(/^\//, ""), ROOT);
}

function headers(extra) {
  const all = new Headers(extra || {});
  const key = session.key();
  if (key) all.set("Authorization", `Bearer ${key}`);
  return all;
}

// A 401 asks for a key only when it answered the key in use now: a request sent before a key
// was entered, or one the page no longer waits for, says nothing about the current key.
async function failure(response, sentKey, signal) {
  let problem = null;
  try {
    problem = await response.json();
  } catch {
    problem = null;
  }
  const error = new ApiError(response.status, problem);
  if (response.status === 401 && sentKey === session.key() && !signal?.aborted) {
    session.onUnauthorized(error);
  }
  return error;
}

export async function request(path, { method = "GET", body, signal, accept } = {}) {
  const sentKey = session.key();
  const init = { method, signal, headers: headers({ Accept: accept || "application/json" }) };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers.set("Content-Type", "application/json");
  }
  const response = await fetch(url(path), init);
  if (!response.ok) throw await failure(response, sentKey, signal);
  return response;
}

export async function getJSON(path, options) {
  const response = await request(path, options);
  return response.status === 204 ? null : response.json();
}

export function postJSON(path, body, options = {}) {
  return getJSON(path, { ...options, method: "POST", body });
}

// One SSE connection, reopened with Last-Event-ID whenever it ends (a server restarting ends
// every stream; clients are to reconnect) until `signal` aborts or the server answers 204 (a
// finished job with nothing more to send). `onFrame` gets {event, data, id}; `onState` gets
// "open" | "retrying" | "ended" | "failed". When the server refuses the cursor (422: too old),
// `onReset` is called and the stream starts again from now.
export async function stream(path, { signal, onFrame, onState = () => {}, onReset = () => {} }) {
  let cursor = null;
  let delay = 1000;
  while (!signal.aborted) {
    try {
      const sentKey = session.key();
      const extra = { Accept: "text/event-stream" };
      if (cursor !== null) extra["Last-Event-ID"] = cursor;
      const response = await fetch(url(path), { signal, headers: headers(extra), cache: "no-store" });
      if (response.status === 204) {
        onState("ended");
        return;
      }
      if (response.status === 422 && cursor !== null) {
        cursor = null;
        onReset();
        continue;
      }
      if (!response.ok) {
        const error = await failure(response, sentKey, signal);
        if (response.status < 500 && response.status !== 429) throw error;
        onState("retrying", error);
      } else {
        onState("open");
        delay = 1000;
        for await (const frame of frames(response.body, signal)) {
          if (frame.retry) delay = frame.retry;
          if (frame.id !== undefined) cursor = frame.id;
          if (frame.data !== undefined) onFrame(frame);
        }
        if (signal.aborted) return;
        // Ended by the server: ask again soon, quietly (204 once a finished job has nothing
        // more; a server going away shows as "retrying" when the next request fails).
        delay = 250;
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError) {
        onState("failed", error);
        return;
      }
      onState("retrying", error);
    }
    await sleep(delay, signal);
    delay = Math.min(delay * 2, 15000);
  }
}

async function* frames(body, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  const onAbort = () => reader.cancel().catch(() => {});
  signal.addEventListener("abort", onAbort, { once: true });
  let buffer = "";
  let frame = {};
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let newline;
      while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
        if (newline === buffer.length - 1 && buffer.endsWith("\r")) break; // maybe \r\n, split
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
        if (line === "") {
          if (Object.keys(frame).length) yield frame;
          frame = {};
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "data") frame.data = frame.data === undefined ? value : `${frame.data}\n${value}`;
        else if (field === "event") frame.event = value;
        else if (field === "id") frame.id = value;
        else if (field === "retry" && /^\d+$/.test(value)) frame.retry = Number(value);
      }
    }
  } finally {
    signal.removeEventListener("abort", onAbort);
    reader.releaseLock();
  }
}

export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const stop = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", stop);
      resolve();
    }, ms);
    signal?.addEventListener("abort", stop, { once: true });
  });
}

const EXTENSIONS = { "application/json": ".json", "text/plain": ".txt", "text/csv": ".csv", "text/html": ".html" };

// Save a response body as a file without putting the key in a URL: fetch with the header, then
// hand the browser a blob. The file's extension follows the body's content type.
export async function download(path, basename) {
  const response = await request(path, { accept: "*/*" });
  const type = (response.headers.get("content-type") || "").split(";")[0].trim();
  const blob = await response.blob();
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = basename + (EXTENSIONS[type] || ".bin");
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}
