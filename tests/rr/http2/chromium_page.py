"""Open one page in headless Chromium and report what the browser saw, as JSON.

Run by tests/rr/http2/test_chromium.py as a subprocess (the rr server lives in
the test process's gevent hub, so the blocking Playwright client stays out of
it). The one argument is a JSON object:

    url            the page to open (https://127.0.0.1:PORT/...)
    chromium       the browser binary (Debian's /usr/bin/chromium)
    profile        an empty directory for Chromium's user-data-dir
    spki           base64 SHA-256 of the server certificate's public key: the one
                   certificate Chromium is told to accept
    evaluate       a JavaScript function source, called in the page after "load";
                   its (awaited) return value is reported
    timeout_ms     safety net for navigation and evaluation
    flags          (optional) more Chromium flags, e.g. ``--origin-to-force-quic-on=...``
    before         (optional) URLs to open first, in order (e.g. a page whose Alt-Svc
                   the browser should learn before ``url`` is opened)

The last line of stdout is a JSON object: ``result`` (the function's value),
``responses`` (every response the DevTools Network domain reported: url,
status, protocol, connectionId, connectionReused), ``console_errors`` and
``page_errors``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from playwright.sync_api import sync_playwright

FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def run(spec: dict[str, Any]) -> dict[str, Any]:
    timeout = spec.get("timeout_ms", 30_000)
    responses: list[dict[str, Any]] = []
    console_errors: list[str] = []
    page_errors: list[str] = []

    def on_response(event: dict[str, Any]) -> None:
        r = event["response"]
        responses.append({
            "url": r["url"],
            "status": r["status"],
            "protocol": r.get("protocol"),
            "connectionId": r.get("connectionId"),
            "connectionReused": r.get("connectionReused"),
            "type": event.get("type"),
        })

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            spec["profile"],
            executable_path=spec["chromium"],
            headless=True,
            args=[*FLAGS, f"--ignore-certificate-errors-spki-list={spec['spki']}", *spec.get("flags", [])],
            timeout=timeout,
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(timeout)
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            cdp = context.new_cdp_session(page)
            cdp.on("Network.responseReceived", on_response)
            cdp.send("Network.enable")
            for url in spec.get("before", []):
                page.goto(url, wait_until="load")
            page.goto(spec["url"], wait_until="load")
            result = page.evaluate(spec["evaluate"])
            # Events are delivered on the same pipe as the evaluate reply; one more
            # round trip makes sure every responseReceived before it was handled.
            cdp.send("Runtime.evaluate", {"expression": "0"})
        finally:
            context.close()
    return {
        "result": result,
        "responses": responses,
        "console_errors": console_errors,
        "page_errors": page_errors,
    }


def main() -> None:
    report = run(json.loads(sys.argv[1]))
    sys.stdout.write("\n" + json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
