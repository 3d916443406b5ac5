// One job: its resource, the event log as it arrives (GET /v1/jobs/{id}/events), partial output,
// the result or the error, and a Cancel button.

import { download, getJSON, postJSON, request, stream } from "./api.js";
import { $, TERMINAL, clock, duration, el, percent, seconds, setBadge, setBar, showNotice, shownPercent, since, time } from "./ui.js";

const SHOWN_RESULT_BYTES = 256 * 1024;
const SHOWN_OUTPUT_CHARS = 500_000;
const SHOWN_EVENTS = 2000;
const SHOWN_INPUT_CHARS = 100_000;

export async function mount(params, signal, setLive) {
  if (!params.id) {
    showNotice("That is not a job id.");
    return;
  }
  const view = new JobView(params.id, signal);
  await view.load();
  if (!signal.aborted && view.job) view.follow(setLive);
}

class JobView {
  constructor(id, signal) {
    this.id = id;
    this.signal = signal;
    this.job = null;
    this.events = 0;
    this.output = ""; // text received and not drawn yet
    this.outputChars = 0;
    this.drawing = 0;
    this.requested = false; // Cancel was confirmed here
    this.reading = null; // the reload of the resource in flight
    this.readAgain = false;
    this.resultShown = false;
    this.path = `v1/jobs/${encodeURIComponent(id)}`;
    $("job-id").textContent = id;
    document.title = `${id} · longjobs`;
    for (const part of ["events-body", "job-facts", "job-error", "job-result", "job-output", "job-input"]) $(part).replaceChildren();
    for (const part of ["output-panel", "result-panel", "error-panel", "cancel-button", "job-cancel-note"]) $(part).hidden = true;
    for (const part of ["job-message", "events-count", "result-note", "job-status"]) $(part).textContent = "";
    const on = (part, event, handler) => $(part).addEventListener(event, handler, { signal });
    on("cancel-button", "click", () => this.confirmCancel());
    on("result-download", "click", () => this.download());
    on("cancel-dialog", "close", () => {
      if ($("cancel-dialog").returnValue === "cancel") this.cancel();
    });
    const tick = setInterval(() => this.job && this.facts(), 1000);
    signal.addEventListener("abort", () => {
      clearInterval(tick);
      cancelAnimationFrame(this.drawing);
      if ($("cancel-dialog").open) $("cancel-dialog").close("keep");
      document.title = "longjobs";
    }, { once: true });
  }

  get gone() {
    return this.signal.aborted;
  }

  async load() {
    try {
      const job = await getJSON(this.path, { signal: this.signal });
      if (!this.gone) this.show(job);
    } catch (error) {
      if (this.gone) return;
      showNotice(error.status === 404 ? `There is no job ${this.id} (or it is not yours).` : error.message);
    }
  }

  // One reload at a time; a status change during one asks for one more afterwards.
  reload() {
    if (this.reading) {
      this.readAgain = true;
      return;
    }
    this.reading = this.load().finally(() => {
      this.reading = null;
      if (this.readAgain && !this.gone) {
        this.readAgain = false;
        this.reload();
      }
    });
  }

  follow(setLive) {
    stream(`${this.path}/events`, {
      signal: this.signal,
      onState: (state) => setLive(state),
      onFrame: (frame) => this.event(JSON.parse(frame.data)),
    });
  }

  show(job) {
    const before = this.job;
    if (before && TERMINAL.has(before.status) && !TERMINAL.has(job.status)) return; // stale: terminal is final
    this.job = job;
    if (!before) {
      const input = JSON.stringify(job.input, null, 2) ?? "null";
      $("job-input").textContent = input.length > SHOWN_INPUT_CHARS ? `${input.slice(0, SHOWN_INPUT_CHARS)}\n…` : input;
    }
    setBadge($("job-status"), job);
    this.cancelState();
    this.progress();
    this.facts();
    this.ending(job);
    $("output-title").textContent = TERMINAL.has(job.status) ? "Output" : "Output so far";
    if (TERMINAL.has(job.status) && $("cancel-dialog").open) $("cancel-dialog").close("keep");
  }

  progress() {
    const job = this.job;
    setBar($("job-bar"), job);
    $("job-progress").dataset.status = job.status;
    const value = shownPercent(job);
    $("job-percent").textContent = `${value} %`;
    $("job-stage").textContent = job.stage || "";
    const eta = job.eta_seconds;
    $("job-eta").textContent = !TERMINAL.has(job.status) && eta !== null && eta !== undefined ? `about ${seconds(eta)} left` : "";
    $("job-message").textContent = job.message || "";
  }

  facts() {
    const job = this.job;
    const now = Date.now();
    const rows = [
      ["Kind", job.kind],
      ["Attempt", `${job.attempt} of ${job.max_attempts}`],
      ["Priority", String(job.priority)],
      ["Created", `${clock(job.created_at)} (${seconds(since(job.created_at, now))} ago)`],
      ["Started", clock(job.started_at)],
      ["Finished", clock(job.finished_at)],
      ["Queue wait", job.started_at ? seconds((Date.parse(job.started_at) - Date.parse(job.created_at)) / 1000) : "–"],
      ["Duration", seconds(duration(job, now))],
      ["Result kept until", clock(job.expires_at)],
    ];
    const usage = job.usage || {};
    if (usage.input_tokens || usage.output_tokens) {
      rows.push(["Tokens", `${usage.input_tokens || 0} in, ${usage.output_tokens || 0} out`]);
    }
    if (job.metadata && Object.keys(job.metadata).length) rows.push(["Metadata", JSON.stringify(job.metadata)]);
    $("job-facts").replaceChildren(...rows.flatMap(([name, value]) => [el("dt", { text: name }), el("dd", { text: value })]));
  }

  ending(job) {
    const error = job.error;
    $("error-panel").hidden = !error;
    if (error) {
      $("job-error").replaceChildren(
        el("dt", { text: "Type" }), el("dd", {}, el("code", { text: error.type })),
        el("dt", { text: "Message" }), el("dd", { text: error.message }),
        el("dt", { text: "Retryable" }), el("dd", { text: error.retryable ? "yes" : "no" }),
      );
    }
    const completed = job.status === "completed";
    $("result-panel").hidden = !completed;
    if (!completed || this.resultShown) return;
    this.resultShown = true;
    if (job.result !== null && job.result !== undefined) {
      this.showResult(JSON.stringify(job.result, null, 2), "");
    } else {
      this.fetchResult(); // large (kept out of the resource), null, or expired: /result says which
    }
  }

  showResult(text, note) {
    $("job-result").textContent = text;
    $("result-note").textContent = note;
  }

  async fetchResult() {
    let response;
    try {
      response = await request(`${this.path}/result`, { accept: "*/*", signal: this.signal });
    } catch (error) {
      if (!this.gone) this.showResult("", error.status === 410 ? "The result has expired." : `The result cannot be read: ${error.message}`);
      $("result-download").hidden = error.status === 410;
      return;
    }
    const size = Number(response.headers.get("content-length") || "0");
    if (size > SHOWN_RESULT_BYTES) {
      response.body?.cancel();
      this.showResult("", `This result is ${(size / 1024 / 1024).toFixed(1)} MB, too large to show here; download it.`);
      return;
    }
    const text = await response.text();
    if (this.gone) return;
    try {
      this.showResult(JSON.stringify(JSON.parse(text), null, 2), "");
    } catch {
      this.showResult(text, "");
    }
  }

  event(event) {
    if (this.gone || event.sequence_number < this.events) return;
    this.events = event.sequence_number + 1;
    this.log(event);
    if (event.type === "progress" && !TERMINAL.has(this.job.status)) {
      this.job = { ...this.job, progress: event.progress, stage: event.stage, message: event.message, eta_seconds: event.eta_seconds };
      this.progress();
    } else if (event.type === "output") {
      this.write(typeof event.delta === "string" ? event.delta : `${JSON.stringify(event.data)}\n`);
    } else if (event.type === "status" && !TERMINAL.has(this.job.status)) {
      // The log replays from its start: an old status shown for a moment is corrected by the
      // resource read after it, and a finished job's status never goes back.
      this.job = { ...this.job, status: event.status, attempt: event.attempt ?? this.job.attempt };
      setBadge($("job-status"), this.job);
      this.cancelState();
      this.reload(); // the resource has what the event leaves out: times, result, error
    }
  }

  // Tokens arrive many to a frame: new text is appended once per frame, never the whole again.
  write(text) {
    this.output += text;
    if (this.drawing) return;
    this.drawing = requestAnimationFrame(() => {
      this.drawing = 0;
      if (this.gone) return;
      $("output-panel").hidden = false;
      const output = $("job-output");
      const following = output.scrollHeight - output.scrollTop - output.clientHeight < 40;
      if (this.outputChars < SHOWN_OUTPUT_CHARS) {
        const room = SHOWN_OUTPUT_CHARS - this.outputChars;
        const shown = this.output.length > room ? `${this.output.slice(0, room)}\n… (the rest is in the event log and the result)` : this.output;
        output.append(shown);
        this.outputChars += shown.length;
      }
      this.output = "";
      if (following) output.scrollTop = output.scrollHeight;
    });
  }

  log(event) {
    const body = $("events-body");
    const wrap = body.closest(".events-wrap");
    const following = wrap.scrollHeight - wrap.scrollTop - wrap.clientHeight < 40;
    body.append(el("tr", {},
      el("td", { class: "num", text: String(event.sequence_number) }),
      el("td", { text: time(event.at) }),
      el("td", {}, el("span", { class: `tag type-${event.type}`, text: event.type })),
      el("td", { class: "detail", text: detail(event) }),
    ));
    while (body.children.length > SHOWN_EVENTS) body.firstElementChild.remove();
    $("events-count").textContent = `(${this.events})`;
    if (following) wrap.scrollTop = wrap.scrollHeight;
  }

  confirmCancel() {
    $("cancel-job-id").textContent = this.id;
    $("cancel-dialog").returnValue = "";
    $("cancel-dialog").showModal();
  }

  // The note shows from the moment the request is sent: the job may well be cancelled before
  // the answer to the request arrives.
  async cancel() {
    if (this.gone) return;
    this.requested = true;
    this.cancelState();
    try {
      const job = await postJSON(`${this.path}/cancel`, undefined, { signal: this.signal });
      if (!this.gone) this.show(job);
    } catch (error) {
      if (this.gone) return;
      this.requested = false;
      this.cancelState();
      showNotice(`Could not cancel: ${error.message}`);
    }
  }

  cancelState() {
    const job = this.job;
    const open = !TERMINAL.has(job.status);
    const requested = job.cancel_requested || this.requested;
    $("job-cancel-note").hidden = !(open && requested);
    $("cancel-button").hidden = !(open && !requested);
  }

  async download() {
    try {
      await download(`${this.path}/result`, this.id);
    } catch (error) {
      showNotice(`Could not download the result: ${error.message}`);
    }
  }
}

function detail(event) {
  switch (event.type) {
    case "progress": {
      const parts = [`${percent(event.progress)} %`];
      if (event.stage) parts.push(event.stage);
      if (event.message) parts.push(event.message);
      return parts.join(" · ");
    }
    case "status": {
      const parts = [event.status];
      if (event.attempt) parts.push(`attempt ${event.attempt}`);
      if (event.detail && event.detail.cancel_requested) parts.push("cancel requested");
      const error = event.detail && event.detail.error;
      if (error) parts.push(`${error.type}: ${error.message}`);
      else if (event.detail && event.detail.reason) parts.push(event.detail.reason);
      return parts.join(" · ");
    }
    case "log":
      return `${event.level || "info"}: ${event.message}`;
    case "output":
      return typeof event.delta === "string" ? JSON.stringify(event.delta) : JSON.stringify(event.data);
    case "usage":
      return `${event.input_tokens ?? 0} in, ${event.output_tokens ?? 0} out`;
    default: {
      const { type, sequence_number, job_id, at, ...rest } = event;
      return JSON.stringify(rest);
    }
  }
}
