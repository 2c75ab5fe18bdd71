// The session panel: what the conversation's session defines (names, types, short descriptions), from
// GET /v1/sessions/{id}/variables, which runs none of the user's code.

import { ApiError } from "./api.js";
import { clear, h } from "./dom.js";

export class SessionPanel {
  constructor(api, { state, rows }) {
    this.api = api;
    this.state = state;
    this.rows = rows;
  }

  reset() {
    clear(this.rows);
    this.state.textContent = "No session yet: ask a question.";
  }

  async refresh(sessionId) {
    if (!sessionId) return this.reset();
    let found;
    try {
      found = await this.api.variables(sessionId);
    } catch (err) {
      if (err instanceof ApiError && err.status === 409) return; // a cell runs: the next step refreshes
      this.state.textContent = `Session ${sessionId}: ${err.message}`;
      return;
    }
    clear(this.rows);
    if (!found.live) {
      this.state.textContent = "The session is not running (closed, or rebuilt by the next question).";
      return;
    }
    const n = found.variables.length;
    this.state.textContent = n ? `${n} names defined${found.omitted ? ` (${found.omitted} more not shown)` : ""}` : "Nothing defined yet.";
    for (const v of found.variables) {
      this.rows.append(h("tr", { testid: "variable", "data-name": v.name },
        h("th", { scope: "row" }, v.name), h("td", {}, v.type), h("td", {}, h("code", {}, v.repr))));
    }
  }
}
