// The second round of fal's protocol, through fal's JS clients against a superscale server:
// client-mode streams with app tokens, output streams (`stream()`), GET runs and submits, the
// proxy with a server-side key, and platform headers — in `@fal-ai/client` 1.10.1 and, where
// it has the flow, `@fal-ai/serverless-client` 0.15.0.
// Usage: HOST=http://127.0.0.1:PORT FAL_KEY=… PNG_BASE64=… node fal_js_protocol.mjs → one JSON line.
import { createFalClient } from "@fal-ai/client";
import * as legacy from "@fal-ai/serverless-client";

const { HOST, FAL_KEY } = process.env;
const APP = "fal-ai/aura-sr";
// fal's hosts are hard-coded in the clients: a request middleware points API calls at us, and
// a fetch wrapper does the same for the client-mode streams, which call fetch directly.
const rewrite = (url) =>
  String(url)
    .replace("https://queue.fal.run/", `${HOST}/queue/`)
    .replace("https://fal.run/", `${HOST}/`)
    .replace(/^https:\/\/rest(\.alpha)?\.fal\.ai\//, `${HOST}/`);
const requestMiddleware = async (req) => ({ ...req, url: rewrite(req.url) });
const rewritingFetch = (url, init) => fetch(rewrite(url), init);
const input = { image_url: `data:image/png;base64,${process.env.PNG_BASE64}` };
const size = (data) => data && data.image && [data.image.width, data.image.height];
const failure = (e) => ({ name: e.constructor.name, status: e.status, body: e.body });
const out = {};

async function drain(stream) {
  const events = [];
  for await (const event of stream) events.push(event);
  return { events, done: await stream.done(), requestId: stream.requestId };
}

const fal = createFalClient({ credentials: FAL_KEY, requestMiddleware, fetch: rewritingFetch });

// Client mode: the client asks /tokens/ for an app token, then streams with ?fal_jwt_token=.
const updates = [];
const viaToken = await fal.subscribe(APP, {
  input,
  mode: "streaming",
  connectionMode: "client",
  logs: true,
  onQueueUpdate: (u) => updates.push(u.status),
});
out.clientMode = { size: size(viaToken.data), last: updates.at(-1), requestId: viaToken.requestId };
const queued = await fal.queue.submit(APP, { input });
const statusStream = await fal.queue.streamStatus(APP, {
  requestId: queued.request_id,
  connectionMode: "client",
  logs: true,
});
out.streamStatus = (await statusStream.done()).status;

// Output streams: progress events, then the output as the last one.
for (const connectionMode of ["server", "client"]) {
  const { events, done, requestId } = await drain(await fal.stream(APP, { input, connectionMode }));
  out[`stream_${connectionMode}`] = {
    statuses: events.slice(0, -1).map((e) => e.status),
    last: size(events.at(-1)),
    done: size(done),
    requestId,
  };
}

// method: "get" puts the input in the query string.
const ran = await fal.run(APP, { input: { ...input, upscale_factor: 4 }, method: "get" });
out.getRun = { size: size(ran.data), requestId: ran.requestId };
const gotQueued = await fal.queue.submit(APP, { input, method: "get" });
const gotResult = await fal.subscribe(APP, { input, method: "get", pollInterval: 100 });
out.getSubmit = { requestId: gotQueued.request_id, size: size(gotResult.data) };

// Platform headers through the client's `headers` option: an output read once, then gone.
const unstored = await fal.queue.submit(APP, { input, headers: { "X-Fal-Store-IO": "0" } });
await fal.queue.subscribeToStatus(APP, { requestId: unstored.request_id, pollInterval: 100 });
out.storeIo = { first: size((await fal.queue.result(APP, { requestId: unstored.request_id })).data) };
out.storeIo.second = await fal.queue
  .result(APP, { requestId: unstored.request_id })
  .then(() => "read again", (e) => failure(e));

// A Node app with its own key and proxyUrl: no URL rewriting at all.
const proxied = createFalClient({
  credentials: FAL_KEY,
  proxyUrl: { url: `${HOST}/api/fal/proxy`, when: "always" },
});
const uploaded = await proxied.storage.upload(
  new Blob([Buffer.from(process.env.PNG_BASE64, "base64")], { type: "image/png" }),
);
const viaProxy = await proxied.subscribe(APP, { input: { image_url: uploaded }, pollInterval: 100 });
const proxiedStream = await drain(await proxied.stream(APP, { input: { image_url: uploaded } }));
out.proxyWithKey = { size: size(viaProxy.data), uploaded, stream: size(proxiedStream.done) };
const wrongKey = createFalClient({
  credentials: "nobody:nothing",
  proxyUrl: { url: `${HOST}/api/fal/proxy`, when: "always" },
});
out.proxyWrongKey = await wrongKey.queue.submit(APP, { input }).then(() => "accepted", failure);

// The same flows in the older @fal-ai/serverless-client, where it has them.
legacy.config({ credentials: FAL_KEY, requestMiddleware, fetch: rewritingFetch });
const legacyUpdates = [];
const legacyStreamed = await legacy.subscribe(APP, {
  input,
  mode: "streaming",
  logs: true,
  onQueueUpdate: (u) => legacyUpdates.push(u.status),
});
out.legacy = { subscribe: size(legacyStreamed), last: legacyUpdates.at(-1) };
const legacyClient = await legacy.subscribe(APP, { input, mode: "streaming", connectionMode: "client" });
out.legacy.clientMode = size(legacyClient);
out.legacy.stream = size((await drain(await legacy.stream(APP, { input }))).done);
out.legacy.getRun = size(await legacy.run(APP, { input, method: "get" }));

console.log(JSON.stringify(out));
