// The playground's page logic: pick an input, submit it through the queue, follow it live,
// show and compare the result, keep a history. Network calls live in api.js.

import * as api from "./api.js";
import { Compare } from "./compare.js";
import * as history from "./history.js";
import { snippets } from "./snippets.js";
import { reachable } from "./urls.js";

const $ = (id) => document.getElementById(id);
const el = {
  form: $("form"),
  drop: $("drop"),
  file: $("file"),
  url: $("url"),
  preview: $("input-preview"),
  dropHint: $("drop-hint"),
  inputInfo: $("input-info"),
  checkpoint: $("checkpoint"),
  seed: $("seed"),
  format: $("format"),
  overlap: $("overlap"),
  scale: $("scale"),
  run: $("run"),
  cancel: $("cancel"),
  status: $("status"),
  phase: $("phase"),
  elapsed: $("elapsed"),
  progress: $("progress"),
  logsBox: $("logs-box"),
  logs: $("logs"),
  download: $("download"),
  resultInfo: $("result-info"),
  code: $("code"),
  copy: $("copy"),
  viewerEmpty: $("viewer-empty"),
  history: $("history"),
  historyClear: $("history-clear"),
  access: $("access"),
  accessDetail: $("access-detail"),
  session: $("session"),
  logout: $("logout"),
};

const state = {
  file: null, // the picked File
  url: "", // the image URL typed or pasted (when no file is picked)
  objectUrl: null, // its local preview URL
  uploaded: null, // {file, url}: the last upload, reused when the same file is run again
  busy: false,
  controller: null,
  requestId: null,
  cancelRequested: false,
  request: null,
  response: null,
  tab: "request",
  startedAt: 0,
  timer: 0,
};

const compare = new Compare(document);
const IDLE_VIEWER_TEXT = el.viewerEmpty.textContent;

// --- input ------------------------------------------------------------------------------------

function pickFile(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) {
    el.inputInfo.textContent = `${file.name || "That file"} is not an image.`;
    return;
  }
  state.file = file;
  state.url = "";
  if (state.objectUrl) URL.revokeObjectURL(state.objectUrl);
  state.objectUrl = URL.createObjectURL(file);
  el.url.value = "";
  showPreview(state.objectUrl, `${file.name || "pasted image"} · ${formatBytes(file.size)}`);
}

function pickUrl(url) {
  // `change` fires again on blur, e.g. when Run is pressed: redoing the preview then would
  // move the button away from under the pointer.
  if (url === state.url && !state.file) return;
  state.url = url;
  state.file = null;
  if (!/^(https?:|data:image\/)/i.test(url)) {
    el.preview.hidden = true;
    el.preview.removeAttribute("src");
    el.dropHint.hidden = false;
    el.inputInfo.textContent = url ? "No preview for this URL; the server checks it." : "";
    return;
  }
  showPreview(url, url.startsWith("data:") ? "data: URI" : new URL(url).host);
}

/** The factor the form asks for (4 when empty or out of range: the server says why). */
function scaleValue() {
  const f = Number(el.scale.value);
  return el.scale.value !== "" && f >= 1 && f <= 16 ? f : 4;
}

// round(w·f) × round(h·f), halves up: the size the server makes.
const scaled = (n) => Math.max(1, Math.floor(n * scaleValue() + 0.5));

el.scale.addEventListener("input", () => {
  if (!el.preview.hidden && el.preview.naturalWidth && el.inputInfo.dataset.label) {
    el.preview.onload();
  }
});

function showPreview(src, label) {
  el.preview.onload = () => {
    const w = el.preview.naturalWidth, h = el.preview.naturalHeight;
    el.inputInfo.dataset.label = label;
    el.inputInfo.textContent = `${label} · ${w}×${h} → ${scaled(w)}×${scaled(h)}`;
  };
  el.preview.onerror = () => {
    el.preview.hidden = true; // no broken-image icon: the line below says it
    el.dropHint.hidden = false;
    el.inputInfo.textContent = `${label} · no preview (the server fetches it itself)`;
  };
  el.preview.src = src;
  el.preview.hidden = false;
  el.dropHint.hidden = true;
  el.inputInfo.textContent = label;
}

el.file.addEventListener("change", () => pickFile(el.file.files[0]));
el.url.addEventListener("change", () => pickUrl(el.url.value.trim()));
el.drop.addEventListener("keydown", (e) => {
  if (e.key === "Enter" || e.key === " ") {
    e.preventDefault();
    el.file.click();
  }
});
for (const type of ["dragenter", "dragover"]) {
  el.drop.addEventListener(type, (e) => {
    e.preventDefault();
    el.drop.classList.add("over");
  });
}
el.drop.addEventListener("dragleave", () => el.drop.classList.remove("over"));
el.drop.addEventListener("drop", (e) => {
  e.preventDefault();
  el.drop.classList.remove("over");
  const file = e.dataTransfer.files[0];
  if (file) return pickFile(file);
  const text = e.dataTransfer.getData("text/uri-list") || e.dataTransfer.getData("text/plain");
  if (text) {
    el.url.value = text.trim().split("\n")[0];
    pickUrl(el.url.value);
  }
});
document.addEventListener("paste", (e) => {
  const file = [...(e.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
  if (file) {
    e.preventDefault();
    pickFile(file);
    return;
  }
  // A URL pasted anywhere but a text field becomes the image URL.
  const text = (e.clipboardData?.getData("text/plain") || "").trim();
  const inField = e.target instanceof HTMLInputElement || e.target instanceof HTMLTextAreaElement;
  if (!inField && /^(https?:\/\/|data:image\/)\S+$/i.test(text)) {
    e.preventDefault();
    el.url.value = text;
    pickUrl(text);
  }
});

// --- running ----------------------------------------------------------------------------------

function buildInput(imageUrl) {
  const input = {
    image_url: imageUrl,
    checkpoint: el.checkpoint.value,
    overlapping_tiles: el.overlap.checked,
  };
  if (el.seed.value !== "") input.seed = Number(el.seed.value);
  if (el.scale.value !== "" && Number(el.scale.value) !== 4) input.upscale_factor = Number(el.scale.value);
  if (el.format.value !== "png") input.output_format = el.format.value;
  return input;
}

el.form.addEventListener("submit", async (e) => {
  e.preventDefault();
  if (state.busy) return;
  const url = el.url.value.trim();
  if (!state.file && !url) {
    setPhase("failed", "Pick an image or give its URL first.");
    return;
  }
  if (el.seed.value !== "" && !(Number.isInteger(Number(el.seed.value)) && Number(el.seed.value) >= 0)) {
    setPhase("failed", "The seed must be a whole number ≥ 0.");
    return;
  }
  begin();
  const signal = state.controller.signal;
  try {
    let imageUrl = url;
    let preview = url;
    if (state.file) {
      if (state.uploaded?.file !== state.file) {
        setPhase("uploading", `Uploading ${formatBytes(state.file.size)}…`);
        state.uploaded = { file: state.file, url: await api.upload(state.file, { signal }) };
      }
      imageUrl = state.uploaded.url;
      preview = state.uploaded.url;
    }
    const input = buildInput(imageUrl);
    state.request = input;
    state.response = null;
    renderCode();
    setPhase("submitting", "Submitting…");
    const queued = await api.submit(input, { signal });
    state.requestId = queued.request_id;
    if (state.cancelRequested) api.cancel(queued.request_id).catch(() => {});
    state.response = queued;
    renderCode();
    history.put({ id: queued.request_id, at: Date.now(), input, preview, outcome: "running" });
    renderHistory();
    await follow(queued.request_id, state.objectUrl && state.file ? state.objectUrl : preview);
  } catch (err) {
    fail(err);
  } finally {
    finish();
  }
});

/** Follows a submitted request to its end and shows the outcome. */
async function follow(id, beforeUrl, reopened = false) {
  state.requestId = id;
  el.cancel.disabled = false;
  const onRetry = (n) => setPhase("reconnecting", `Reconnecting to the server… (${n})`);
  await api.watch(id, onStatus, { signal: state.controller.signal, onRetry });
  el.cancel.disabled = true;
  setPhase("fetching", "Fetching the result…");
  try {
    const output = await api.result(id, { signal: state.controller.signal });
    state.response = output;
    renderCode();
    const image = { ...output.image, url: reachable(output.image.url) };
    await compare.show(reachable(beforeUrl), image.url, image.width, image.height);
    el.download.href = image.url;
    el.download.download = image.file_name || "upscaled.png";
    el.download.hidden = false;
    el.resultInfo.textContent = describeOutput(output);
    history.put({ id, outcome: "ok", image: pick(image, ["url", "width", "height", "file_name"]) });
    if (!el.progress.hidden) el.progress.value = el.progress.max;
    setPhase("done", reopened ? "Done" : `Done in ${seconds(Date.now() - state.startedAt)}`);
  } catch (err) {
    if (!(err instanceof api.ApiError)) throw err;
    state.response = err.body;
    renderCode();
    const cancelled = (err.errorType === "client_cancelled" || err.errorType === "cancelled") || state.cancelRequested;
    history.put({ id, outcome: cancelled ? "cancelled" : "error", error: err.message });
    if (cancelled) setPhase("cancelled", "Cancelled");
    else setPhase("failed", `Failed: ${err.message}`);
  } finally {
    renderHistory();
  }
}

function onStatus(s) {
  if (s.status === "IN_QUEUE") {
    const pos = s.queue_position ?? 0;
    setPhase("queued", pos > 0 ? `In queue · position ${pos}` : "In queue · next in line");
  } else if (s.status === "IN_PROGRESS") {
    const tiles = api.tileProgress(s.logs);
    if (tiles && tiles.total > 0) {
      el.progress.max = tiles.total;
      el.progress.value = tiles.done;
      el.progress.hidden = false;
      setPhase("running", `Upscaling · tiles ${tiles.done}/${tiles.total}`);
    } else {
      setPhase("running", "Upscaling…");
    }
  }
  if (Array.isArray(s.logs) && s.logs.length) {
    el.logsBox.hidden = false;
    el.logs.textContent = s.logs.map((l) => `${l.timestamp?.slice(11, 19) ?? ""} ${l.message}`).join("\n");
    el.logs.scrollTop = el.logs.scrollHeight;
  }
}

el.cancel.addEventListener("click", async () => {
  if (!state.busy) return;
  state.cancelRequested = true;
  if (!state.requestId) {
    // Uploading: stop it. Submitting: the server may be queueing it right now, so let the
    // submit answer and cancel the request it names.
    if (el.status.dataset.phase === "uploading") state.controller.abort();
    else setPhase(el.status.dataset.phase, "Cancelling…");
    return;
  }
  el.cancel.disabled = true;
  setPhase(el.status.dataset.phase, "Cancelling…");
  try {
    await api.cancel(state.requestId);
  } catch (err) {
    // ALREADY_COMPLETED: the stream brings the outcome anyway.
    if (!(err instanceof api.ApiError && err.status === 400)) fail(err);
  }
});

function begin() {
  state.busy = true;
  state.cancelRequested = false;
  state.requestId = null;
  state.controller = new AbortController();
  el.cancel.disabled = false;
  state.startedAt = Date.now();
  el.run.disabled = true;
  el.progress.hidden = true;
  el.progress.value = 0;
  el.logs.textContent = "";
  el.logsBox.hidden = true;
  el.download.hidden = true;
  el.resultInfo.textContent = "";
  compare.clear();
  clearInterval(state.timer);
  state.timer = setInterval(tick, 200);
}

function finish() {
  state.busy = false;
  el.run.disabled = false;
  el.cancel.disabled = true;
  clearInterval(state.timer);
  tick();
}

function fail(err) {
  if (err && err.name === "AbortError") return setPhase("cancelled", "Stopped");
  if (err instanceof api.ApiError) {
    state.response = err.body;
    renderCode();
    if (err.status === 401 || err.status === 403) showAccess(err.message);
  }
  setPhase("failed", `Failed: ${err && err.message ? err.message : err}`);
}

function tick() {
  el.elapsed.textContent = state.startedAt ? seconds(Date.now() - state.startedAt) : "";
}

function setPhase(phase, text) {
  el.status.dataset.phase = phase;
  el.phase.textContent = text;
  // The empty viewer says what is happening, where the result is going to appear.
  el.viewerEmpty.textContent = state.busy ? text : IDLE_VIEWER_TEXT;
}

// --- code tabs --------------------------------------------------------------------------------

const tabs = document.querySelectorAll("[role=tab]");
tabs.forEach((t) =>
  t.addEventListener("click", () => {
    state.tab = t.dataset.tab;
    tabs.forEach((b) => b.setAttribute("aria-selected", String(b === t)));
    renderCode();
  }),
);

function renderCode() {
  let text;
  if (state.tab === "request") {
    text = state.request ? JSON.stringify(state.request, null, 2) : "// Run a request to see it here.";
  } else if (state.tab === "response") {
    text = state.response ? JSON.stringify(state.response, null, 2) : "// No response yet.";
  } else {
    const example = { image_url: "https://example.com/photo.png", checkpoint: el.checkpoint.value };
    const input = state.request || example;
    text = snippets(input, location.origin)[state.tab];
  }
  el.code.textContent = text;
}

el.copy.addEventListener("click", async () => {
  const text = el.code.textContent;
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // Clipboard API needs a secure context; fall back to selecting the text.
    const range = document.createRange();
    range.selectNodeContents(el.code);
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    document.execCommand("copy");
  }
  el.copy.textContent = "Copied";
  setTimeout(() => (el.copy.textContent = "Copy"), 1200);
});

// --- history ----------------------------------------------------------------------------------

function renderHistory() {
  const items = history.load();
  el.history.replaceChildren(
    ...items.map((item) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = `history-item outcome-${item.outcome}`;
      button.dataset.id = item.id;
      // The input makes the thumbnail: 1/16 of the output's pixels, same picture.
      const thumb = /^https?:/.test(item.preview || "") ? item.preview : item.image?.url;
      if (thumb) {
        const img = document.createElement("img");
        img.src = reachable(thumb);
        img.decoding = "async";
        img.alt = "";
        img.loading = "lazy";
        img.onerror = () => img.remove();
        button.append(img);
      }
      const text = document.createElement("span");
      const when = new Date(item.at).toLocaleString();
      const size = item.image ? ` · ${item.image.width}×${item.image.height}` : "";
      text.innerHTML = `<strong></strong><small></small>`;
      text.firstChild.textContent = `${item.input?.checkpoint ?? ""} · ${label(item.outcome)}${size}`;
      text.lastChild.textContent = when;
      button.append(text);
      button.addEventListener("click", () => reopen(item.id));
      li.append(button);
      return li;
    }),
  );
}

async function reopen(id) {
  if (state.busy) return;
  const item = history.get(id);
  if (!item) return;
  state.request = item.input;
  state.response = null;
  restoreForm(item);
  renderCode();
  begin();
  state.startedAt = 0; // no stopwatch: this is a look back, not a run
  try {
    await follow(id, item.preview && !item.preview.startsWith("data:") ? item.preview : "", true);
  } catch (err) {
    if (err instanceof api.ApiError && err.status === 404) {
      history.put({ id, outcome: "expired" });
      renderHistory();
      setPhase("failed", "That request is gone from the server (expired or another key's).");
    } else {
      fail(err);
    }
  } finally {
    finish();
  }
}

/** Puts a past request's settings and input back in the form, so it can be run again. */
function restoreForm(item) {
  const input = item.input || {};
  el.checkpoint.value = input.checkpoint || "v1";
  el.seed.value = input.seed ?? "";
  el.format.value = input.output_format || "png";
  el.overlap.checked = Boolean(input.overlapping_tiles);
  el.scale.value = input.upscale_factor ?? input.upscaling_factor ?? 4;
  if (item.preview && !item.preview.startsWith("data:")) {
    el.url.value = item.preview;
    pickUrl(item.preview);
  }
}

el.historyClear.addEventListener("click", () => {
  history.clear();
  renderHistory();
});

// --- access -----------------------------------------------------------------------------------

function showAccess(reason) {
  el.access.hidden = false;
  el.accessDetail.textContent = reason ? `(${reason})` : "";
}

async function checkAccess() {
  let access;
  try {
    access = await api.probeAccess();
  } catch (err) {
    showAccess(err.message);
    return;
  }
  if (!access.access) {
    showAccess("");
    el.run.disabled = true;
  } else if (access.auth) {
    el.session.textContent = `Signed in · key ${access.key_id}`;
    el.session.hidden = false;
    el.logout.hidden = false;
  }
}

el.logout.addEventListener("click", async () => {
  await api.signOut();
  location.reload();
});

// --- formatting -------------------------------------------------------------------------------

function describeOutput(output) {
  const i = output.image;
  const parts = [`${i.width}×${i.height}`, (i.content_type || "").replace("image/", "").toUpperCase()];
  if (i.file_size) parts.push(formatBytes(i.file_size));
  const t = output.timings || {};
  if (t.inference != null) parts.push(`inference ${t.inference.toFixed(2)} s`);
  const total = Object.values(t).reduce((a, b) => a + (typeof b === "number" ? b : 0), 0);
  if (total) parts.push(`server ${total.toFixed(2)} s`);
  return parts.filter(Boolean).join(" · ");
}

function label(outcome) {
  return { ok: "done", error: "failed", cancelled: "cancelled", running: "in progress", expired: "expired" }[outcome] || outcome;
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`;
const pick = (o, keys) => Object.fromEntries(keys.map((k) => [k, o[k]]));

/** The checkpoint menu holds what this server serves (the page ships with v1 and v2). */
async function listCheckpoints() {
  let names;
  try {
    names = await api.servedCheckpoints();
  } catch {
    return; // the page's own v1 and v2 stay
  }
  if (!names.length) return;
  const chosen = el.checkpoint.value;
  el.checkpoint.replaceChildren(
    ...names.map((name) => Object.assign(document.createElement("option"), { value: name, textContent: name })),
  );
  el.checkpoint.value = names.includes(chosen) ? chosen : names[0];
  renderCode();
}

el.checkpoint.addEventListener("change", renderCode); // the example before any request

renderCode();
renderHistory();
checkAccess();
listCheckpoints();
