"""REDbot (which we did not write) as a test peer: a driver for its HttpResource API
and the checks the REDbot test modules share.

REDbot runs in a subprocess, since the listeners live in the test process's
unpatched gevent hub. The driver prints every note (the main response and each
of REDbot's follow-up requests) as JSON. It links each response linter to the
request it answers, which REDbot does not do by itself, so httplint can tell a
CORS preflight's answer from any other.
"""

from __future__ import annotations

import json
import os
import sys

import gevent
from gevent import subprocess

REDBOT_CLI = os.path.join(os.path.dirname(sys.executable), "redbot")
TIMEOUT = 60

DRIVER = r"""
import json, sys
from configparser import ConfigParser
import thor
from redbot.resource import HttpResource
from redbot.resource.fetch import RedFetcher

# REDbot builds each response linter without the request it answers, so httplint
# cannot tell a preflight's answer from any other (and calls its
# access-control-allow-methods/-headers/max-age misplaced). Tell it, for the main
# request and REDbot's follow-ups alike.
_set_request = RedFetcher.set_request
def set_request(self, *args, **kwargs):
    _set_request(self, *args, **kwargs)
    self.response.request = self.request
RedFetcher.set_request = set_request

def flat(notes, where):
    out = []
    for n in notes:
        out.append({"where": where, "id": type(n).__name__, "level": n.level.name,
                    "subject": n.subject, "summary": str(n.summary)})
        out += flat(n.subnotes or [], where)
    return out

url, method, headers = json.loads(sys.argv[1])
config = ConfigParser()
config.read_dict({"redbot": {"enable_local_access": "True"}})
res = HttpResource(config["redbot"])
res.set_request(url, method=method, headers=[tuple(h) for h in headers])

@thor.events.on(res)
def check_done():
    thor.stop()

res.check()
thor.run()
report = {"status": res.response.status_code,
          "error": str(res.fetch_error.desc) if res.fetch_error else None,
          "headers": res.response.headers.text,
          "notes": flat(res.response.notes, "main")}
for check_id, sub in res.subreqs.items():
    if sub.fetch_started and sub.response.complete:
        report["notes"] += flat(sub.response.notes, f"{check_id}:{sub.response.status_code}")
print(json.dumps(report))
"""


def run(args):
    proc = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{args[:2]} exited {proc.returncode}: {proc.stderr}"
    return json.loads(proc.stdout)


def cli_har(url):
    """``redbot -o har URL``: status, headers and the ``_red_messages`` of its one entry."""
    har = run([REDBOT_CLI, "-o", "har", url])
    assert "_red_error" not in har["log"], har["log"]["_red_error"]
    (entry,) = har["log"]["entries"]
    notes = [{"where": "main", "id": m["note_id"], "level": m["level"], "subject": m["subject"],
              "summary": m["summary"]} for m in flatten(entry["_red_messages"])]
    return {"status": entry["response"]["status"], "error": None,
            "headers": [(h["name"], h["value"]) for h in entry["response"]["headers"]], "notes": notes}


def flatten(messages):
    for m in messages:
        yield m
        yield from flatten(m.get("subnotes", []))


def api(url, headers=(), method="GET"):
    """REDbot's HttpResource on one request (its follow-ups included), in a subprocess."""
    return run([sys.executable, "-c", DRIVER, json.dumps([url, method, list(headers)])])


def check_all(jobs):
    """Run the REDbot jobs concurrently; a list of (label, report)."""
    greenlets = [(label, gevent.spawn(fn, *args)) for label, fn, *args in jobs]
    gevent.joinall([g for _, g in greenlets], raise_error=True)
    return [(label, g.value) for label, g in greenlets]


def assert_clean(results, expected_status, allowed=()):
    """No BAD/WARN notes (bar ``allowed`` ids); every report's status as expected."""
    problems = []
    for label, report in results:
        if report["error"] or report["status"] != expected_status:
            problems.append(f"{label}: status {report['status']} error {report['error']} "
                            f"headers {report['headers']}")
        for n in report["notes"]:
            if n["level"] in ("BAD", "WARN") and n["id"] not in allowed:
                problems.append(f"{label}: [{n['where']}] {n['level']} {n['id']} ({n['subject']}): {n['summary']}")
    assert not problems, "REDbot found:\n" + "\n".join(problems) + "\nresponse headers:\n" + "\n".join(
        f"{label}: {report['headers']}" for label, report in results)


def ids(results):
    return {n["id"] for _, report in results for n in report["notes"]}
