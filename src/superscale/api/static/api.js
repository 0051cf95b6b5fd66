// Talks to the API the way fal's browser clients do: every call goes through the server's
// proxy route with the fal URL it stands for in `x-fal-target-url`. The server maps that URL to
// its own route and adds its identity, so no key ever reaches this page.

export const ENDPOINT = "fal-ai/aura-sr";
const PROXY = "/api/fal/proxy";
const QUEUE = "https://queue.fal.run";
const REST = "https://rest.alpha.fal.ai";

/** An HTTP error answer, with fal's `detail` made readable. */
export class ApiError extends Error {
  constructor(status, body, fallback) {
    super(describe(body) || fallback || `HTTP ${status}`);
    this.status = status;
    this.body = body;
    this.errorType = body && typeof body === "object" ? body.error_type || null : null;
  }
}

function describe(body) {
  if (!body || typeof body !== "object") return typeof body === "string" ? body.slice(0, 300) : "";
  const detail = body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((d) => {
        const where = Array.isArray(d.loc) ? d.loc.filter((p) => p !== "body").join(".") : "";
        return where ? `${where}: ${d.msg}` : d.msg;
      })
      .join("; ");
  }
  if (typeof body.status === "string") return body.status;
  return "";
}

async function readBody(response) {
  const text = await response.text();
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return text;
  }
}

/** One proxied call; answers the parsed JSON body or throws ApiError. */
export async function call(method, target, { body, signal, accept } = {}) {
  const headers = { "x-fal-target-url": target };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (accept) headers.accept = accept;
  const response = await fetch(PROXY, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    signal,
  });
  if (!response.ok) throw new ApiError(response.status, await readBody(response));
  return { data: await readBody(response), response };
}

const requestUrl = (id) => `${QUEUE}/${ENDPOINT}/requests/${encodeURIComponent(id)}`;

/** Whether this browser may use the API: {auth, access, key_id} from the server. */
export async function probeAccess() {
  const response = await fetch("/playground/access", { credentials: "same-origin" });
  if (!response.ok) throw new ApiError(response.status, await readBody(response));
  return response.json();
}

/** The checkpoint names this server serves (its OpenAPI enum): v1, v2 and its own. */
export async function servedCheckpoints() {
  const response = await fetch("/openapi.json", { credentials: "same-origin" });
  if (!response.ok) throw new ApiError(response.status, await readBody(response));
  const doc = await response.json();
  return doc.components.schemas.AuraSrInput.properties.checkpoint.enum || [];
}

/** Ends this browser's proxy session. */
export async function signOut() {
  await fetch(`${PROXY}/session`, { method: "DELETE", credentials: "same-origin" });
}

/** Uploads a file as fal's JS client does (initiate, then PUT); answers its URL. */
export async function upload(file, { signal } = {}) {
  const { data } = await call(
    "POST",
    `${REST}/storage/upload/initiate?storage_type=fal-cdn-v3`,
    { body: { content_type: file.type || "application/octet-stream", file_name: file.name || "image" }, signal },
  );
  // The upload URL is itself the capability (signed, single use): a plain PUT, no credentials.
  const put = await fetch(data.upload_url, {
    method: "PUT",
    headers: { "content-type": file.type || "application/octet-stream" },
    body: file,
    credentials: "omit",
    signal,
  });
  if (!put.ok) throw new ApiError(put.status, await readBody(put), "upload failed");
  return data.file_url;
}

export async function submit(input, { signal } = {}) {
  return (await call("POST", `${QUEUE}/${ENDPOINT}`, { body: input, signal })).data;
}

export async function status(id, { signal } = {}) {
  return (await call("GET", `${requestUrl(id)}/status?logs=1`, { signal })).data;
}

/** The output; a failed or cancelled job throws ApiError with its status and detail. */
export async function result(id, { signal } = {}) {
  return (await call("GET", requestUrl(id), { signal })).data;
}

export async function cancel(id) {
  return (await call("PUT", `${requestUrl(id)}/cancel`)).data;
}

const RETRY_LIMIT = 60; // consecutive failed reconnects (about 4 minutes) before giving up

/** Whether a failure may pass: the server restarting, or a proxy in front of it. */
function transient(err) {
  return err instanceof TypeError || (err instanceof ApiError && [502, 503, 504].includes(err.status));
}

/**
 * Follows a request until COMPLETED, calling onStatus with every QueueStatus. Reads the SSE
 * status stream (fetch, since EventSource cannot send the target header); polls where the
 * stream is unavailable; rides out a server restart (onRetry(n) tells of each reconnect).
 */
export async function watch(id, onStatus, { signal, onRetry } = {}) {
  let useStream = true;
  let failures = 0;
  for (;;) {
    if (signal && signal.aborted) throw new DOMException("aborted", "AbortError");
    try {
      let last = null;
      if (useStream) {
        const streamed = await readStream(id, onStatus, signal);
        if (streamed === undefined) useStream = false; // not an event stream: poll
        last = streamed || null;
      }
      if (!last || last.status !== "COMPLETED") {
        last = await status(id, { signal });
        onStatus(last);
      }
      if (last.status === "COMPLETED") return last;
      failures = 0;
      if (!useStream) await sleep(500, signal);
    } catch (err) {
      if ((signal && signal.aborted) || !transient(err) || ++failures > RETRY_LIMIT) throw err;
      if (onRetry) onRetry(failures);
      await sleep(Math.min(500 * failures, 5000), signal);
    }
  }
}

async function readStream(id, onStatus, signal) {
  const { response } = await streamResponse(id, signal);
  const type = response.headers.get("content-type") || "";
  if (!type.includes("text/event-stream") || !response.body) return undefined;
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let last = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = event
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""))
        .join("\n");
      if (!data) continue;
      last = JSON.parse(data);
      onStatus(last);
      if (last.status === "COMPLETED") {
        reader.cancel().catch(() => {});
        return last;
      }
    }
  }
  return last;
}

async function streamResponse(id, signal) {
  const response = await fetch(PROXY, {
    method: "GET",
    headers: {
      "x-fal-target-url": `${requestUrl(id)}/status/stream?logs=1`,
      accept: "text/event-stream",
    },
    credentials: "same-origin",
    signal,
  });
  if (!response.ok) throw new ApiError(response.status, await readBody(response));
  return { response };
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    if (signal) {
      signal.addEventListener(
        "abort",
        () => {
          clearTimeout(timer);
          reject(new DOMException("aborted", "AbortError"));
        },
        { once: true },
      );
    }
  });
}

/** The latest `tiles done/total` a worker logged, or null. */
export function tileProgress(logs) {
  if (!Array.isArray(logs)) return null;
  for (let i = logs.length - 1; i >= 0; i--) {
    const m = /tiles\s+(\d+)\s*\/\s*(\d+)/.exec(logs[i].message || "");
    if (m) return { done: Number(m[1]), total: Number(m[2]) };
  }
  return null;
}
