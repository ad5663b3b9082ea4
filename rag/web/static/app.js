// The chat page: ask, stream the answer over EventSource, keep the conversation.
//
// One EventSource per question, closed on `done` or `error` and on any connection
// error: left open, EventSource would reconnect by itself and ask the question again.

import { askUrl, currentKey, diagnose, forgetKey, saveKey } from "./api.js";
import { TurnView } from "./answer.js";
import { sentence } from "./dom.js";
import { PassagePanel } from "./passage.js";

const HISTORY_TURNS = 3; // the server's limit (rag.web.schemas.HISTORY_TURNS_MAX)
const HISTORY_QUESTION_CHARS = 500;
const HISTORY_ANSWER_CHARS = 600; // the URL stays well under the server's limit

const $ = (id) => document.getElementById(id);
const form = $("ask-form");
const input = $("question");
const askButton = $("ask");
const stopButton = $("stop");
const conversation = $("conversation");
const status = $("status");
const keyDialog = $("key-dialog");

/** Completed turns, oldest first: what follow-up questions send as `history`. */
const history = [];
/** The answer being streamed: {turn, source, closed} or null. */
let active = null;

const passage = new PassagePanel($("passage"), { onUnauthorized: () => askForKey() });

function topK() {
  const value = Number.parseInt(new URLSearchParams(location.search).get("top_k") || "", 10);
  return Number.isFinite(value) && value > 0 ? value : null;
}

function announce(message) {
  // Cleared first so the same message twice is still spoken.
  status.textContent = "";
  window.setTimeout(() => {
    status.textContent = message;
  }, 50);
}

function setBusy(busy) {
  askButton.hidden = busy;
  stopButton.hidden = !busy;
  $("new-chat").disabled = busy || !conversation.children.length;
}

function historyFor(turn) {
  // The turns before this one: a retried turn sends the history it was first asked with.
  return turn.history.slice(-HISTORY_TURNS).map((t) => ({
    question: t.question.slice(0, HISTORY_QUESTION_CHARS),
    answer: t.answer.slice(0, HISTORY_ANSWER_CHARS),
  }));
}

function ask(question) {
  const turn = new TurnView(question, { onCite: openPassage, onRetry: retry });
  turn.history = history.slice();
  $("intro").hidden = true;
  conversation.append(turn.root);
  stream(turn);
}

function retry(turn) {
  if (active) return;
  turn.reset();
  stream(turn);
  input.focus();
}

function stream(turn) {
  setBusy(true);
  turn.root.scrollIntoView({ block: "start", behavior: "smooth" });
  const url = askUrl(turn.question, { history: historyFor(turn), topK: topK() });
  const source = new EventSource(url);
  const current = { turn, source, received: false, closed: false };
  active = current;

  const end = () => {
    current.closed = true;
    source.close();
    if (active === current) active = null;
    setBusy(false);
  };

  source.addEventListener("sources", (event) => {
    current.received = true;
    turn.showSources(JSON.parse(event.data));
  });
  source.addEventListener("delta", (event) => {
    current.received = true;
    turn.append(JSON.parse(event.data).text);
  });
  source.addEventListener("done", (event) => {
    end();
    const done = JSON.parse(event.data);
    turn.finish(done);
    history.push({ question: turn.question, answer: done.answer });
    announce(done.grounded ? "Answer complete." : "Not in the documents.");
  });
  // The server's `error` event and EventSource's own connection error share a name;
  // only the former carries data.
  source.addEventListener("error", (event) => {
    if (current.closed) return;
    end();
    if (event instanceof MessageEvent && event.data) {
      const error = JSON.parse(event.data);
      const hint = error.retryable ? "" : " Retrying may not help.";
      turn.fail("Something went wrong.", `${sentence(error.message)}${hint}`);
      announce(`Error: ${error.message}`);
      return;
    }
    if (current.received) {
      turn.fail("Connection lost.", "The answer stopped before it was complete.");
      announce("Connection lost.");
      return;
    }
    refused(turn, url);
  });
}

/** The stream failed before its first event: find out why, and say so. */
async function refused(turn, url) {
  const error = await diagnose(url);
  if (error && error.status === 401) {
    if (await askForKey()) {
      retry(turn);
      return;
    }
    turn.fail("API key needed.", "This server answers only with a valid API key.");
    return;
  }
  if (!error) {
    turn.fail("Connection lost.", "The server did not answer.");
  } else if (error.status === 429) {
    const wait = error.retryAfter ? ` Try again in ${error.retryAfter} s.` : "";
    turn.fail("Too many questions.", `The server's rate limit was reached.${wait}`);
  } else if (error.status === 0) {
    turn.fail("Offline.", error.message);
  } else {
    turn.fail("The question was not accepted.", sentence(error.message), {
      retry: error.status >= 500 || error.status === 408,
    });
  }
  announce(`Error: ${error ? error.message : "connection lost"}`);
}

function stop() {
  if (!active) return;
  const { turn } = active;
  active.closed = true;
  active.source.close(); // the server sees the disconnect and stops the model
  active = null;
  setBusy(false);
  turn.stop();
  announce("Stopped.");
  input.focus();
}

function openPassage(turn, n, quotes, opener) {
  const source = turn.sources[n - 1];
  if (source) passage.open(source, quotes, opener);
}

/** Ask for an API key in a small dialog; resolves true when one was saved. */
let keyRequest = null;
function askForKey() {
  if (keyRequest) return keyRequest;
  const error = $("key-error");
  const hadKey = Boolean(currentKey());
  if (hadKey) forgetKey();
  error.textContent = hadKey ? "The saved key was not accepted; enter another one." : "";
  error.hidden = !hadKey;
  $("key-input").value = "";
  keyRequest = new Promise((resolve) => {
    const finish = (saved) => {
      keyDialog.removeEventListener("close", onClose);
      $("key-form").removeEventListener("submit", onSubmit);
      keyRequest = null;
      $("forget-key").hidden = !currentKey();
      resolve(saved);
    };
    const onSubmit = (event) => {
      event.preventDefault();
      const key = $("key-input").value.trim();
      if (!key) {
        error.textContent = "Enter a key.";
        error.hidden = false;
        return;
      }
      saveKey(key);
      keyDialog.removeEventListener("close", onClose);
      keyDialog.close();
      finish(true);
    };
    const onClose = () => finish(false);
    keyDialog.addEventListener("close", onClose);
    $("key-form").addEventListener("submit", onSubmit);
    keyDialog.showModal();
    $("key-input").focus();
  });
  return keyRequest;
}

function newConversation() {
  if (active) return;
  history.length = 0;
  conversation.replaceChildren();
  $("intro").hidden = false;
  setBusy(false);
  announce("New conversation.");
  input.focus();
}

function autosize() {
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 200)}px`;
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const question = input.value.trim();
  if (!question || active) return;
  input.value = "";
  autosize();
  ask(question);
});
input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  }
});
input.addEventListener("input", autosize);
stopButton.addEventListener("click", stop);
$("new-chat").addEventListener("click", newConversation);
$("key-cancel").addEventListener("click", () => keyDialog.close());
$("forget-key").hidden = !currentKey();
$("forget-key").addEventListener("click", () => {
  forgetKey();
  $("forget-key").hidden = true;
  announce("API key forgotten.");
  input.focus();
});
window.addEventListener("pagehide", () => active && active.source.close());
input.focus();
