// The cited-passage panel: document title, page, heading path, and the passage with
// the quoted text highlighted. A passage read by OCR says so, with the recogniser's
// confidence: its wording may hold misreadings the document itself does not. The passage comes from `GET /v1/chunks/{id}`; when that
// cannot be had, the snippet the `sources` event carried stands in for it.

import { getJson } from "./api.js";
import { el } from "./dom.js";
import { pageLabel, reflow } from "./answer.js";

export class PassagePanel {
  /**
   * @param {HTMLDialogElement} dialog
   * @param {{onUnauthorized: () => Promise<boolean>}} hooks
   */
  constructor(dialog, hooks) {
    this.dialog = dialog;
    this.hooks = hooks;
    this.cache = new Map();
    this.opener = null;
    this.request = 0;
    this.$ = (id) => dialog.querySelector(`#${id}`);
    this.$("passage-close").addEventListener("click", () => dialog.close());
    // A click on the backdrop (outside the panel's box) closes it, as Esc does.
    dialog.addEventListener("click", (event) => {
      if (event.target !== dialog) return;
      const box = dialog.getBoundingClientRect();
      const inside =
        event.clientX >= box.left && event.clientX <= box.right &&
        event.clientY >= box.top && event.clientY <= box.bottom;
      if (!inside) dialog.close();
    });
    dialog.addEventListener("close", () => {
      if (this.opener && this.opener.isConnected) this.opener.focus();
      this.opener = null;
    });
  }

  /** Show source ``n`` of an answer, highlighting ``quotes``; focus returns to ``opener``. */
  async open(source, quotes, opener) {
    const request = ++this.request;
    this.opener = opener;
    this.show(
      {
        title: source.title || source.document,
        document: source.document,
        page: source.page,
        page_end: null,
        heading_path: [],
        text: source.snippet || "",
        recognised: Boolean(source.recognised),
        confidence: source.confidence ?? null,
      },
      source.n,
      quotes,
    );
    this.$("passage-text").setAttribute("aria-busy", "true");
    if (!this.dialog.open) this.dialog.showModal();
    this.$("passage-close").focus();
    const chunk = await this.load(source.chunk_id);
    if (request !== this.request || !this.dialog.open) return; // another passage was opened
    this.$("passage-text").setAttribute("aria-busy", "false");
    if (chunk) {
      this.show(chunk, source.n, quotes);
    } else {
      this.note("Showing the excerpt sent with the answer: the full passage could not be loaded.");
    }
  }

  async load(chunkId) {
    if (this.cache.has(chunkId)) return this.cache.get(chunkId);
    try {
      const chunk = normalise(await getJson(`/v1/chunks/${encodeURIComponent(chunkId)}`));
      this.cache.set(chunkId, chunk);
      return chunk;
    } catch (error) {
      if (error.status === 401 && (await this.hooks.onUnauthorized())) {
        return this.load(chunkId);
      }
      return null;
    }
  }

  show(chunk, n, quotes) {
    this.$("passage-n").textContent = `Source ${n}`;
    this.$("passage-title").textContent = chunk.title;
    this.$("passage-meta").textContent = [
      chunk.document,
      pageLabel(chunk.page, chunk.page_end),
      scanLabel(chunk.recognised, chunk.confidence),
    ]
      .filter(Boolean)
      .join(" · ");
    const path = this.$("passage-path");
    path.textContent = chunk.heading_path.join(" › ");
    path.hidden = !chunk.heading_path.length;
    const text = this.$("passage-text");
    // reflow keeps every character's position, so quotes are found in it as in the raw text.
    text.replaceChildren(...highlighted(reflow(chunk.text), quotes));
    this.note("");
    const mark = text.querySelector("mark");
    if (mark) mark.scrollIntoView({ block: "center" });
    else text.scrollTop = 0;
  }

  note(message) {
    const note = this.$("passage-note");
    note.textContent = message;
    note.hidden = !message;
  }
}

/** The chunk endpoint's answer in the shape the panel shows, whatever its nesting. */
function normalise(chunk) {
  const doc = chunk.document && typeof chunk.document === "object" ? chunk.document : {};
  const path =
    typeof chunk.document === "string"
      ? chunk.document
      : doc.path || doc.source || chunk.path || chunk.source || "";
  return {
    title: chunk.title || doc.title || path,
    document: path,
    page: chunk.page ?? chunk.page_start ?? null,
    page_end: chunk.page_end ?? null,
    heading_path: Array.isArray(chunk.heading_path) ? chunk.heading_path : [],
    text: chunk.text || "",
    recognised: Boolean(chunk.recognised),
    confidence: chunk.confidence ?? null,
  };
}

/** "recognised from a scan (96% confidence)" for OCR'd text; "" for a text layer's. */
export function scanLabel(recognised, confidence) {
  if (!recognised) return "";
  const sure = typeof confidence === "number" ? ` (${Math.round(confidence * 100)}% confidence)` : "";
  return `recognised from a scan${sure}`;
}

/** ``text`` as nodes, each quote found in it wrapped in <mark>. */
function highlighted(text, quotes) {
  const spans = quotes
    .map((quote) => locate(text, quote) || locateStart(text, quote))
    .filter(Boolean)
    .sort((a, b) => a[0] - b[0]);
  const nodes = [];
  let at = 0;
  for (const [start, end] of spans) {
    if (start < at) continue; // overlaps the previous quote
    nodes.push(text.slice(at, start), el("mark", {}, text.slice(start, end)));
    at = end;
  }
  nodes.push(text.slice(at));
  return nodes.filter((node) => node !== "");
}

/** Where ``quote`` is in ``text``: exactly, else ignoring case and runs of whitespace. */
export function locate(text, quote) {
  if (!quote) return null;
  const exact = text.indexOf(quote);
  if (exact >= 0) return [exact, exact + quote.length];
  const positions = [];
  let flat = "";
  for (let i = 0; i < text.length; i++) {
    if (/\s/.test(text[i])) {
      if (flat && !flat.endsWith(" ")) {
        flat += " ";
        positions.push(i);
      }
    } else {
      flat += text[i].toLowerCase();
      positions.push(i);
    }
  }
  const needle = quote.replace(/\s+/g, " ").trim().toLowerCase();
  const found = needle ? flat.indexOf(needle) : -1;
  if (found < 0) return null;
  return [positions[found], positions[found + needle.length - 1] + 1];
}

/**
 * Where the longest leading part (five words or more) of ``quote`` is in ``text``:
 * a snippet cut short still shows where the quote begins.
 */
function locateStart(text, quote) {
  const words = (quote || "").split(/\s+/).filter(Boolean);
  for (let count = words.length - 1; count >= 5; count--) {
    const found = locate(text, words.slice(0, count).join(" "));
    if (found) return found;
  }
  return null;
}
