// The jobs table: one page of GET /v1/jobs at a time, kept current by the tenant-wide feed
// (GET /v1/events). The feed is opened first and the page read after its `open` frame, so no
// change made in between is missed.

import { getJSON, stream } from "./api.js";
import { $, el, duration, newBar, seconds, setBar, showNotice, shownPercent, since, statusText } from "./ui.js";

let kindsLoaded = null;

export function forgetKinds() {
  kindsLoaded = null;
}

export async function mount(params, signal, setLive) {
  const view = new JobsView(params, signal);
  const opened = view.follow(setLive);
  await loadKinds(params.kind || "", signal);
  await Promise.race([opened, new Promise((resolve) => setTimeout(resolve, 3000))]);
  if (!signal.aborted) await view.load(null);
}

async function loadKinds(selected, signal) {
  const select = $("filter-kind");
  kindsLoaded ??= getJSON("v1/kinds", { signal }).then((body) => body.data.map((kind) => kind.name)).catch(() => null);
  const names = (await kindsLoaded) || [];
  if (signal.aborted) return;
  if (!names.length) kindsLoaded = null; // try again next time (say, after a key was entered)
  const wanted = new Set(["", ...names, ...(selected ? [selected] : [])]);
  for (const option of [...select.options]) if (!wanted.has(option.value)) option.remove();
  const have = new Set([...select.options].map((option) => option.value));
  for (const name of [...wanted].filter((name) => name && !have.has(name)).sort()) {
    select.append(el("option", { value: name, text: name }));
  }
  select.value = selected;
}

class JobsView {
  constructor(params, signal) {
    this.signal = signal;
    this.status = params.status || "";
    this.kind = params.kind || "";
    this.limit = [25, 50, 100].includes(Number(params.limit)) ? Number(params.limit) : 50;
    this.cursors = [null]; // the cursor of each page seen; index = page - 1
    this.next = null;
    this.stale = false; // page 1 took new rows from the feed: its next cursor must be read again
    this.rows = new Map(); // id -> {job, tr}
    this.loading = 0; // the number of the listing in flight (0: none)
    this.held = []; // feed changes that arrived while a listing was in flight
    this.body = $("jobs-body");
    this.body.replaceChildren();
    $("filter-status").value = this.status;
    $("page-size").value = String(this.limit);
    this.wire();
    const tick = setInterval(() => this.tick(), 1000);
    signal.addEventListener("abort", () => clearInterval(tick), { once: true });
  }

  wire() {
    const { signal } = this;
    const on = (id, event, handler) => $(id).addEventListener(event, handler, { signal });
    const refilter = () => {
      const query = new URLSearchParams();
      for (const [name, value] of [["status", $("filter-status").value], ["kind", $("filter-kind").value]]) {
        if (value) query.set(name, value);
      }
      if ($("page-size").value !== "50") query.set("limit", $("page-size").value);
      const text = query.toString();
      location.hash = text ? `#/?${text}` : "#/";
    };
    on("filter-status", "change", refilter);
    on("filter-kind", "change", refilter);
    on("page-size", "change", refilter);
    on("filters", "submit", (event) => event.preventDefault());
    on("page-first", "click", () => this.load(null));
    on("page-prev", "click", () => this.load(this.cursors[this.page - 2] ?? null, this.page - 1));
    on("page-next", "click", () => this.nextPage());
  }

  follow(setLive) {
    let opened;
    const open = new Promise((resolve) => { opened = resolve; });
    stream("v1/events", {
      signal: this.signal,
      onState: (state) => {
        setLive(state);
        if (state === "failed") opened();
      },
      onFrame: (frame) => {
        if (frame.event === "open") opened();
        else if (frame.event === "job") this.changed(JSON.parse(frame.data));
      },
      // The server no longer knows our place in the feed: start from now, and read the page again.
      onReset: () => this.load(this.cursors[this.page - 1] ?? null, this.page),
    });
    return open;
  }

  // A change that arrives while a listing is read waits for it: the listing may be older than
  // the change, and would otherwise overwrite it.
  changed(job) {
    if (this.loading) this.held.push(job);
    else this.change(job);
  }

  get page() {
    return this.cursors.length;
  }

  async load(cursor, page = 1) {
    const query = new URLSearchParams({ limit: String(this.limit) });
    if (this.status) query.set("status", this.status);
    if (this.kind) query.set("kind", this.kind);
    if (cursor) query.set("cursor", cursor);
    const number = (this.loads = (this.loads || 0) + 1);
    this.loading = number;
    let body;
    try {
      body = await getJSON(`v1/jobs?${query}`, { signal: this.signal });
    } catch (error) {
      if (this.loading === number) this.release();
      if (!this.signal.aborted) showNotice(`Could not list jobs: ${error.message}`);
      return;
    }
    if (this.loading !== number || this.signal.aborted) return; // a later listing was asked for
    showNotice("");
    this.cursors = this.cursors.slice(0, page - 1);
    this.cursors.push(cursor);
    this.next = body.next_cursor;
    this.stale = false;
    this.rows.clear();
    this.body.replaceChildren(...body.data.map((job) => this.row(job)));
    this.paged();
    this.release();
  }

  release() {
    this.loading = 0;
    const held = this.held;
    this.held = [];
    for (const job of held) this.change(job);
  }

  async nextPage() {
    if (this.stale && this.page === 1) await this.load(null);
    if (this.next) await this.load(this.next, this.page + 1);
  }

  paged() {
    $("page-label").textContent = `page ${this.page}`;
    $("page-first").disabled = this.page === 1;
    $("page-prev").disabled = this.page === 1;
    $("page-next").disabled = !this.next;
    const filtered = Boolean(this.status || this.kind);
    $("jobs-empty").hidden = this.rows.size > 0 || filtered || this.page > 1;
    $("jobs-none-match").hidden = this.rows.size > 0 || !filtered;
  }

  matches(job) {
    return (!this.status || job.status === this.status) && (!this.kind || job.kind === this.kind);
  }

  change(job) {
    const known = this.rows.get(job.id);
    if (known) {
      if (!this.matches(job)) {
        known.tr.remove();
        this.rows.delete(job.id);
        this.paged();
        return;
      }
      known.job = { ...known.job, ...job };
      this.fill(known);
      return;
    }
    if (this.page !== 1 || !this.matches(job)) return;
    const after = [...this.rows.values()].find((row) => newer(job, row.job));
    // Older than every row: it belongs here only when no page follows this one.
    if (!after && (this.next || this.rows.size >= this.limit)) return;
    const tr = this.row(job);
    this.body.insertBefore(tr, after ? after.tr : null);
    if (this.rows.size > this.limit) {
      const last = this.body.lastElementChild;
      this.rows.delete(last.dataset.id);
      last.remove();
      this.next = this.next || "stale";
      this.stale = true;
    }
    this.paged();
  }

  row(job) {
    const tr = el("tr", { "data-id": job.id });
    const link = el("a", { href: `#/jobs/${encodeURIComponent(job.id)}`, title: job.id }, el("code", { text: shortId(job.id) }));
    const bar = newBar(`Progress of ${job.id}`);
    tr.append(
      el("td", { dataset: { label: "Job" } }, link),
      el("td", { dataset: { label: "Kind" }, class: "kind" }),
      el("td", { dataset: { label: "Status" } }, el("span", { class: "badge" })),
      el("td", { dataset: { label: "Progress" }, class: "progress-col" }, el("div", {}, bar, el("span", { class: "bar-label" }))),
      el("td", { dataset: { label: "Age" }, class: "age num" }),
      el("td", { dataset: { label: "Duration" }, class: "duration num" }),
    );
    const entry = { job, tr };
    this.rows.set(job.id, entry);
    this.fill(entry);
    return tr;
  }

  fill({ job, tr }) {
    const [, kind, status, progress] = tr.children;
    kind.textContent = job.kind;
    const badge = status.firstElementChild;
    badge.textContent = statusText(job);
    badge.className = `badge status-${job.status}${job.cancel_requested ? " cancel-requested" : ""}`;
    setBar(progress.querySelector(".bar"), job);
    const shown = shownPercent(job);
    progress.querySelector(".bar-label").textContent = job.stage ? `${shown} % · ${job.stage}` : `${shown} %`;
    this.times(job, tr);
  }

  times(job, tr) {
    const now = Date.now();
    tr.children[4].textContent = seconds(since(job.created_at, now));
    tr.children[5].textContent = seconds(duration(job, now));
  }

  tick() {
    for (const { job, tr } of this.rows.values()) this.times(job, tr);
  }
}

function newer(a, b) {
  const ta = Date.parse(a.created_at);
  const tb = Date.parse(b.created_at);
  return ta > tb || (ta === tb && a.id > b.id);
}

function shortId(id) {
  return id.length > 16 ? `${id.slice(0, 14)}…` : id;
}
