"""The chat page in a real headless Chromium, against the real app and service.

Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) driven by
Selenium, which is told where both are so Selenium Manager never looks for a download.
The app runs under uvicorn on an ephemeral loopback port, over the real service on a
few sample documents with the fake embedder, so the page sees real SSE streaming,
real citations and the real error mapping. Every wait is explicit and bounded.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import uvicorn
from conftest import CORPUS, make_settings
from fakes import FakeEmbedder, ScriptedService, done_event
from litestar import Litestar
from scans import top_of_page

from rag.config import Settings
from rag.domain import (
    Citation,
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
    Latency,
    Source,
    SourcesEvent,
    Usage,
)
from rag.keys import KeyStore
from rag.registry import Overrides
from rag.service import open_service
from rag.web.app import create_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        "needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver);"
        " .ci/run installs them",
        allow_module_level=True,
    )
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the test extra")

from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402

WAIT_S = 20.0
DOCS = ["configuration.md", "ingestion.md", "faq-and-glossary.txt", "retrieval-tuning.md"]
# Flags for a closed network: without the background-networking ones Chromium keeps
# trying to reach Google's hosts at start-up.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
# Collects uncaught errors, Content-Security-Policy refusals and console.error calls
# that the driver's log might miss.
CAPTURE_ERRORS = """
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e)));
window.addEventListener('unhandledrejection', e => window.__errors.push(String(e.reason)));
document.addEventListener('securitypolicyviolation', e => window.__errors.push(
  `CSP refused ${e.blockedURI || 'inline code'} (${e.violatedDirective})`));
const original = console.error;
console.error = (...args) => {
  window.__errors.push(args.map(String).join(' '));
  original(...args);
};
"""


def question_from_corpus(qid: str) -> str:
    for line in (CORPUS / "qa.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["id"] == qid:
            return str(row["question"])
    raise LookupError(qid)


AppFactory = Callable[[], AbstractAsyncContextManager[Litestar]]


@contextmanager
def serve(open_app: AppFactory) -> Iterator[str]:
    """Run the app ``open_app`` opens under uvicorn on an ephemeral loopback port, in a
    thread with its own event loop (where the service lives, as under ``rag serve``)."""
    # Bound and listening before uvicorn runs: the browser's first request waits in the
    # backlog instead of racing the server's start-up.
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    started = threading.Event()
    holder: dict[str, Any] = {}

    async def main() -> None:
        async with open_app() as app:
            config = uvicorn.Config(
                app,
                http="h11",
                ws="none",
                log_config=None,
                log_level="warning",
                timeout_graceful_shutdown=2,
            )
            server = holder["server"] = uvicorn.Server(config)
            started.set()
            await server.serve(sockets=[sock])

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            holder["error"] = exc
        finally:
            started.set()

    thread = threading.Thread(target=run, name="uvicorn-browser-test", daemon=True)
    thread.start()
    assert started.wait(60), "the app did not start"
    if "error" in holder:
        raise holder["error"]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        holder["server"].should_exit = True
        thread.join(10)
        sock.close()
    if "error" in holder:
        raise holder["error"]


def real_app(tmp: Path, key: list[str] | None = None, **sections: dict[str, object]) -> AppFactory:
    """The real app over the real service on a few corpus documents (fake embedder).
    With ``key``, API keys are required and the one created is appended to it."""
    docs = tmp / "docs"
    docs.mkdir()
    for name in DOCS:
        shutil.copy(CORPUS / name, docs / name)
    settings = make_settings(tmp, **sections)

    @asynccontextmanager
    async def open_app() -> AsyncIterator[Litestar]:
        async with open_service(settings, Overrides(embedder=FakeEmbedder())) as service:
            report = await service.ingest([docs])
            assert report.failed == 0, report
            if key is not None:
                _, secret = await KeyStore(service.sessions).create("browser-test")
                key.append(secret)
            yield create_app(settings, service=service)

    return open_app


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve(real_app(tmp_path_factory.mktemp("browser-app"))) as url:
        yield url


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,900"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "driver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CAPTURE_ERRORS})
        yield driver
    finally:
        driver.quit()


def wait(driver: WebDriver, timeout: float = WAIT_S) -> WebDriverWait[WebDriver]:
    return WebDriverWait(driver, timeout)


def has_chunks_route(base_url: str) -> bool:
    paths = httpx.get(base_url + "/schema/openapi.json", timeout=WAIT_S).json()["paths"]
    return any(path.startswith("/v1/chunks/") for path in paths)


def console_errors(driver: WebDriver) -> list[str]:
    assert isinstance(driver, webdriver.Chrome)  # the browser log is Chromium's own API
    logged = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    captured = driver.execute_script("return window.__errors || []")
    return logged + [str(e) for e in captured]


def ask(driver: WebDriver, question: str) -> WebElement:
    """Type ``question``, press Enter, and return the new turn's answer element."""
    box = driver.find_element(By.ID, "question")
    before = len(driver.find_elements(By.CSS_SELECTOR, "#conversation > li"))
    box.send_keys(question, Keys.ENTER)
    turns = wait(driver).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#conversation > li")[before:] or False
    )
    return turns[0].find_element(By.CSS_SELECTOR, ".answer")


def finished(answer: WebElement) -> bool:
    return answer.find_element(By.CSS_SELECTOR, ".meta").is_displayed()


def test_ask_stream_and_open_a_citation(server: str, browser: WebDriver, tmp_path: Path) -> None:
    browser.get(server + "/")
    assert browser.title.startswith("Ask the documents")
    # The box has focus on load: a keyboard user can type at once.
    assert browser.switch_to.active_element.get_attribute("id") == "question"

    answer = ask(browser, question_from_corpus("q02"))
    # Sources are announced first, then text streams in with at least one [n] link.
    wait(browser).until(lambda _: answer.find_elements(By.CSS_SELECTOR, ".source-list .source"))
    citation = wait(browser).until(
        lambda _: answer.find_elements(By.CSS_SELECTOR, ".answer-text button.cite")
    )[0]
    assert answer.find_element(By.CSS_SELECTOR, ".answer-text").text.strip()
    wait(browser).until(lambda _: finished(answer))
    assert "neurons" in answer.find_element(By.CSS_SELECTOR, ".meta").text
    assert (
        answer.find_element(By.CSS_SELECTOR, ".answer-text").get_attribute("aria-busy") == "false"
    )

    # Follow the citation with the keyboard: the passage opens with the quote marked.
    citation.send_keys(Keys.ENTER)
    panel = wait(browser).until(ec.visibility_of_element_located((By.ID, "passage")))
    wait(browser).until(
        lambda _: panel.find_element(By.ID, "passage-text").get_attribute("aria-busy") == "false"
    )
    title = panel.find_element(By.ID, "passage-title").text
    assert title, "the passage names its document"
    passage_text = panel.find_element(By.ID, "passage-text").text
    assert len(passage_text) > 40
    browser.save_screenshot(str(tmp_path / "passage.png"))
    note = panel.find_element(By.ID, "passage-note")
    if has_chunks_route(server):
        # The whole passage, from /v1/chunks/{id}, with the cited sentence marked.
        assert not note.is_displayed(), note.text
        marks = panel.find_elements(By.CSS_SELECTOR, "#passage-text mark")
        assert marks and marks[0].text.strip() in passage_text
    else:
        # Until that endpoint exists the sources event's snippet stands in, and the
        # quote is marked only when the snippet reaches it.
        assert "excerpt" in note.text

    # Escape closes it and gives focus back to the citation that opened it.
    panel.send_keys(Keys.ESCAPE)
    wait(browser).until(ec.invisibility_of_element(panel))
    assert browser.switch_to.active_element == citation

    # A follow-up in the same conversation is answered too (the page sends the history).
    follow_up = ask(browser, "And what about the overlap?")
    wait(browser).until(lambda _: finished(follow_up))
    assert follow_up.find_element(By.CSS_SELECTOR, ".answer-text").text.strip()
    browser.save_screenshot(str(tmp_path / "conversation.png"))

    # The same first question again comes from the answer cache, and says so.
    again = ask(browser, question_from_corpus("q02"))
    wait(browser).until(lambda _: finished(again))
    assert again.find_element(By.CSS_SELECTOR, ".badge").text.lower() == "cached"

    errors = console_errors(browser)
    if not has_chunks_route(server):
        # The browser logs the fallback's 404 itself; nothing else may show up.
        errors = [e for e in errors if not re.search(r"/v1/chunks/\w+ - .* 404", e)]
    assert not errors, errors


def test_a_passage_recognised_from_a_scan_says_so(browser: WebDriver, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    top_of_page("operations-runbook.pdf").save(docs / "runbook-scan.png")
    slow_ok = {"page_timeout_s": 300}  # a page takes 1-2 s on idle cores; these are shared
    settings = make_settings(tmp_path, retrieval={"min_relevance": 0.2}, ocr=slow_ok)

    @asynccontextmanager
    async def open_app() -> AsyncIterator[Litestar]:
        async with open_service(settings, Overrides(embedder=FakeEmbedder())) as service:
            report = await service.ingest([docs])
            assert (report.new, report.recognised) == (1, 1), report.problems
            yield create_app(settings, service=service)

    with serve(open_app) as url:
        browser.get(url + "/")
        answer = ask(browser, "Who is the operations runbook for?")
        citation = wait(browser).until(
            lambda _: answer.find_elements(By.CSS_SELECTOR, ".answer-text button.cite")
        )[0]
        wait(browser).until(lambda _: finished(answer))
        citation.send_keys(Keys.ENTER)
        panel = wait(browser).until(ec.visibility_of_element_located((By.ID, "passage")))
        meta = wait(browser).until(
            lambda _: "recognised" in (text := panel.find_element(By.ID, "passage-meta").text)
            and text
        )
        browser.save_screenshot(str(tmp_path / "scan-passage.png"))
        errors = console_errors(browser)
    assert re.search(r"runbook-scan\.png · recognised from a scan \(\d{2,3}% confidence\)", meta)
    assert not errors, errors


def test_not_covered_and_phone_layout(server: str, browser: WebDriver, tmp_path: Path) -> None:
    browser.set_window_size(390, 844)
    browser.get(server + "/")
    answer = ask(browser, question_from_corpus("q56"))  # unanswerable
    try:
        wait(browser).until(lambda _: finished(answer))
    except TimeoutException:
        browser.save_screenshot(str(tmp_path / "timeout.png"))
        raise
    assert "not-covered" in (answer.get_attribute("class") or "")
    assert "Not in the documents" in answer.text
    # Nothing is wider than the screen.
    overflow = browser.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    browser.save_screenshot(str(tmp_path / "phone.png"))
    errors = console_errors(browser)
    assert not errors, errors


def test_api_docs_render_offline(server: str, browser: WebDriver, tmp_path: Path) -> None:
    browser.get(server + "/schema")
    docs = browser.find_element(By.ID, "docs")
    wait(browser).until(lambda _: docs.get_attribute("aria-busy") == "false")
    ask_get = docs.find_element(By.ID, "op-get-v1-ask")
    assert ask_get.find_element(By.CSS_SELECTOR, "h2").text == "GET /v1/ask"
    parameters = ask_get.find_elements(By.CSS_SELECTOR, "tbody th code")
    assert [p.text for p in parameters] == ["q", "top_k", "history"]
    assert "Authorization: Bearer <key>" in ask_get.text
    # A schema reference is a working link to the schema's own section.
    docs.find_element(By.CSS_SELECTOR, "#op-post-v1-ask a[href='#schema-AskRequest']").click()
    target = docs.find_element(By.ID, "schema-AskRequest")
    assert browser.execute_script("return location.hash") == "#schema-AskRequest"
    assert "question" in target.text
    browser.save_screenshot(str(tmp_path / "api-docs.png"))
    errors = console_errors(browser)
    assert not errors, errors


@pytest.fixture(scope="module")
def locked_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The real app with API keys required; yields its URL and a valid key."""
    key: list[str] = []
    tmp = tmp_path_factory.mktemp("browser-locked")
    with serve(real_app(tmp, key, auth={"required": True})) as url:
        yield url, key[0]


def test_api_key_is_asked_for_once_and_kept(
    locked_server: tuple[str, str], browser: WebDriver, tmp_path: Path
) -> None:
    url, key = locked_server
    browser.get(url + "/")
    ask(browser, question_from_corpus("q02"))
    # The stream is refused (401): the page asks for a key in a small form.
    dialog = wait(browser).until(ec.visibility_of_element_located((By.ID, "key-dialog")))
    field = dialog.find_element(By.ID, "key-input")
    assert browser.switch_to.active_element == field
    browser.save_screenshot(str(tmp_path / "key.png"))
    field.send_keys(key, Keys.ENTER)
    wait(browser).until(ec.invisibility_of_element(dialog))
    # The question is asked again with the key, and the answer streams in.
    answer = browser.find_element(By.CSS_SELECTOR, "#conversation > li:last-child .answer")
    wait(browser).until(lambda _: finished(answer))
    # fetch() calls send it as a header: the passage comes from /v1/chunks/{id}.
    answer.find_element(By.CSS_SELECTOR, ".answer-text button.cite").click()
    panel = wait(browser).until(ec.visibility_of_element_located((By.ID, "passage")))
    wait(browser).until(
        lambda _: panel.find_element(By.ID, "passage-text").get_attribute("aria-busy") == "false"
    )
    assert not panel.find_element(By.ID, "passage-note").is_displayed()
    assert browser.execute_script("return localStorage.getItem('rag.apiKey')") == key

    # Kept in the browser: after a reload nothing is asked.
    browser.get(url + "/")
    answer = ask(browser, question_from_corpus("q02"))
    wait(browser).until(lambda _: finished(answer))
    assert not browser.find_element(By.ID, "key-dialog").is_displayed()
    # Only the refused first attempt may have logged anything.
    errors = [e for e in console_errors(browser) if "401" not in e]
    assert not errors, errors


GUIDE = Source(
    n=1, chunk_id="c1", document="guide.md", title="Guide", page=2, score=0.9,
    snippet="Run rag ingest to index a folder.",
)  # fmt: skip


def scripted_app(service: ScriptedService) -> AppFactory:
    """The app on default settings over a scripted service."""

    @asynccontextmanager
    async def open_app() -> AsyncIterator[Litestar]:
        yield create_app(Settings(), service=service)

    return open_app


def scripted_done(text: str) -> DoneEvent:
    return done_event(
        text,
        citations=(Citation(n=1, chunk_id="c1", document="guide.md", page=2, quote="Run it."),),
        provider="workers-ai:@cf/meta/llama-3.1-8b-instruct-fast",
        usage=Usage(neurons=12.5, usd=0.000138, input_tokens=900, output_tokens=60),
        latency_ms=Latency(retrieve=20.0, first_token=180.0, total=1450.0),
        trace_id="t-scripted",
    )


def test_error_retry_and_dropped_connection(browser: WebDriver, tmp_path: Path) -> None:
    answer = "Run rag ingest [1]."
    sources = SourcesEvent((GUIDE,))
    service = ScriptedService(
        [sources, DeltaEvent("Run "), ErrorEvent("model", "the model stopped", True)],
        [sources, DeltaEvent(answer), scripted_done(answer)],
        # The stream ends without `done`: to the browser, a dropped connection.
        [sources, DeltaEvent("Cut")],
        [sources, DeltaEvent(answer), scripted_done(answer)],
    )

    with serve(scripted_app(service)) as url:
        browser.get(url + "/")
        first = ask(browser, "How do I index a folder?")
        notice = wait(browser).until(
            lambda _: (
                first.find_element(By.CSS_SELECTOR, ".notice").is_displayed()
                and first.find_element(By.CSS_SELECTOR, ".notice")
            )
        )
        assert "The model stopped." in notice.text
        browser.save_screenshot(str(tmp_path / "error.png"))
        notice.find_element(By.CSS_SELECTOR, "button.retry").send_keys(Keys.ENTER)
        wait(browser).until(lambda _: finished(first))
        meta = first.find_element(By.CSS_SELECTOR, ".meta").text
        assert "12.5 neurons" in meta and "$0.00014" in meta and "1.4 s" in meta, meta
        assert not first.find_element(By.CSS_SELECTOR, ".notice").is_displayed()

        second = ask(browser, "And a single file?")
        notice = wait(browser).until(
            lambda _: (
                second.find_element(By.CSS_SELECTOR, ".notice").is_displayed()
                and second.find_element(By.CSS_SELECTOR, ".notice")
            )
        )
        assert "Connection lost" in notice.text
        # EventSource was closed: it did not reconnect and ask again on its own.
        assert len(service.calls) == 3
        notice.find_element(By.CSS_SELECTOR, "button.retry").click()
        wait(browser).until(lambda _: finished(second))
        browser.save_screenshot(str(tmp_path / "retried.png"))
        errors = console_errors(browser)
    assert not errors, errors
    # The follow-up (and its retry) carried the completed first turn as history.
    follow_ups = [(c.text, c.history) for c in service.calls[2:]]
    assert follow_ups == [("And a single file?", (("How do I index a folder?", answer),))] * 2
    assert len(service.calls) == 4


def test_a_degraded_answer_says_so(browser: WebDriver) -> None:
    answer = "Run rag ingest [1]."
    why = "Workers AI daily neuron allocation used up (3036): answers come from keyword search"
    done = msgspec.structs.replace(scripted_done(answer), provider="extractive", degraded=why)
    service = ScriptedService([SourcesEvent((GUIDE,)), DeltaEvent(answer), done])

    with serve(scripted_app(service)) as url:
        browser.get(url + "/")
        turn = ask(browser, "How do I index a folder?")
        wait(browser).until(lambda _: finished(turn))
        notice = turn.find_element(By.CSS_SELECTOR, ".degraded")
        assert notice.is_displayed() and notice.get_attribute("role") == "note"
        assert notice.text == f"Reduced service. {why[0].upper()}{why[1:]}."
        assert not turn.find_element(By.CSS_SELECTOR, ".notice").is_displayed()
