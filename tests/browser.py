"""A real headless Chromium driven over the DevTools protocol, with no new dependency.

Chromium is started with --remote-debugging-pipe: it reads JSON commands from fd 3 and writes
replies and events to fd 4, each message ended by a NUL byte. One page target is attached in
flat mode; every event is kept so a test can ask what the page requested or logged. The
network is off: every request is blocked by the browser, and attempts are still reported.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
    "--proxy-server=http://127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
    "--remote-debugging-pipe", "--window-size=1200,900",
]  # fmt: skip


def chromium_binary() -> str:
    """The OS package's Chromium; a missing one fails the test with the way to get it."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError(
        "the report tests need a real Chromium: apt-get install -y chromium (.ci/run does it)"
    )


class Browser:
    """One Chromium process and one page; `events` holds every event of the page's session."""

    def __init__(self) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="owui-replay-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # the child must see the pipe ends as fds 3 and 4: preexec_fn dups them there, and
        # pass_fds keeps those two numbers open (subprocess closes the others after preexec_fn)
        self.process = subprocess.Popen(
            [chromium_binary(), *FLAGS, f"--user-data-dir={self._profile.name}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4),
            preexec_fn=lambda: _as_fds_3_and_4(to_child_r, from_child_w),
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        for domain in ("Page", "Network", "Runtime", "Log"):
            self.page(f"{domain}.enable")
        self.page(
            "Network.emulateNetworkConditions",
            offline=True, latency=0, downloadThroughput=-1, uploadThroughput=-1,
        )  # fmt: skip

    def _read(self) -> None:
        buffer = b""
        while True:
            chunk = os.read(self._from_child, 1 << 16)
            if not chunk:
                with self._cond:
                    self._cond.notify_all()
                return
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                message = json.loads(raw)
                with self._cond:
                    if "id" in message:
                        self._replies[message["id"]] = message
                    else:
                        self.events.append(message)
                    self._cond.notify_all()

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its reply (an error reply raises)."""
        with self._cond:
            self._next_id += 1
            number = self._next_id
        message: dict[str, Any] = {"id": number, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 30
        with self._cond:
            while number not in self._replies:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Chromium did not answer {method}")
                self._cond.wait(0.5)
            reply = self._replies.pop(number)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def page(self, method: str, **params: Any) -> dict[str, Any]:
        return self.call(method, self.session, **params)

    def open(self, path: Path) -> str:
        """Load a file and wait for its load event; returns its URL. Earlier events are
        forgotten, so what a test reads is this page's."""
        url = path.resolve().as_uri()
        with self._cond:
            self.events.clear()
        self.page("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")
        time.sleep(0.2)  # late console messages or requests would arrive now
        return url

    def open_blank(self) -> None:
        """An empty page without the report's Content-Security-Policy (for image checks)."""
        with self._cond:
            self.events.clear()
        self.page("Page.navigate", url="about:blank")
        self.wait_for("Page.loadEventFired")

    def wait_for(self, method: str, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events:
                    if event.get("method") == method:
                        return event
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no {method} within {timeout} s")
                self._cond.wait(0.5)

    def evaluate(self, expression: str, *, await_promise: bool = False) -> Any:
        result = self.page(
            "Runtime.evaluate",
            expression=expression,
            returnByValue=True,
            awaitPromise=await_promise,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self._events("Network.requestWillBeSent")]

    def problems(self) -> list[dict[str, Any]]:
        """Console messages, log entries of level warning or error, and exceptions."""
        found = list(self._events("Runtime.consoleAPICalled"))
        found += self._events("Runtime.exceptionThrown")
        found += [
            e for e in self._events("Log.entryAdded")
            if e["params"]["entry"]["level"] in ("warning", "error")
        ]  # fmt: skip
        return found

    def screenshot(self, clip: dict[str, float] | None = None) -> bytes:
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": clip is not None}
        if clip is not None:
            params["clip"] = clip
        return base64.b64decode(self.page("Page.captureScreenshot", **params)["data"])

    def pdf(self) -> bytes:
        return base64.b64decode(self.page("Page.printToPDF", printBackground=True)["data"])

    def _events(self, method: str) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self.events if e.get("method") == method]

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.call("Browser.close")
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_child)
        self._reader.join(5)
        os.close(self._from_child)
        self._profile.cleanup()


def _as_fds_3_and_4(read_end: int, write_end: int) -> None:
    """In the child, before exec: Chromium reads commands on fd 3 and writes on fd 4."""
    read_copy, write_copy = os.dup(read_end), os.dup(write_end)  # never clobber one with other
    os.dup2(read_copy, 3)  # dup2 makes the copies inheritable
    os.dup2(write_copy, 4)
