// The page: sign in with an API key, ask, follow the run, and the side panels (files, history, session).
// The conversation (its session and runs) is kept in the browser's storage, so a reload shows it again
// and resumes a run that is still going, from its events.

import { Api, ApiError, Unreachable } from "./api.js";
import { clear, h, shownName } from "./dom.js";
import { FilesPanel } from "./files.js";
import { follow } from "./follow.js";
import { HistoryPanel } from "./history.js";
import { RunView } from "./run_view.js";
import { SessionPanel } from "./session_panel.js";

const KEY = "thinkbox.key";
const $ = (id) => document.getElementById(id);

class Page {
  constructor(api, me) {
    this.api = api;
    this.me = me;
    this.storeKey = `thinkbox.conversation.${me.tenant}/${me.user}`;
    this.conversation = load(this.storeKey) || { sessionId: null, runs: [] };
    this.attachments = new Set();
    this.active = null; // { view, controller }
    this.controllers = [];
    this.asking = false;
    this.lifetime = new AbortController(); // removes the panels' listeners at sign-out
    const signal = this.lifetime.signal;
    this.files = new FilesPanel(api, {
      onAttach: (path) => this.attach(path), mine: $("file-list"), shared: $("shared-list"),
      error: $("files-error"), input: $("file-input"), drop: $("drop"), signal,
    });
    this.history = new HistoryPanel(api, {
      list: $("history-list"), search: $("history-search"), more: $("history-more"), signal,
      onOpen: (run) => this.open(run),
    });
    this.session = new SessionPanel(api, { state: $("session-state"), rows: $("variables") });
  }

  start() {
    $("who").textContent = `${this.me.user} · ${this.me.tenant}`;
    this.files.refresh();
    this.history.refresh();
    this.render();
    this.session.refresh(this.conversation.sessionId);
    $("question").focus();
  }

  save() {
    localStorage.setItem(this.storeKey, JSON.stringify(this.conversation));
  }

  // Show the conversation's runs from their events; follow the ones still going.
  render() {
    this.stopFollowing();
    clear($("conversation"));
    for (const runId of this.conversation.runs) {
      const view = new RunView(runId, "");
      $("conversation").append(view.el);
      this.follow(view);
    }
  }

  async ask() {
    const question = $("question").value.trim();
    if (!question || this.active || this.asking) return;
    $("ask-error").textContent = "";
    let created;
    this.asking = true;
    try {
      created = await this.api.ask(question, this.conversation.sessionId, [...this.attachments]);
    } catch (err) {
      $("ask-error").textContent = err instanceof ApiError && err.code === "session_gone"
        ? `${err.message}. Press "New conversation" to go on.` : err.message;
      return;
    } finally {
      this.asking = false;
    }
    $("question").value = "";
    this.attachments.clear();
    this.showAttachments();
    this.conversation.runs.push(created.id);
    this.save();
    const view = new RunView(created.id, question);
    $("conversation").append(view.el);
    this.follow(view);
    this.history.refresh();
  }

  follow(view) {
    const controller = new AbortController();
    this.controllers.push(controller);
    const live = { view, controller };
    follow(this.api, view, {
      signal: controller.signal,
      onConnection: (up) => banner(up ? "Connected to the server again." : "The server cannot be reached: retrying. Runs go on on the server.", up),
      onEvent: (frame) => {
        if (frame.type === "step_started" && !this.conversation.sessionId) this.learnSession(view.runId);
        if (frame.type === "execution_finished") this.afterStep();
        if (frame.type === "final_answer" || frame.type === "run_finished") view.el.scrollIntoView({ block: "end" });
      },
    }).finally(() => {
      if (this.active === live) this.busy(null);
      if (!controller.signal.aborted) this.afterRun(view);
    });
    if (!view.finished) this.busy(live);
  }

  async learnSession(runId) {
    try {
      const info = await this.api.run(runId);
      if (info.session_id && this.conversation.runs.includes(runId)) {
        this.conversation.sessionId = info.session_id;
        this.save();
      }
    } catch {
      // known at the run's end at the latest
    }
  }

  afterStep() {
    this.files.refresh();
    this.session.refresh(this.conversation.sessionId);
  }

  async afterRun(view) {
    if (!this.conversation.sessionId) await this.learnSession(view.runId);
    this.afterStep();
    this.history.refresh();
  }

  busy(live) {
    this.active = live && !live.view.finished ? live : null;
    $("stop").hidden = !this.active;
    $("ask").disabled = Boolean(this.active);
  }

  async stop() {
    if (!this.active) return;
    try {
      await this.api.cancel(this.active.view.runId);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 409)) $("ask-error").textContent = err.message;
    }
  }

  stopFollowing() {
    for (const c of this.controllers) c.abort();
    this.controllers = [];
    this.busy(null);
  }

  newConversation() {
    this.stopFollowing();
    this.conversation = { sessionId: null, runs: [] };
    this.save();
    clear($("conversation"));
    this.session.reset();
    $("question").focus();
  }

  open(run) {
    this.conversation = { sessionId: run.session_id, runs: [run.id] };
    this.save();
    this.render();
    this.session.refresh(run.session_id);
  }

  attach(path) {
    this.attachments.add(path);
    this.showAttachments();
  }

  showAttachments() {
    const box = clear($("attached"));
    for (const path of this.attachments) {
      box.append(h("span", { class: "chip", testid: "attachment" }, shownName(path),
        h("button", { type: "button", "aria-label": `Remove ${shownName(path)}`, onclick: () => { this.attachments.delete(path); this.showAttachments(); } }, "×")));
    }
  }

  close() {
    this.stopFollowing();
    this.lifetime.abort();
  }
}

function load(key) {
  try {
    const value = JSON.parse(localStorage.getItem(key) || "null");
    return value && Array.isArray(value.runs) ? value : null;
  } catch {
    return null;
  }
}

let bannerTimer = null;
function banner(text, ok) {
  const el = $("banner");
  clearTimeout(bannerTimer);
  el.textContent = text;
  el.classList.toggle("ok", Boolean(ok));
  el.hidden = false;
  if (ok) bannerTimer = setTimeout(() => { el.hidden = true; }, 3000);
}

let page = null;

async function signIn(key, { quiet = false } = {}) {
  const api = new Api(key);
  const error = $("signin-error");
  error.textContent = "";
  let me;
  try {
    me = await api.me();
  } catch (err) {
    if (err instanceof Unreachable && quiet) {
      banner("The server cannot be reached: retrying.", false);
      setTimeout(() => signIn(key, { quiet }), 2000);
      return;
    }
    showSignIn();
    error.textContent = `Sign-in failed: ${err.message}`;
    return;
  }
  $("banner").hidden = true;
  localStorage.setItem(KEY, key);
  $("signin").hidden = true;
  $("app").hidden = false;
  page = new Page(api, me);
  page.start();
}

function showSignIn() {
  $("app").hidden = true;
  $("signin").hidden = false;
  $("api-key").focus();
}

function signOut() {
  page?.close();
  page = null;
  localStorage.removeItem(KEY);
  clear($("conversation"));
  $("api-key").value = "";
  showSignIn();
}

function main() {
  $("signin-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("api-key").value.trim();
    if (key) signIn(key);
  });
  $("sign-out").addEventListener("click", signOut);
  $("ask-form").addEventListener("submit", (ev) => { ev.preventDefault(); page?.ask(); });
  $("question").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      page?.ask();
    }
  });
  $("stop").addEventListener("click", () => page?.stop());
  $("new-conversation").addEventListener("click", () => page?.newConversation());
  const key = localStorage.getItem(KEY);
  if (key) signIn(key, { quiet: true });
  else showSignIn();
}

main();
