"""Debian's Chromium, headless, driven over the Chrome DevTools Protocol from the test's own event loop
(aiohttp's websocket client): a page opened in a fresh browser context (its own caches, so no preflight
is remembered from another test), what the page's script reports, and every request the browser put on
the wire, preflights and beacons included, as the Network domain saw it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp

from tests.waiting import wait_for, wait_until

# This machine's network is closed: without these Chromium keeps dialling its own services (updates,
# sync, safe browsing, QUIC probes) and hammers refused connections.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--remote-debugging-address=127.0.0.1",
)
START_SECONDS = 30.0
# Query parameters that hold credentials: shown redacted in what the tests print.
SECRET_PARAMS = frozenset({"apiKey", "token"})


def redact(url: str) -> str:
    parts = urlsplit(url)
    query = "&".join(
        f"{k}=…" if k in SECRET_PARAMS else urlencode({k: v})
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit(parts._replace(query=query))


@dataclass
class Browser:
    """A running Chromium: its DevTools websocket, and what `chromium --version` says."""

    proc: subprocess.Popen[bytes]
    websocket_url: str
    log: Path
    version: str


def version_of(executable: str) -> str:
    # Debian's /usr/bin/chromium is a shell wrapper that may complain on stderr; the version is on stdout.
    done = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


@contextlib.contextmanager
def launch(executable: str) -> Iterator[Browser]:
    with tempfile.TemporaryDirectory(prefix="eventpipe-chromium-") as tmp:
        profile = Path(tmp) / "profile"
        log = Path(tmp) / "chromium.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        # Chromium writes its DevTools port and browser path here once it listens.
        port_file = profile / "DevToolsActivePort"

        def listening() -> bool:
            assert proc.poll() is None, (
                f"chromium exited with {proc.returncode}: {log.read_text(errors='replace')}"
            )
            return port_file.exists() and len(port_file.read_text().splitlines()) >= 2

        try:
            wait_until(listening, START_SECONDS, lambda: log.read_text(errors="replace"))
            port, path = port_file.read_text().splitlines()[:2]
            yield Browser(proc, f"ws://127.0.0.1:{port}{path}", log, version_of(executable))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass
class Request:
    """One request as the browser sent it and what came back."""

    method: str
    url: str
    kind: str  # the Network domain's resource type: Fetch, Ping (a beacon), Preflight, Document, ...
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    failure: str | None = None

    def header(self, name: str) -> str | None:
        lowered = {k.lower(): v for k, v in self.headers.items()}
        return lowered.get(name.lower())

    def describe(self) -> str:
        outcome = str(self.status) if self.status is not None else f"failed: {self.failure}"
        ctype = self.header("Content-Type")
        sent = f", Content-Type: {ctype}" if ctype else ""
        origin = self.header("Origin")
        sent += f", Origin: {origin}" if origin else ""
        return f"{self.kind} {self.method} {redact(self.url)}{sent} -> {outcome}"


class Cdp:
    """One DevTools connection: commands by id, events collected as they come."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[tuple[str | None, str, dict[str, Any]]] = []  # (session, method, params)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
            else:
                self.events.append((data.get("sessionId"), data["method"], data.get("params", {})))
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("DevTools connection closed"))

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> Any:
        message: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[message["id"]] = future
        await self._ws.send_str(json.dumps(message))
        reply = await asyncio.wait_for(future, 30)
        if "error" in reply:
            raise RuntimeError(f"DevTools {method}: {reply['error']}")
        return reply.get("result", {})

    async def close(self) -> None:
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@contextlib.asynccontextmanager
async def connect(browser: Browser) -> AsyncIterator[Cdp]:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(browser.websocket_url, max_msg_size=0) as ws,
    ):
        cdp = Cdp(ws)
        try:
            yield cdp
        finally:
            await cdp.close()


@dataclass
class Page:
    cdp: Cdp
    session: str

    async def evaluate(self, expression: str) -> Any:
        result = await self.cdp.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, self.session
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def result(self, seconds: float = 30.0) -> Any:
        """What the page's script set as window.__result once it finished."""
        await wait_for(
            lambda: self.evaluate("window.__result !== undefined"), seconds, lambda: self.console()
        )
        return await self.evaluate("window.__result")

    def console(self) -> str:
        """The page's console messages and uncaught exceptions, to explain a page that never finished."""
        lines = []
        for session, method, params in self.cdp.events:
            if session != self.session:
                continue
            if method == "Runtime.consoleAPICalled":
                lines.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                lines.append(json.dumps(params["exceptionDetails"])[:2000])
        return "\n".join(lines) or "(the page logged nothing)"

    def requests(self) -> list[Request]:
        """Every request of this page in the order the browser issued them, each CORS preflight just
        before the request it was for (the Network domain reports it after that request)."""
        seen: dict[str, Request] = {}
        preflight_of: dict[str, str] = {}  # actual request id -> its preflight's id
        # The headers as they went on the wire (Origin, the preflight's Access-Control-Request-*): the
        # Network domain may report them before or after the request itself.
        # Likewise the reply's raw headers, which responseReceived leaves out of an opaque (no-cors) one.
        wire_headers: dict[str, dict[str, str]] = {}
        reply_headers: dict[str, dict[str, str]] = {}
        for session, method, params in self.cdp.events:
            if session != self.session:
                continue
            if method == "Network.requestWillBeSentExtraInfo":
                wire_headers.setdefault(params["requestId"], {}).update(params.get("headers", {}))
            elif method == "Network.responseReceivedExtraInfo":
                reply_headers.setdefault(params["requestId"], {}).update(params.get("headers", {}))
        for session, method, params in self.cdp.events:
            request_id = params.get("requestId")
            if session != self.session or request_id is None:
                continue
            if method == "Network.requestWillBeSent":
                sent = params["request"]
                initiator = params.get("initiator", {})
                kind = params.get("type", "Other")
                if initiator.get("type") == "preflight":
                    kind = "Preflight"
                    preflight_of[initiator.get("requestId", "")] = request_id
                seen[request_id] = Request(
                    method=sent["method"],
                    url=sent["url"],
                    kind=kind,
                    headers={**sent.get("headers", {}), **wire_headers.get(request_id, {})},
                    body=sent.get("postData"),
                )
            elif request_id not in seen:
                continue
            elif method == "Network.responseReceived":
                seen[request_id].status = params["response"]["status"]
                seen[request_id].response_headers = {
                    **params["response"].get("headers", {}),
                    **reply_headers.get(request_id, {}),
                }
            elif method == "Network.loadingFailed":
                cors_error = params.get("corsErrorStatus", {}).get("corsError")
                seen[request_id].failure = cors_error or params.get("errorText") or "failed"
        ordered: list[Request] = []
        preflights = set(preflight_of.values())
        for request_id, request in seen.items():
            if request_id in preflights:
                continue
            if request_id in preflight_of:
                ordered.append(seen[preflight_of[request_id]])
            ordered.append(request)
        # A preflight whose request never started (the browser refused it) stays in the list too.
        ordered.extend(seen[p] for p in preflights if seen[p] not in ordered)
        return ordered


@contextlib.asynccontextmanager
async def open_page(cdp: Cdp, url: str) -> AsyncIterator[Page]:
    """`url` in a new tab of a new browser context, with the Network and Runtime domains recording."""
    context = (await cdp.send("Target.createBrowserContext"))["browserContextId"]
    try:
        target = (await cdp.send("Target.createTarget", {"url": "about:blank", "browserContextId": context}))[
            "targetId"
        ]
        session = (await cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True}))[
            "sessionId"
        ]
        page = Page(cdp, session)
        for domain in ("Network", "Runtime", "Page"):
            await cdp.send(f"{domain}.enable", {}, session)
        await cdp.send("Page.navigate", {"url": url}, session)
        yield page
    finally:
        await cdp.send("Target.disposeBrowserContext", {"browserContextId": context})
