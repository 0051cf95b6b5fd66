// fal's JS client (@fal-ai/client) against a superscale server: upload, subscribe (polling and
// streaming, with logs), a validation error, submit + cancel + status, and the proxy route.
// Usage: HOST=http://127.0.0.1:PORT FAL_KEY=… node fal_js_client.mjs  → one JSON line.
import { createFalClient } from "@fal-ai/client";

const HOST = process.env.HOST;
// fal's hosts are hard-coded in the client; a request middleware points them at us.
const rewrite = (url) =>
  url
    .replace("https://queue.fal.run/", `${HOST}/queue/`)
    .replace("https://fal.run/", `${HOST}/`)
    .replace(/^https:\/\/rest(\.alpha)?\.fal\.ai\//, `${HOST}/`);
const fal = createFalClient({
  credentials: process.env.FAL_KEY,
  requestMiddleware: async (req) => ({ ...req, url: rewrite(req.url) }),
});
const png = Buffer.from(process.env.PNG_BASE64, "base64");
const out = { updates: {} };

out.upload = await fal.storage.upload(new Blob([png], { type: "image/png" }));
for (const mode of ["polling", "streaming"]) {
  const updates = [];
  const res = await fal.subscribe("fal-ai/aura-sr", {
    input: { image_url: out.upload, upscale_factor: 4 },
    logs: true,
    mode,
    pollInterval: 100,
    onQueueUpdate: (u) => updates.push({ status: u.status, logs: (u.logs || []).map((l) => l.message) }),
  });
  out[mode] = { requestId: res.requestId, data: res.data };
  out.updates[mode] = updates;
}
try {
  await fal.subscribe("fal-ai/aura-sr", { input: { image_url: "data:image/png;base64,!!" } });
} catch (e) {
  out.error = { name: e.constructor.name, status: e.status, body: e.body };
}
const queued = await fal.queue.submit("fal-ai/aura-sr", { input: { image_url: out.upload } });
out.cancel = await fal.queue.cancel("fal-ai/aura-sr", { requestId: queued.request_id }).then(
  () => "ok",
  (e) => `error ${e.status}`,
);
// Queued or already running, a cancelled request ends COMPLETED (running: at the next tiles).
for (let i = 0; i < 100; i++) {
  out.afterCancel = (await fal.queue.status("fal-ai/aura-sr", { requestId: queued.request_id }))
    .status;
  if (out.afterCancel === "COMPLETED") break;
  await new Promise((resolve) => setTimeout(resolve, 100));
}

// The browser proxy route: the client configured as a browser app is, holding no key; the
// proxy session cookie (opened once with the key) is what lets it through.
const session = await fetch(`${HOST}/api/fal/proxy/session`, {
  method: "POST",
  headers: { Authorization: `Key ${process.env.FAL_KEY}` },
});
const cookie = session.headers.get("set-cookie").split(";")[0];
const viaProxy = createFalClient({
  credentials: undefined,
  proxyUrl: { url: `${HOST}/api/fal/proxy`, when: "always" },
  fetch: (url, init = {}) => fetch(url, { ...init, headers: { ...init.headers, cookie } }),
});
const proxied = await viaProxy.subscribe("fal-ai/aura-sr", {
  input: { image_url: out.upload },
  mode: "streaming",
});
out.proxy = proxied.data;
console.log(JSON.stringify(out));
