// The longjobs dashboard: a hash router over three views (jobs, one job, queue), the API key
// dialog, and the connection indicator. No build step: plain ES modules served by the API.

import { session } from "./api.js";
import { $, showNotice } from "./ui.js";
import * as jobs from "./jobs.js";
import * as job from "./job.js";
import * as queue from "./queue.js";

const VIEWS = { jobs: $("view-jobs"), job: $("view-job"), queue: $("view-queue") };
let current = null; // {name, controller}

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = hash.split("?");
  const params = new URLSearchParams(query);
  const match = path.match(/^\/jobs\/([^/]+)$/);
  if (match) return { name: "job", params: { id: decodeURIComponent(match[1]) } };
  if (path === "/queue") return { name: "queue", params: {} };
  return { name: "jobs", params: Object.fromEntries(params) };
}

function show() {
  const next = route();
  current?.controller.abort();
  const controller = new AbortController();
  current = { name: next.name, controller };
  showNotice("");
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
}

function setLive(state) {
  const live = $("live");
  const text = { open: "live", retrying: "reconnecting…", failed: "offline", ended: "live" }[state] || state;
  if (live.textContent !== text) live.textContent = text;
  live.dataset.state = state;
}

// -- the API key -------------------------------------------------------------------------------
const dialog = $("key-dialog");

function askForKey(reason) {
  $("key-reason").textContent = reason || "Enter an API key of this server. It is kept for this browser tab only, and sent in a header, never in a URL.";
  $("key-input").value = "";
  $("key-forget").hidden = !session.key();
  if (!dialog.open) dialog.showModal();
}

session.onUnauthorized = (error) => {
  const reason = session.key()
    ? `The key was refused: ${error.message}. Enter another one.`
    : "This server needs an API key. It is kept for this browser tab only, and sent in a header, never in a URL.";
  askForKey(reason);
};

$("key-button").addEventListener("click", () => askForKey(null));
$("key-close").addEventListener("click", () => dialog.close("close"));
$("key-forget").addEventListener("click", () => {
  session.setKey(null);
  dialog.close("forget");
  show();
});
dialog.addEventListener("close", () => {
  if (dialog.returnValue === "save") {
    session.setKey($("key-input").value.trim());
    $("key-input").value = "";
    show();
  }
});

window.addEventListener("hashchange", () => {
  show();
  $("main").focus({ preventScroll: true });
});
show();
