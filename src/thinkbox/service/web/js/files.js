// The files panel: the user's folder and the tenant's shared folder side by side; upload (button or
// drop), download, delete, attach to the next question. Names are shown as text, whatever they contain,
// with the characters that would reorder them shown as code points (shownName).

import { ApiError } from "./api.js";
import { clear, formatBytes, h, saveBlob, shownName } from "./dom.js";

export class FilesPanel {
  constructor(api, { onAttach, mine, shared, error, input, drop, signal }) {
    this.api = api;
    this.onAttach = onAttach;
    this.lists = { user: mine, tenant: shared };
    this.error = error;
    const opts = { signal };
    input.addEventListener("change", async () => {
      await this.upload([...input.files]);
      input.value = "";
    }, opts);
    for (const name of ["dragenter", "dragover"]) {
      drop.addEventListener(name, (ev) => { ev.preventDefault(); drop.classList.add("dragging"); }, opts);
    }
    drop.addEventListener("dragleave", () => drop.classList.remove("dragging"), opts);
    drop.addEventListener("drop", (ev) => {
      ev.preventDefault();
      drop.classList.remove("dragging");
      this.upload([...(ev.dataTransfer?.files || [])]);
    }, opts);
  }

  async refresh() {
    await Promise.all(["user", "tenant"].map(async (scope) => {
      try {
        const listing = await this.api.files(scope);
        this.render(scope, listing);
        if (this.error.dataset.kind === "listing") this.showError("");
      } catch (err) {
        this.showError(`Could not list the files: ${err.message}`, "listing");
      }
    }));
  }

  showError(text, kind = "action") {
    this.error.textContent = text;
    this.error.dataset.kind = kind;
  }

  render(scope, listing) {
    const list = clear(this.lists[scope]);
    const files = listing.files.filter((f) => !f.is_dir && !f.path.startsWith(".thinkbox/"));
    if (!files.length) list.append(h("li", { class: "hint" }, "No files"));
    for (const f of files) {
      const name = shownName(f.path);
      const actions = [
        h("button", { type: "button", "aria-label": `Download ${name}`, onclick: () => this.download(f.path, scope) }, "Download"),
        h("button", { type: "button", "aria-label": `Delete ${name}`, onclick: () => this.remove(f.path, scope) }, "Delete"),
      ];
      if (scope === "user") {
        actions.unshift(h("button", { type: "button", "aria-label": `Attach ${name} to the question`, onclick: () => this.onAttach(f.path) }, "Attach"));
      }
      list.append(h("li", { testid: "file", "data-path": f.path },
        h("span", { class: "name", title: name }, name),
        h("span", { class: "size" }, formatBytes(f.size)),
        h("span", { class: "actions" }, actions)));
    }
    list.append(h("li", { class: "hint usage" }, `${formatBytes(listing.used_bytes)} of ${formatBytes(listing.quota_bytes)} used`));
  }

  async upload(files) {
    this.showError("");
    const problems = [];
    for (const file of files) {
      try {
        await this.api.upload(file.name, file, "user");
      } catch (err) {
        problems.push(`${file.name}: ${err.message}`);
      }
    }
    this.showError(problems.join("\n"));
    await this.refresh();
  }

  async download(path, scope) {
    try {
      const response = await this.api.download(path, scope);
      saveBlob(await response.blob(), path);
    } catch (err) {
      this.showError(`${shownName(path)}: ${err.message}`);
    }
  }

  async remove(path, scope) {
    try {
      await this.api.remove(path, scope);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) this.showError(`${shownName(path)}: ${err.message}`);
    }
    await this.refresh();
  }
}
