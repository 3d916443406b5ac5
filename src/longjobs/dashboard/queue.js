// The queue overview: the tenant's jobs by status and kind, throughput and queue wait per minute
// (GET /v1/stats), and how many workers are alive. Read every few seconds while the tab is shown.

import { getJSON, sleep } from "./api.js";
import { $, STATUSES, el, seconds, showNotice } from "./ui.js";

const REFRESH_MS = 5000;

export async function mount(_params, signal, setLive) {
  // Nothing of an earlier visit (perhaps with another key) stays on screen.
  for (const id of ["queue-counts", "chart-throughput", "chart-wait", "kinds-body"]) $(id).replaceChildren();
  $("queue-updated").textContent = "";
  while (!signal.aborted) {
    if (document.hidden) {
      // A tab in the background asks for nothing; it reads again as soon as it is shown.
      await new Promise((resolve) => {
        document.addEventListener("visibilitychange", resolve, { once: true, signal });
        signal.addEventListener("abort", resolve, { once: true });
      });
      continue;
    }
    try {
      render(await getJSON("v1/stats?minutes=15", { signal }));
      setLive("open");
      showNotice("");
    } catch (error) {
      if (signal.aborted) return;
      setLive("retrying");
      showNotice(`Could not read the queue's numbers: ${error.message}`);
    }
    await sleep(REFRESH_MS, signal);
  }
}

function render(stats) {
  $("queue-minutes").textContent = String(stats.minutes.length);
  $("queue-updated").textContent = `Updated ${new Date(stats.now).toLocaleTimeString(undefined, { hour12: false })}.`;
  const cards = STATUSES.map((status) =>
    el("li", { class: `card status-${status}` },
      el("span", { class: "count", text: String(stats.counts[status] || 0) }),
      el("span", { class: "label", text: status })));
  cards.push(el("li", { class: "card workers" },
    el("span", { class: "count", id: "worker-count", text: String(stats.workers) }),
    el("span", { class: "label", text: stats.workers === 1 ? "worker" : "workers" })));
  $("queue-counts").replaceChildren(...cards);

  const labels = stats.minutes.map((minute) => new Date(minute.start).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", hour12: false }));
  chart($("chart-throughput"), {
    title: "Jobs finished per minute",
    labels,
    unit: (value) => String(value),
    series: [
      { name: "completed", values: stats.minutes.map((m) => m.completed) },
      { name: "failed", values: stats.minutes.map((m) => m.failed) },
      { name: "cancelled", values: stats.minutes.map((m) => m.cancelled) },
    ],
    stacked: true,
  });
  chart($("chart-wait"), {
    title: "Queue wait per minute (average and longest)",
    labels,
    unit: (value) => (value === null ? "–" : seconds(value)),
    series: [
      { name: "average", values: stats.minutes.map((m) => m.wait_avg_seconds) },
      { name: "longest", values: stats.minutes.map((m) => m.wait_max_seconds) },
    ],
    stacked: false,
  });

  const kinds = Object.keys(stats.by_kind).sort();
  $("kinds-body").replaceChildren(...(kinds.length ? kinds.map((kind) =>
    el("tr", {},
      el("th", { scope: "row", text: kind }),
      ...STATUSES.map((status) => el("td", { class: "num", dataset: { label: status }, text: String(stats.by_kind[kind][status] || 0) })))) :
    [el("tr", {}, el("td", { colspan: 6, class: "empty", text: "No jobs yet." }))]));
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  node.append(...children);
  return node;
}

// A small bar chart in SVG (stacked or side by side), with a table of the same numbers for
// screen readers and for anyone who wants the exact figures.
function chart(container, { title, labels, series, stacked, unit }) {
  const width = 480;
  const height = 160;
  const pad = { left: 36, right: 8, top: 8, bottom: 22 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const totals = labels.map((_, i) => stacked
    ? series.reduce((sum, s) => sum + (s.values[i] || 0), 0)
    : Math.max(0, ...series.map((s) => s.values[i] || 0)));
  const top = niceMax(Math.max(0, ...totals));
  const slot = plotW / Math.max(1, labels.length);
  const barW = Math.max(2, (stacked ? slot : slot / series.length) - 2);
  const y = (value) => pad.top + plotH - (value / top) * plotH;

  const grid = [0, top / 2, top].map((value) => svg("g", { class: "grid" },
    svg("line", { x1: pad.left, x2: width - pad.right, y1: y(value), y2: y(value) }),
    svg("text", { x: pad.left - 4, y: y(value) + 4, "text-anchor": "end" }, document.createTextNode(axis(value)))));
  const bars = [];
  labels.forEach((label, i) => {
    let base = 0;
    series.forEach((s, k) => {
      const value = s.values[i] || 0;
      if (!value) return;
      const x = pad.left + i * slot + 1 + (stacked ? 0 : k * (barW + 1));
      const y0 = stacked ? y(base + value) : y(value);
      const h = stacked ? y(base) - y(base + value) : y(0) - y(value);
      bars.push(svg("rect", { x, y: y0, width: barW, height: Math.max(1, h), class: `series-${k}` },
        svg("title", {}, document.createTextNode(`${label} ${s.name}: ${unit(s.values[i])}`))));
      if (stacked) base += value;
    });
  });
  const ticks = labels.map((label, i) => (i % 5 === 0 || i === labels.length - 1)
    ? svg("text", { x: pad.left + i * slot + slot / 2, y: height - 6, "text-anchor": "middle", class: "tick" }, document.createTextNode(label))
    : null).filter(Boolean);
  const last = labels.length - 1;
  const summary = `${title}. Latest minute: ${series.map((s) => `${s.name} ${unit(s.values[last] ?? null)}`).join(", ")}.`;
  const picture = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": summary, preserveAspectRatio: "xMidYMid meet" },
    ...grid, ...bars, ...ticks);
  const legend = el("ul", { class: "legend" }, ...series.map((s, k) => el("li", {}, el("span", { class: `swatch series-${k}`, "aria-hidden": "true" }), s.name)));
  const table = el("table", { class: "numbers" },
    el("caption", { text: title }),
    el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "minute" }), ...series.map((s) => el("th", { scope: "col", text: s.name })))),
    el("tbody", {}, ...labels.map((label, i) => el("tr", {},
      el("th", { scope: "row", text: label }), ...series.map((s) => el("td", { class: "num", text: unit(s.values[i] ?? null) }))))));
  // The <details> stays, so that its state and the keyboard focus on its summary survive.
  let details = container.querySelector("details");
  if (details) {
    details.querySelector("table").replaceWith(table);
    container.querySelector("svg").replaceWith(picture);
  } else {
    details = el("details", {}, el("summary", { text: "Show the numbers" }), table);
    container.replaceChildren(picture, legend, details);
  }
}

function niceMax(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

function axis(value) {
  return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(2)));
}
