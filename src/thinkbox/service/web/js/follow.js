// Follow a run's events to its end: when the connection drops (the network, or the server going away),
// say so and resume from the last event shown, retrying until the server is back.

import { ApiError } from "./api.js";

export async function follow(api, view, { signal, onEvent, onConnection }) {
  let delay = 500;
  let lost = false;
  while (!view.finished && !signal.aborted) {
    try {
      await api.events(view.runId, view.lastSeq, {
        signal,
        onOpen() {
          delay = 500;
          if (lost) onConnection(true);
          lost = false;
        },
        onEvent(frame) {
          if (view.add(frame)) onEvent(frame);
        },
      });
      if (view.finished || signal.aborted) return;
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof ApiError && err.status < 500 && err.status !== 429) {
        view.fail(err.message);
        return;
      }
    }
    if (!lost) onConnection(false);
    lost = true;
    await sleep(delay, signal);
    delay = Math.min(delay * 2, 4000);
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}
