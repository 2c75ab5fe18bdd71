// The history panel: the user's runs, newest first, searchable; opening one replays it, and each can be
// downloaded as a notebook.

import { clear, formatTime, h, saveBlob } from "./dom.js";

export class HistoryPanel {
  constructor(api, { list, search, more, onOpen, signal }) {
    this.api = api;
    this.list = list;
    this.more = more;
    this.onOpen = onOpen;
    this.search = search;
    this.next = null;
    let timer = null;
    search.value = "";
    search.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => this.refresh(), 250);
    }, { signal });
    more.addEventListener("click", () => this.load(this.next), { signal });
  }

  refresh() {
    return this.load(0);
  }

  async load(offset) {
    let page;
    try {
      page = await this.api.runs(this.search.value.trim(), offset);
    } catch (err) {
      clear(this.list).append(h("li", { class: "error" }, `Could not list the runs: ${err.message}`));
      return;
    }
    if (!offset) clear(this.list);
    if (!offset && !page.runs.length) this.list.append(h("li", { class: "hint" }, "No runs"));
    for (const run of page.runs) {
      this.list.append(h("li", { testid: "history-item", "data-run-id": run.id },
        h("button", { type: "button", class: "open", onclick: () => this.onOpen(run) },
          h("span", { class: "q" }, run.question),
          h("span", { class: "meta" }, `${run.status} · ${formatTime(run.created_at)}`)),
        h("button", { type: "button", class: "nb", "aria-label": "Download as a notebook (.ipynb)", onclick: () => this.notebook(run.id) }, ".ipynb")));
    }
    this.next = page.next_offset;
    this.more.hidden = page.next_offset === null;
  }

  async notebook(id) {
    try {
      const response = await this.api.notebook(id);
      saveBlob(await response.blob(), `${id}.ipynb`);
    } catch (err) {
      this.list.prepend(h("li", { class: "error", role: "alert" }, `${id}.ipynb: ${err.message}`));
    }
  }
}
