// One turn of the conversation on screen: the question, its sources, the streamed
// answer with clickable [n] markers, and the final state (done, not covered, error).

import { el, sentence } from "./dom.js";

const MARKER = /\[(\d{1,3})\]/g;
// A tail the next delta may change the meaning of: a marker begun ("[", "[12") or
// line breaks (one is reflowed into a space, two end a paragraph).
const UNSETTLED_TAIL = /(?:\[\d{0,3}|\n+)$/;
// Markers, `code` and **bold**: the markdown that models and source documents use most.
const INLINE = /\[(\d{1,3})\]|`([^`\n]+)`|\*\*(?=\S)([^*]+?)\*\*/g;

export class TurnView {
  /**
   * @param {string} question
   * @param {{onCite: (turn: TurnView, n: number, quotes: string[], opener: HTMLElement) => void,
   *          onRetry: (turn: TurnView) => void}} actions
   */
  constructor(question, actions) {
    this.question = question;
    this.actions = actions;
    this.root = el("li", { class: "turn" });
    this.root.append(
      el("div", { class: "question" }, el("p", {}, question)),
    );
    this.answer = el("article", { class: "answer", "aria-label": "Answer" });
    this.root.append(this.answer);
    this.reset();
  }

  /** Back to "waiting", for a first attempt or a retry. */
  reset() {
    this.sources = [];
    this.citations = [];
    this.markers = [];
    this.pending = "";
    this.text = "";
    this.answer.replaceChildren();
    this.answer.classList.remove("not-covered", "failed");
    this.sourcesBox = el("section", { class: "sources", hidden: "" });
    this.body = el("div", {
      class: "answer-text",
      "aria-live": "polite",
      "aria-busy": "true",
    });
    this.progress = el("p", { class: "progress" }, el("span", { class: "spinner", "aria-hidden": "true" }), "Searching the documents…");
    this.notice = el("div", { class: "notice", hidden: "" });
    this.degraded = el("p", { class: "degraded", role: "note", hidden: "" });
    this.meta = el("p", { class: "meta", hidden: "" });
    this.answer.append(
      this.sourcesBox, this.progress, this.degraded, this.body, this.notice, this.meta,
    );
  }

  /** The `sources` event: a numbered list before any text. */
  showSources(sources) {
    this.sources = sources;
    this.progress.lastChild.textContent = sources.length ? "Writing the answer…" : "Checking the documents…";
    if (!sources.length) return;
    const list = el("ol", { class: "source-list" });
    for (const source of sources) {
      const where = [source.document, pageLabel(source.page)].filter(Boolean).join(" · ");
      const button = el(
        "button",
        { type: "button", class: "source", "aria-label": `Source ${source.n}: ${source.title}, ${where}` },
        el("span", { class: "source-n", "aria-hidden": "true" }, String(source.n)),
        el("span", { class: "source-title" }, source.title || source.document),
        el("span", { class: "source-where" }, where),
      );
      button.addEventListener("click", () => {
        const quotes = this.citations.filter((c) => c.n === source.n).map((c) => c.quote);
        this.actions.onCite(this, source.n, quotes, button);
      });
      list.append(el("li", {}, button));
    }
    this.sourcesBox.replaceChildren(
      el("h3", { class: "section-label" }, `Sources (${sources.length})`),
      list,
    );
    this.sourcesBox.hidden = false;
  }

  /** A `delta` event: text appended, complete markers turned into buttons. */
  append(text) {
    this.progress.hidden = true;
    this.pending += text;
    const tail = this.pending.match(UNSETTLED_TAIL);
    const cut = tail ? tail.index : this.pending.length;
    this.render(this.pending.slice(0, cut));
    this.pending = this.pending.slice(cut);
  }

  /** Streamed text appended as it comes: plain text and marker buttons. */
  render(raw) {
    if (!raw) return;
    const text = reflow(raw, this.text.slice(-1));
    this.text += raw;
    let last = 0;
    for (const match of text.matchAll(MARKER)) {
      this.appendText(text.slice(last, match.index));
      const n = Number(match[1]);
      if (n >= 1 && n <= this.sources.length) {
        this.body.append(this.markerButton(n));
      } else {
        this.appendText(match[0]); // names no source: shown as written, never a link
      }
      last = match.index + match[0].length;
    }
    this.appendText(text.slice(last));
  }

  appendText(text) {
    if (!text) return;
    const tail = this.body.lastChild;
    if (tail && tail.nodeType === Node.TEXT_NODE) tail.appendData(text);
    else this.body.append(document.createTextNode(text));
  }

  markerButton(n) {
    const source = this.sources[n - 1];
    const button = el(
      "button",
      { type: "button", class: "cite", "aria-label": `Source ${n}: ${source.title || source.document}` },
      String(n),
    );
    // The k-th valid marker is the k-th citation of the done event (same order, and
    // the server drops exactly the markers that name no source, as render() does).
    const index = this.markers.length;
    this.markers.push(button);
    button.addEventListener("click", () => {
      const citation = this.citations[index];
      const quotes = citation && citation.n === n && citation.quote ? [citation.quote] : [];
      this.actions.onCite(this, n, quotes, button);
    });
    return button;
  }

  /** The whole answer again, with light formatting; keyboard focus stays on its marker. */
  format(answer) {
    const focused = this.markers.indexOf(document.activeElement);
    this.markers = [];
    const nodes = [];
    let last = 0;
    const text = reflow(answer.trim(), "");
    for (const match of text.matchAll(INLINE)) {
      nodes.push(text.slice(last, match.index));
      const [whole, n, code, bold] = match;
      if (code) nodes.push(el("code", {}, code));
      else if (bold) nodes.push(el("strong", {}, bold));
      else if (Number(n) >= 1 && Number(n) <= this.sources.length) nodes.push(this.markerButton(Number(n)));
      else nodes.push(whole);
      last = match.index + whole.length;
    }
    nodes.push(text.slice(last));
    this.body.replaceChildren(...nodes.filter((node) => node !== ""));
    if (focused >= 0 && this.markers[focused]) this.markers[focused].focus();
  }

  /** The `done` event: final text, citations, badges, cost and latency. */
  finish(done) {
    this.pending = "";
    this.text = done.answer;
    this.format(done.answer);
    this.citations = done.citations || [];
    this.progress.hidden = true;
    this.body.setAttribute("aria-busy", "false");
    if (!done.grounded) {
      // No checked citation: the server's "not in the documents" (docs/design.md#evidence-gate).
      this.answer.classList.add("not-covered");
      this.body.prepend(el("strong", { class: "label" }, "Not in the documents"));
    }
    if (done.degraded) {
      // Workers AI refused every call: the reader must know this answer is the fallback's.
      this.degraded.replaceChildren(
        el("strong", {}, "Reduced service."),
        " ",
        sentence(done.degraded),
      );
      this.degraded.hidden = false;
    }
    const parts = [];
    if (done.cached) {
      parts.push(el("span", { class: "badge", title: "Replayed from the answer cache" }, "cached"));
    }
    const usage = done.usage || {};
    const latency = done.latency_ms || {};
    parts.push(
      // "workers-ai:@cf/meta/llama-3.1-8b-instruct-fast" reads as the model's own name.
      el("span", { title: `Answered by ${done.provider}` }, done.provider.split("/").pop()),
      el(
        "span",
        { title: `${usage.input_tokens || 0} tokens in, ${usage.output_tokens || 0} tokens out` },
        `${formatNumber(usage.neurons || 0)} neurons · ${formatUsd(usage.usd || 0)}`,
      ),
      el(
        "span",
        {
          title: `retrieval ${formatMs(latency.retrieve)}, first token ${formatMs(latency.first_token)}`,
        },
        formatMs(latency.total),
      ),
    );
    this.meta.replaceChildren(...joinWith(parts, " · "));
    this.meta.dataset.traceId = done.trace_id || "";
    this.meta.hidden = false;
  }

  /** An `error` event, a dropped connection or a refused request: message and Retry. */
  fail(title, message, { retry = true } = {}) {
    this.render(this.pending);
    this.pending = "";
    this.progress.hidden = true;
    this.body.setAttribute("aria-busy", "false");
    this.answer.classList.add("failed");
    const children = [el("p", {}, el("strong", {}, title), " ", message)];
    if (retry) {
      const button = el("button", { type: "button", class: "secondary retry" }, "Retry");
      button.addEventListener("click", () => this.actions.onRetry(this));
      children.push(button);
    }
    this.notice.replaceChildren(...children);
    this.notice.hidden = false;
  }

  /** Stopped by the reader: what arrived stays, marked as incomplete. */
  stop() {
    this.fail("Stopped.", "The answer is incomplete.");
  }

  retryButton() {
    return this.notice.querySelector(".retry");
  }
}

/**
 * Source text is hard-wrapped: a single line break becomes a space, unless a list
 * item or heading follows; blank lines (paragraphs) stay. ``before`` is the character
 * that preceded ``text`` in the answer.
 */
export function reflow(text, before = "") {
  return text.replace(/\n/g, (_, i) => {
    const previous = i ? text[i - 1] : before;
    const next = text.slice(i + 1, i + 5);
    if (previous === "\n" || next === "" || next[0] === "\n" || /^(?:[-*•] |\d+[.)] |#)/.test(next)) {
      return "\n";
    }
    return " ";
  });
}

function joinWith(nodes, separator) {
  return nodes.flatMap((node, i) => (i ? [separator, node] : [node]));
}

export function pageLabel(page, pageEnd) {
  if (page === null || page === undefined) return "";
  return pageEnd && pageEnd !== page ? `pp. ${page}–${pageEnd}` : `p. ${page}`;
}

function formatNumber(value) {
  if (value === 0) return "0";
  if (value >= 100) return Math.round(value).toLocaleString("en");
  return value.toFixed(value < 10 ? 2 : 1).replace(/\.?0+$/, "");
}

function formatUsd(value) {
  if (value === 0) return "$0";
  if (value < 0.0001) return "<$0.0001";
  if (value < 0.01) return `$${value.toPrecision(2)}`;
  return `$${value.toFixed(2)}`;
}

function formatMs(ms) {
  if (ms === null || ms === undefined) return "–";
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}
