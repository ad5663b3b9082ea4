// The HTTP side of the page: the API key, JSON calls and the answer stream's URL.
//
// The key lives in localStorage. fetch() sends it as `Authorization: Bearer`;
// EventSource cannot send headers, so the answer stream carries it as `?key=`.

const KEY_STORAGE = "rag.apiKey";
let sessionKey = storedKey();

export class HttpError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

export function storedKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return ""; // storage disabled (private mode, policy): ask again next time
  }
}

export function saveKey(key) {
  try {
    localStorage.setItem(KEY_STORAGE, key);
  } catch {
    // Still used for this page's life; see storedKey.
  }
  sessionKey = key;
}

export function forgetKey() {
  sessionKey = "";
  try {
    localStorage.removeItem(KEY_STORAGE);
  } catch {
    // nothing stored
  }
}

export function currentKey() {
  return sessionKey;
}

function authHeaders() {
  return sessionKey ? { Authorization: `Bearer ${sessionKey}` } : {};
}

/** GET a JSON resource; non-2xx answers raise HttpError with the API's message. */
export async function getJson(path, { signal } = {}) {
  const response = await fetch(path, {
    headers: { Accept: "application/json", ...authHeaders() },
    signal,
  });
  if (!response.ok) throw await httpError(response);
  return response.json();
}

async function httpError(response) {
  let code = "http_error";
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // not JSON: keep the status line
  }
  const retryAfter = Number.parseInt(response.headers.get("Retry-After") || "", 10);
  return new HttpError(response.status, code, message, Number.isFinite(retryAfter) ? retryAfter : null);
}

/** The `GET /v1/ask` URL for EventSource: question, optional top_k, history and key. */
export function askUrl(question, { history = [], topK = null } = {}) {
  const params = new URLSearchParams({ q: question });
  if (topK) params.set("top_k", String(topK));
  if (history.length) params.set("history", JSON.stringify(history));
  if (sessionKey) params.set("key", sessionKey);
  return `/v1/ask?${params}`;
}

/**
 * Why an answer stream failed before its first event. EventSource reports only "error",
 * never the status, so the same request is made once with fetch and dropped as soon as
 * its headers arrive: a 4xx costs nothing, and a 200 (the failure was transient) is
 * aborted before the answer is generated past its first events.
 */
export async function diagnose(url) {
  const controller = new AbortController();
  try {
    const response = await fetch(url, {
      headers: { Accept: "text/event-stream", ...authHeaders() },
      signal: controller.signal,
    });
    if (response.ok) return null;
    return await httpError(response);
  } catch {
    return new HttpError(0, "unreachable", "The server cannot be reached.", null);
  } finally {
    controller.abort();
  }
}
