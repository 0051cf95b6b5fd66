// This browser's recent requests, kept in localStorage: ids, inputs and outcomes, never images
// (data: URIs are shortened) — the images stay on the server for as long as it keeps them.

const KEY = "superscale.playground.history";
const LIMIT = 30;

export function load() {
  try {
    const items = JSON.parse(localStorage.getItem(KEY) || "[]");
    return Array.isArray(items) ? items : [];
  } catch {
    return [];
  }
}

function save(items) {
  try {
    localStorage.setItem(KEY, JSON.stringify(items.slice(0, LIMIT)));
  } catch {
    // Storage full or disabled (private mode): history is a convenience, not a requirement.
  }
}

/** Adds or updates the entry with `entry.id`, newest first. */
export function put(entry) {
  const items = load();
  const i = items.findIndex((e) => e.id === entry.id);
  if (i >= 0) {
    items[i] = { ...items[i], ...entry };
  } else {
    items.unshift({ ...entry, input: shorten(entry.input) });
  }
  save(items);
  return items;
}

export function get(id) {
  return load().find((e) => e.id === id) || null;
}

export function clear() {
  save([]);
}

function shorten(input) {
  if (!input || typeof input.image_url !== "string" || !input.image_url.startsWith("data:")) {
    return input;
  }
  const url = input.image_url;
  return { ...input, image_url: url.length > 120 ? `${url.slice(0, 60)}…` : url };
}
