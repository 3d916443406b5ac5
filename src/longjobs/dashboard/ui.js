// Small DOM and formatting helpers shared by the views.

export const TERMINAL = new Set(["completed", "failed", "cancelled"]);
export const STATUSES = ["pending", "running", "completed", "failed", "cancelled"];

export function $(id) {
  return document.getElementById(id);
}

// el("td", {class: "x", dataset: {label: "Kind"}}, "text", child)
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

export function percent(progress) {
  return Math.round(Math.max(0, Math.min(1, progress || 0)) * 1000) / 10;
}

// The percentage a job's bar shows: a completed job is full, whatever it last reported.
export function shownPercent(job) {
  return job.status === "completed" ? 100 : percent(job.progress);
}

// A progress bar: <div role=progressbar><span class=fill></span></div>
export function setBar(bar, job) {
  const value = shownPercent(job);
  bar.setAttribute("aria-valuenow", String(value));
  const words = [`${value} %`];
  if (job.stage) words.push(job.stage);
  bar.setAttribute("aria-valuetext", words.join(", "));
  bar.dataset.status = job.status;
  bar.querySelector(".fill").style.width = `${value}%`;
}

export function newBar(label) {
  return el(
    "div",
    { class: "bar", role: "progressbar", "aria-label": label, "aria-valuemin": 0, "aria-valuemax": 100 },
    el("span", { class: "fill" }),
  );
}

export function statusText(job) {
  return job.cancel_requested && !TERMINAL.has(job.status) ? `${job.status} · cancel requested` : job.status;
}

export function setBadge(node, job) {
  node.textContent = job.status;
  node.className = `badge status-${job.status}`;
}

export function seconds(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "–";
  const s = Math.max(0, value);
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

export function since(iso, now = Date.now()) {
  return iso ? (now - Date.parse(iso)) / 1000 : null;
}

export function duration(job, now = Date.now()) {
  if (!job.started_at) return null;
  const end = job.finished_at ? Date.parse(job.finished_at) : TERMINAL.has(job.status) ? null : now;
  return end === null ? null : (end - Date.parse(job.started_at)) / 1000;
}

const pad = (number) => String(number).padStart(2, "0");

// Local time as 2026-12-05 14:03:07: never ambiguous between month-first and day-first.
export function clock(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function time(iso) {
  const date = new Date(iso);
  const text = date.toLocaleTimeString(undefined, { hour12: false });
  return `${text}.${String(date.getMilliseconds()).padStart(3, "0")}`;
}

export function showNotice(message) {
  const notice = $("notice");
  notice.textContent = message || "";
  notice.hidden = !message;
}
