// The public API of thinkbox serve, as the page uses it: JSON requests with the bearer key, and a run's
// server-sent events read from fetch() (EventSource cannot send an Authorization header).

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// A network failure (the server is not reachable), as opposed to an answer with an error.
export class Unreachable extends Error {}

export class Api {
  constructor(key, base = "") {
    this.key = key;
    this.base = base;
  }

  async request(method, path, { json, body, query, headers = {}, raw = false, signal } = {}) {
    let url = this.base + path;
    if (query) {
      const params = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") params.set(k, v);
      const text = params.toString();
      if (text) url += `?${text}`;
    }
    const init = { method, signal, headers: { Authorization: `Bearer ${this.key}`, ...headers } };
    if (json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(json);
    } else if (body !== undefined) {
      init.body = body;
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (err) {
      throw new Unreachable(`the server cannot be reached (${err.message})`);
    }
    if (!response.ok) throw await errorOf(response);
    if (raw) return response;
    if (response.status === 204) return null;
    return response.json();
  }

  me() { return this.request("GET", "/v1/me"); }
  ask(question, sessionId, files) {
    return this.request("POST", "/v1/runs", { json: { question, session_id: sessionId || null, files } });
  }
  run(id) { return this.request("GET", `/v1/runs/${encodeURIComponent(id)}`); }
  runs(q, offset = 0) { return this.request("GET", "/v1/runs", { query: { q, offset, limit: 30 } }); }
  cancel(id) { return this.request("POST", `/v1/runs/${encodeURIComponent(id)}/cancel`); }
  notebook(id) { return this.request("GET", `/v1/runs/${encodeURIComponent(id)}/notebook`, { raw: true }); }
  variables(sid) { return this.request("GET", `/v1/sessions/${encodeURIComponent(sid)}/variables`); }
  files(scope) { return this.request("GET", "/v1/files", { query: { scope } }); }
  upload(path, data, scope) {
    return this.request("PUT", `/v1/files/${filePath(path)}`, {
      body: data, query: { scope }, headers: { "Content-Type": "application/octet-stream" },
    });
  }
  download(path, scope) { return this.request("GET", `/v1/files/${filePath(path)}`, { query: { scope }, raw: true }); }
  remove(path, scope) { return this.request("DELETE", `/v1/files/${filePath(path)}`, { query: { scope } }); }

  // Read the run's events after event `after`; calls onEvent({id, type, data}) for each, onOpen() once the
  // server answered. Resolves when the stream ends (after run_finished, or cut: the caller resumes).
  async events(runId, after, { onEvent, onOpen, signal }) {
    const response = await this.request("GET", `/v1/runs/${encodeURIComponent(runId)}/events`, {
      query: { after }, headers: { Accept: "text/event-stream" }, raw: true, signal,
    }).catch((err) => { if (signal?.aborted) return null; throw err; });
    if (!response) return;
    onOpen?.();
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    const abort = () => reader.cancel().catch(() => {});
    signal?.addEventListener("abort", abort);
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const frame = parseFrame(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
          if (frame) onEvent(frame);
        }
      }
    } catch (err) {
      if (signal?.aborted) return;
      throw new Unreachable(`the event stream was cut (${err.message})`);
    } finally {
      signal?.removeEventListener("abort", abort);
    }
  }
}

function parseFrame(text) {
  const frame = { id: 0, type: "message", data: "" };
  for (const line of text.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "id") frame.id = Number(value);
    else if (field === "event") frame.type = value;
    else if (field === "data") frame.data += value;
  }
  if (!frame.data) return null;
  frame.data = JSON.parse(frame.data);
  return frame;
}

// Encoded whole ("/" as %2F, which the server decodes): "?" or "#" stay part of the name, and a "../" is
// not resolved away by the browser but reaches the server as written, which refuses it naming the problem.
function filePath(path) {
  return encodeURIComponent(path);
}

async function errorOf(response) {
  let code = `http_${response.status}`;
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body?.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, code, message);
}
