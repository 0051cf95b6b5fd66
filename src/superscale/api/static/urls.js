// URLs the server hands out, made reachable from where this page was opened.

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|localhost|\[::1\])$/;

/**
 * A server started without --public-url names its files on 127.0.0.1, which a phone on the
 * LAN cannot reach: such URLs are loaded from the address this page came from instead.
 * `here` is the page's location (a parameter so that it can be tested).
 */
export function reachable(url, here = location) {
  if (!url || LOOPBACK.test(here.hostname)) return url;
  try {
    const parsed = new URL(url);
    if (!LOOPBACK.test(parsed.hostname)) return url;
    return here.origin + parsed.pathname + parsed.search;
  } catch {
    return url;
  }
}
