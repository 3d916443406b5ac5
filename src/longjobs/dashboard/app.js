// The longjobs dashboard: a hash router over three views (jobs, one job, queue), the API key
// dialog, and the connection indicator. No build step: plain ES modules served by the API.

import { session } from "./api.js";
import { $, showNotice } from "./ui.js";
import * as jobs from "./jobs.js";
import * as job from "./job.js";
import * as queue from "./queue.js";

const VIEWS = { jobs: $("view-jobs"), job: $("view-job"), queue: $("view-queue") };
const JOB_ID = /^[A-Za-z0-9_-]{1,200}$/;
let current = null; // {name, key, controller}

function route() {
  const hash = location.hash.startsWith("#/") ? location.hash.slice(1) : "/";
  const [path, query = ""] = hash.split("?");
  const match = path.match(/^\/jobs\/([^/]+)$/);
  if (match) {
    let id = null;
    try {
      id = decodeURIComponent(match[1]);
    } catch {
      id = null;
    }
    return { name: "job", params: { id: id && JOB_ID.test(id) ? id : null } };
  }
  if (path === "/queue") return { name: "queue", params: {} };
  return { name: "jobs", params: Object.fromEntries(new URLSearchParams(query)) };
}

function show() {
  const next = route();
  const key = next.name === "job" ? `job:${next.params.id}` : next.name;
  const moved = current?.key !== key;
  current?.controller.abort();
  const controller = new AbortController();
  current = { name: next.name, key, controller };
  showNotice("");
  setLive("connecting");
  for (const [name, section] of Object.entries(VIEWS)) section.hidden = name !== next.name;
  for (const link of document.querySelectorAll("[data-nav]")) {
    const here = link.dataset.nav === (next.name === "job" ? "jobs" : next.name);
    if (here) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const module = { jobs, job, queue }[next.name];
  module.mount(next.params, controller.signal, setLive).catch((error) => {
    if (!controller.signal.aborted) showNotice(error.message);
  });
  return moved;
}

const LIVE = { open: "live", retrying: "reconnecting…", failed: "offline", ended: "up to date", connecting: "connecting…" };

function setLive(state) {
  const live = $("live");
  const text = LIVE[state] || state;
  if (live.textContent !== text) live.textContent = text;
  live.dataset.state = state;
}

// -- the API key -------------------------------------------------------------------------------
// Kept in this tab's sessionStorage, and handed to other tabs of this site that ask for it while
// this one is open (a BroadcastChannel never leaves the browser): a key is entered once per
// browser session, and forgotten when the last tab closes.
const dialog = $("key-dialog");
const keys = "BroadcastChannel" in window ? new BroadcastChannel("longjobs-api-key") : null;
const INTRO = "This server needs an API key. It is kept while this site is open in a tab, and sent in a header, never in a URL.";

function askForKey(reason) {
  $("key-reason").textContent = reason || INTRO;
  $("key-input").value = "";
  $("key-forget").hidden = !session.key();
  if (!dialog.open) dialog.showModal();
}

function useKey(value) {
  if (value === session.key()) return;
  session.setKey(value);
  jobs.forgetKinds();
  if (dialog.open) dialog.close("shared");
  show();
}

session.onUnauthorized = (error) => {
  askForKey(session.key() ? `The key was refused: ${error.message}. Enter another one.` : INTRO);
};

keys?.addEventListener("message", ({ data }) => {
  if (data?.type === "ask" && session.key()) keys.postMessage({ type: "key", key: session.key() });
  else if (data?.type === "key" && !session.key() && typeof data.key === "string") useKey(data.key);
  else if (data?.type === "forget" && session.key()) useKey(null);
});

$("key-button").addEventListener("click", () => askForKey(null));
$("key-close").addEventListener("click", () => dialog.close("close"));
$("key-forget").addEventListener("click", () => {
  dialog.close("forget");
  keys?.postMessage({ type: "forget" });
  useKey(null);
});
dialog.addEventListener("close", () => {
  if (dialog.returnValue === "save") {
    const value = $("key-input").value.trim();
    $("key-input").value = "";
    keys?.postMessage({ type: "key", key: value });
    useKey(value || null);
  }
});

// "Skip to content" moves focus; the router only answers hashes that start with "#/".
document.querySelector(".skip").addEventListener("click", (event) => {
  event.preventDefault();
  $("main").focus();
});

window.addEventListener("hashchange", () => {
  if (location.hash && !location.hash.startsWith("#/")) return;
  if (show()) $("main").focus({ preventScroll: true });
});

if (!session.key() && keys) {
  keys.postMessage({ type: "ask" });
  setTimeout(show, 150); // another open tab answers within a moment, or there is none
} else {
  show();
}
