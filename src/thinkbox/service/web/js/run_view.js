// One run on the page: its question, then its events as steps (thought, code, output, figures, error,
// tokens and seconds), then the answer. Events are numbered by the server; one whose number was already
// shown is ignored, so a stream resumed after a reload or a dropped connection never repeats a step.

import { formatSeconds, h } from "./dom.js";
import { highlight } from "./highlight.js";
import { renderMarkdown } from "./markdown.js";
import { sanitizedHtml } from "./sanitize.js";

// An HTML output with more tags than this is shown as its text form: Chromium parses thousands of unclosed
// tags in quadratic time (a session may send 16 MiB of display data, which would hold the tab for hours,
// at every reload). A pandas table of 60 rows has about a thousand.
export const MAX_HTML_TAGS = 20000;

const ENDED = { answered: "Answered", limit: "Stopped at a limit", error: "Failed", cancelled: "Stopped" };

export class RunView {
  constructor(runId, question) {
    this.runId = runId;
    this.lastSeq = 0;
    this.finished = false;
    this.steps = new Map();
    this.tokens = 0;
    this.answerEl = null;
    this.el = h("article", { class: "run", testid: "run", "data-run-id": runId },
      h("div", { class: "question", testid: "question" }, question || ""));
    this.body = h("div", { class: "run-body" });
    this.status = h("p", { class: "run-status", role: "status", testid: "run-status" }, "Waiting for a run slot...");
    this.el.append(this.body, this.status);
  }

  // Show one event ({id, type, data}); false when it was already shown.
  add(frame) {
    if (frame.id && frame.id <= this.lastSeq) return false;
    if (frame.id) this.lastSeq = frame.id;
    const handler = this[`on_${frame.type}`];
    try {
      if (handler) handler.call(this, frame.data);
    } catch (err) { // that event only: not taken for a lost connection (a false banner, the event skipped)
      this.note(`This ${frame.type} event could not be shown (${err.message}).`);
    }
    return true;
  }

  on_run_started(e) {
    this.status.textContent = "Thinking...";
    if (e.question) this.el.querySelector(".question").textContent = e.question;
  }

  on_run_resumed(e) {
    this.note(`The server restarted; the run goes on (${e.replayed_cells} cells replayed). ${e.message || ""}`);
  }

  on_route_chosen(e) {
    const how = e.route === "direct" ? "Answering directly, without code" : "Thinking in code";
    const cost = e.duration_s ? ` (decided in ${formatSeconds(e.duration_s)})` : "";
    this.body.append(h("p", { class: "note route", testid: "route", "data-route": e.route }, `${how}: ${e.reason}${cost}`));
  }

  // A decomposed run (agent.decompose): its plan, then each planned function's test.
  on_plan_made(e) {
    const fns = e.functions || [];
    const text = fns.length
      ? `Plan (${e.orchestration}): ${fns.map((f) => f.name).join(", ")}${e.compose ? ` · ${e.compose}` : ""}`
      : `Plan: ${e.note}`;
    this.body.append(h("p", { class: "note plan", testid: "plan" }, text));
  }

  on_part_tested(e) {
    const text = e.passed ? `✓ ${e.name}: its test passed` : `✗ ${e.name}: its test failed (check ${e.attempt}): ${e.error}`;
    const el = h("p", { class: e.passed ? "note" : "note error", testid: "part-tested" }, text);
    (e.step ? this.step(e.step).extras : this.body).append(el);
  }

  on_step_started(e) {
    const known = this.steps.get(e.step);
    if (known) { // the step starts again after a restart of the server: one section, its new thought
      known.thought.textContent = "";
      return;
    }
    const step = {
      start: e.ts,
      startTokens: this.tokens,
      el: h("section", { class: "step", testid: "step", "data-step": e.step, "aria-label": `Step ${e.step}` }),
      thought: h("p", { class: "thought", testid: "step-thought" }),
      output: null,
      extras: h("div", { class: "step-extras" }),
    };
    step.el.append(h("h3", { class: "step-title" }, `Step ${e.step}`), step.thought, step.extras);
    this.steps.set(e.step, step);
    this.body.append(step.el);
    this.status.textContent = "Thinking...";
  }

  step(n) {
    if (!this.steps.has(n)) this.on_step_started({ step: n, ts: null });
    return this.steps.get(n);
  }

  on_thought_delta(e) {
    this.step(e.step).thought.append(e.text);
  }

  on_parse_failed(e) {
    const step = this.step(e.step);
    step.thought.textContent = "";
    step.extras.append(h("p", { class: "note" }, `The model's reply was not a valid action; asked again (${e.error})`));
    this.tokens = e.tokens || this.tokens;
  }

  on_action_parsed(e) {
    const step = this.step(e.step);
    step.thought.textContent = e.thought;
    this.tokens = e.tokens || this.tokens;
    step.tokens = this.tokens - step.startTokens; // failed replies of the step included
    if (e.action === "execute_code") this.showCode(step, e.code);
    else this.footer(step, e.ts);
  }

  on_code_started(e) {
    const step = this.step(e.step);
    if (step.ran) this.note("The code runs again: the server restarted while it ran.", step);
    step.ran = true;
    this.showCode(step, e.code);
    this.status.textContent = "Running code...";
  }

  showCode(step, code) {
    if (step.code) return;
    step.code = h("details", { class: "code", open: true, testid: "step-code" },
      h("summary", {}, "Code"), h("pre", {}, highlight(code)));
    step.thought.after(step.code);
  }

  output(step) {
    if (!step.output) {
      step.output = h("pre", { class: "output", testid: "step-output", "aria-label": "Output" });
      step.extras.before(step.output);
    }
    return step.output;
  }

  on_output_chunk(e) {
    const out = this.output(this.step(e.step));
    out.append(e.name === "stderr" ? h("span", { class: "stderr" }, e.text) : e.text);
  }

  on_display_produced(e) {
    const step = this.step(e.step);
    const mime = e.mime || {};
    let el;
    if (mime["image/png"]) {
      el = h("img", { src: `data:image/png;base64,${mime["image/png"]}`, alt: "Figure from the code", testid: "output-image" });
    } else if (mime["image/svg+xml"]) {
      const svg = btoa(unescape(encodeURIComponent(mime["image/svg+xml"])));
      el = h("img", { src: `data:image/svg+xml;base64,${svg}`, alt: "Figure from the code", testid: "output-image" });
    } else if (mime["text/html"] && tags(mime["text/html"]) <= MAX_HTML_TAGS) {
      el = sanitizedHtml(mime["text/html"]);
    } else {
      el = h("pre", { class: "output" }, mime["text/plain"] || (mime["text/html"] ? "(an HTML output too large to show)" : ""));
    }
    step.extras.before(h("div", { class: "display", testid: "output-display" }, el));
  }

  on_execution_finished(e) {
    const step = this.step(e.step);
    const r = e.result || {};
    if (r.result !== null && r.result !== undefined && r.result !== "") this.output(step).append(h("span", { class: "result" }, r.result));
    if (r.error) {
      const text = `${r.error.type}: ${r.error.message}${r.error.traceback ? `\n\n${r.error.traceback}` : ""}`;
      step.extras.append(h("pre", { class: "error", testid: "step-error" }, text));
    }
    if (e.session_restarted) this.note("The interpreter had died and was started again: its variables are gone.", step);
    this.footer(step, e.ts, r.duration_ms);
    this.status.textContent = "Thinking...";
  }

  // A request the code sent through the egress proxy: one line in its step.
  on_network_request(e) {
    const step = e.step ? this.step(e.step) : null;
    const where = `${e.method} ${e.host}:${e.port}${e.path}`;
    const used = e.secrets && e.secrets.length ? ` · secrets ${e.secrets.join(", ")}` : "";
    const text = e.refused
      ? `⛔ ${where} refused: ${e.reason}`
      : `↔ ${where} → ${e.status || e.reason} · ${e.bytes_up} B up · ${e.bytes_down} B down · ${Math.round(e.duration_ms)} ms${used}`;
    const el = h("p", { class: e.refused ? "network refused" : "network", testid: "network-request" }, text);
    if (step) step.extras.append(el);
    else this.body.append(el);
  }

  // The critic's check of an answer (agent.critic): passed, a retry with what did not match, or a note.
  on_answer_checked(e) {
    const checks = (e.checks || []).join(" and ");
    const text = e.passed ? `✓ Answer checked (${checks}): it matches the evidence`
      : e.retry ? `✗ Answer checked (${checks}): asking the model once more: ${(e.problems || []).join("; ")}`
        : `Answer checked (${checks}): ${e.note}`;
    this.note(text, e.step ? this.step(e.step) : null);
  }

  // After the answer: the run's functions saved as tools (or why not), and the time it took.
  on_tools_harvested(e) {
    const parts = (e.tools || []).map((t) => t.outcome === "saved"
      ? `${t.function} saved as a tool (version ${t.version}, ${t.tests} tests passed)`
      : `${t.function}: ${t.outcome}${t.reason ? ` (${t.reason.split("\n")[0]})` : ""}`);
    this.body.append(h("p", { class: "note", testid: "tools-harvested" },
      `Tools from this run: ${parts.join("; ")} · ${formatSeconds(e.duration_s)}`));
  }

  on_files_previewed(e) {
    const text = h("pre", { class: "output" }, e.text || "");
    this.body.append(h("details", { class: "note", testid: "files-previewed" },
      h("summary", {}, `The model was shown the structure of ${(e.files || []).join(", ")}`), text));
  }

  on_code_rejected(e) {
    const step = this.step(e.step);
    this.showCode(step, e.code);
    const problems = (e.problems || []).join("\n");
    step.extras.append(h("pre", { class: "error", testid: "step-rejected" }, `Not run: a check found\n${problems}`));
    this.footer(step, e.ts);
  }

  on_notice(e) {
    const step = e.step ? this.step(e.step) : null;
    if (e.kind === "docs") {
      const el = h("details", { class: "note", testid: "step-docs" }, h("summary", {}, "Documentation shown to the model"),
        h("pre", { class: "output" }, e.message));
      (step ? step.extras : this.body).append(el);
    } else if (e.kind === "repeat") {
      this.note("The same code and output as an earlier step: the model was asked for the answer or another approach.", step);
    } else {
      this.note(e.message, step);
    }
  }

  footer(step, ts, codeMs) {
    if (step.footer) step.footer.remove();
    const parts = [];
    if (step.tokens) parts.push(`${step.tokens} tokens`);
    if (step.start && ts) parts.push(formatSeconds(Math.max(0, ts - step.start)));
    if (codeMs !== undefined) parts.push(`code ${formatSeconds(codeMs / 1000)}`);
    step.footer = h("p", { class: "meta", testid: "step-meta" }, parts.join(" · "));
    step.el.append(step.footer);
  }

  on_final_answer(e) {
    this.answerEl = h("div", { class: "answer", testid: "answer" }, renderMarkdown(e.answer));
    this.body.append(this.answerEl);
  }

  on_limit_reached(e) {
    this.body.append(h("p", { class: "error", role: "alert", testid: "run-error" }, e.message));
  }

  on_run_error(e) {
    this.body.append(h("p", { class: "error", role: "alert", testid: "run-error" }, `${e.code}: ${e.message}`));
  }

  on_run_finished(e) {
    this.finished = true;
    const what = ENDED[e.status] || e.status;
    this.status.textContent = `${what}: ${e.steps} steps, ${formatSeconds(e.duration_s)}, ${e.tokens} tokens`;
    this.status.dataset.status = e.status;
  }

  note(text, step) {
    const el = h("p", { class: "note", testid: "run-note" }, text);
    if (step) step.extras.append(el);
    else this.body.append(el);
  }

  fail(message) {
    this.finished = true;
    this.status.textContent = message;
    this.status.classList.add("error");
  }
}

function tags(html) {
  let n = 0;
  for (let at = html.indexOf("<"); at >= 0 && n <= MAX_HTML_TAGS; at = html.indexOf("<", at + 1)) n += 1;
  return n;
}
