// Copy-ready code for the request just made, for this server: our Python client, fal's Python
// client, fal's JS client, and curl. Keys are placeholders: the page never sees one.

import { ENDPOINT } from "./api.js";

const KEY = "KEY_ID:KEY_SECRET";
const LONG_DATA_URI = 200;

/** {python, fal_client, js, curl} for `input`, as sent to the server at `origin`. */
export function snippets(input, origin) {
  // A long data: URI makes unreadable code: read the image from a local file instead.
  const local = isLongDataUri(input.image_url) ? "input.png" : null;
  return {
    python: python(input, origin, local),
    fal_client: falClient(input, origin, local),
    js: js(input, origin, local),
    curl: curl(input, origin, local),
  };
}

function extension(format) {
  return format === "jpeg" ? "jpg" : format || "png";
}

function isLongDataUri(url) {
  return typeof url === "string" && url.startsWith("data:") && url.length > LONG_DATA_URI;
}

function python(input, origin, local) {
  const args = { ...input };
  const pre = [];
  if (local) args.image_url = raw('Path("input.png")');
  if (local) pre.push("from pathlib import Path  # a local path in arguments is uploaded");
  return [
    ...pre,
    "from superscale.client import SyncClient",
    "",
    `# Or set SUPERSCALE_URL and FAL_KEY and use superscale.client.subscribe(...)`,
    `client = SyncClient(base_url=${pyStr(origin)}, key=${pyStr(KEY)})`,
    "result = client.subscribe(",
    `    ${pyStr(ENDPOINT)},`,
    `    arguments=${py(args, 1)},`,
    "    with_logs=True,",
    "    on_queue_update=print,",
    ")",
    "print(result.image.url, result.image.width, result.image.height)",
    `result.image.download(${pyStr(`output.${extension(input.output_format)}`)})`,
    "",
  ].join("\n");
}

function falClient(input, origin, local) {
  const args = { ...input };
  if (local) args.image_url = raw('client.upload_file("input.png")');
  return [
    "import fal_client",
    "import fal_client.client as fal_urls",
    "",
    "# Point fal's client at this server (set these before creating the client).",
    `fal_urls.RUN_URL_FORMAT = ${pyStr(`${origin}/`)}`,
    `fal_urls.QUEUE_URL_FORMAT = ${pyStr(`${origin}/queue/`)}`,
    `fal_urls.REST_URL = ${pyStr(origin)}`,
    `fal_urls.CDN_URL = ${pyStr(origin)}`,
    "",
    `client = fal_client.SyncClient(key=${pyStr(KEY)})`,
    "result = client.subscribe(",
    `    ${pyStr(ENDPOINT)},`,
    `    arguments=${py(args, 1)},`,
    "    with_logs=True,",
    "    on_queue_update=print,",
    ")",
    'print(result["image"]["url"])',
    "",
  ].join("\n");
}

function js(input, origin, local) {
  const args = { ...input };
  if (local) args.image_url = raw('await openAsBlob("input.png")');
  return [
    'import { fal } from "@fal-ai/client";',
    ...(local ? ['import { openAsBlob } from "node:fs";'] : []),
    "",
    `const HOST = ${JSON.stringify(origin)};`,
    "// In Node, with a key. In a browser use the proxy instead (no key):",
    "//   fal.config({ proxyUrl: `${HOST}/api/fal/proxy` });",
    "fal.config({",
    `  credentials: ${JSON.stringify(KEY)},`,
    "  requestMiddleware: async (request) => ({",
    "    ...request,",
    "    url: request.url",
    '      .replace("https://queue.fal.run/", `${HOST}/queue/`)',
    "      .replace(/^https:\\/\\/rest(\\.alpha)?\\.fal\\.ai\\//, `${HOST}/`)",
    '      .replace("https://fal.run/", `${HOST}/`),',
    "  }),",
    "});",
    "",
    `const result = await fal.subscribe(${JSON.stringify(ENDPOINT)}, {`,
    `  input: ${jsLiteral(args, 1)},`,
    "  logs: true,",
    "  onQueueUpdate: (update) => console.log(update.status, update.logs?.at(-1)?.message ?? \"\"),",
    "});",
    "console.log(result.data.image.url);",
    "",
  ].join("\n");
}

function curl(input, origin, local) {
  const auth = `-H "Authorization: Key $FAL_KEY"`;
  const body = { ...input };
  const lines = [`HOST=${shQuote(origin)}`, `FAL_KEY=${shQuote(KEY)}`, ""];
  let data;
  if (local) {
    lines.push('IMAGE="data:image/png;base64,$(base64 -w0 input.png)"');
    body.image_url = "__IMAGE__";
    data = `"${JSON.stringify(body).replace(/"/g, '\\"').replace('__IMAGE__', "$IMAGE")}"`;
  } else {
    data = shQuote(JSON.stringify(body));
  }
  lines.push(
    "# Submit to the queue; answers a request_id.",
    `ID=$(curl -s -X POST "$HOST/queue/${ENDPOINT}" \\`,
    `  ${auth} -H "Content-Type: application/json" \\`,
    `  -d ${data} \\`,
    `  | python3 -c 'import json,sys; print(json.load(sys.stdin)["request_id"])')`,
    "",
    "# Live status (server-sent events) until COMPLETED:",
    `curl -sN "$HOST/queue/${ENDPOINT}/requests/$ID/status/stream?logs=1" \\`,
    `  ${auth}`,
    "",
    "# The result:",
    `curl -s "$HOST/queue/${ENDPOINT}/requests/$ID" ${auth}`,
    "",
    "# Or in one blocking call:",
    `# curl -s -X POST "$HOST/${ENDPOINT}" ${auth} \\`,
    `#   -H "Content-Type: application/json" -d ...`,
    "",
  );
  return lines.join("\n");
}

// --- literals ---------------------------------------------------------------------------------

const RAW = Symbol("raw");
const raw = (code) => ({ [RAW]: code });

function pyStr(s) {
  return JSON.stringify(s); // a JSON string is a valid Python string literal for our values
}

function py(value, level) {
  if (value && value[RAW]) return value[RAW];
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "string") return pyStr(value);
  if (typeof value === "number") return String(value);
  const pad = "    ".repeat(level + 1);
  const end = "    ".repeat(level);
  if (Array.isArray(value)) {
    return `[\n${value.map((v) => `${pad}${py(v, level + 1)},`).join("\n")}\n${end}]`;
  }
  const items = Object.entries(value).map(([k, v]) => `${pad}${pyStr(k)}: ${py(v, level + 1)},`);
  return `{\n${items.join("\n")}\n${end}}`;
}

function jsLiteral(value, level) {
  if (value && value[RAW]) return value[RAW];
  if (value === null || typeof value !== "object") return JSON.stringify(value ?? null);
  const pad = "  ".repeat(level + 1);
  const end = "  ".repeat(level);
  const items = Object.entries(value).map(([k, v]) => {
    const key = /^[A-Za-z_$][\w$]*$/.test(k) ? k : JSON.stringify(k);
    return `${pad}${key}: ${jsLiteral(v, level + 1)},`;
  });
  return `{\n${items.join("\n")}\n${end}}`;
}

function shQuote(s) {
  return `'${String(s).replace(/'/g, `'\\''`)}'`;
}
