// fal's JS client submitting and polling through an outage: subscribes one request after
// another until DURATION_MS has passed, recording each request id and its output size, or the
// error its caller saw. Usage: HOST=… FAL_KEY=… PNG_BASE64=… DURATION_MS=… node fal_js_ride.mjs
import { createFalClient } from "@fal-ai/client";

const { HOST, FAL_KEY } = process.env;
const rewrite = (url) =>
  String(url)
    .replace("https://queue.fal.run/", `${HOST}/queue/`)
    .replace("https://fal.run/", `${HOST}/`)
    .replace(/^https:\/\/rest(\.alpha)?\.fal\.ai\//, `${HOST}/`);
const fal = createFalClient({
  credentials: FAL_KEY,
  requestMiddleware: async (req) => ({ ...req, url: rewrite(req.url) }),
});
const input = { image_url: `data:image/png;base64,${process.env.PNG_BASE64}` };
const until = Date.now() + Number(process.env.DURATION_MS);
const done = [];
const errors = [];
while (Date.now() < until) {
  try {
    const res = await fal.subscribe("fal-ai/aura-sr", { input, pollInterval: 200 });
    done.push({ requestId: res.requestId, width: res.data.image.width });
  } catch (e) {
    errors.push({ name: e.constructor.name, status: e.status, message: String(e.message) });
  }
}
console.log(JSON.stringify({ done, errors }));
