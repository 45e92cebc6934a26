"""Line and branch coverage of the code under test, reached by a fuzz corpus.

    PYTHONPATH=$PWD python tools/fuzz/coverage_report.py TARGET [CORPUS_DIR ...]

Replays the corpus (default: ``.fuzz/TARGET`` and ``tests/fuzz/corpus/TARGET``)
through the target under coverage.py and prints, for each function under test,
its statement + branch coverage and the lines never reached. libFuzzer's own
``cov:`` figure counts instrumented edges across rr and hpack; this is the
figure to read against the source.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# target → (file, functions under test), or a list of them
UNDER_TEST = {
    "h1_head": ("rr/http1/codec.py", ["parse_head", "_split_target", "_judge_content_length",
                                       "_judge_transfer_coding", "_list_members", "_check_partial_head",
                                       "_diagnose_head", "_diagnose_request_line", "_check_version",
                                       "_check_line_lengths", "_check_fields", "Parser.feed",
                                       "Parser._feed"]),
    "h1_chunked": ("rr/http1/codec.py", ["ChunkedDecoder.feed", "ChunkedDecoder._feed",
                                          "ChunkedDecoder._check_partial_size_line",
                                          "ChunkedDecoder._start_chunk", "ChunkedDecoder._trailers",
                                          "_parse_fields"]),
    "h2_machine": ("rr/http2/machine.py", None),
    "h2_hpack": [("rr/http2/codec.py", ["table_neutral", "_skip_int"]), ("rr/fields.py", ["validate_request"])],
    "response_fields": ("rr/exchange.py", ["_check", "response_fields"]),
    "proxy_header": ("rr/proxy_protocol.py", ["parse", "_parse_v1", "_v1_address", "_v1_port", "_parse_v2",
                                              "_unix_path", "_tlvs", "_ssl", "_check_crc"]),
}


def main(argv: list[str]) -> None:
    import coverage

    target = argv[1]
    dirs = [Path(a) for a in argv[2:]] or [ROOT / ".fuzz" / target, ROOT / "tests" / "fuzz" / "corpus" / target]
    entry = UNDER_TEST[target]
    parts = entry if isinstance(entry, list) else [entry]
    sys.path.insert(0, str(ROOT))
    cov = coverage.Coverage(branch=True, config_file=False, include=[str(ROOT / path) for path, _ in parts])
    cov.start()
    from tools.fuzz.run import _quiet_logs
    from tools.fuzz.targets import TARGETS

    _quiet_logs()
    n = 0
    for folder in dirs:
        for file in sorted(folder.iterdir()) if folder.is_dir() else []:
            TARGETS[target](file.read_bytes())
            n += 1
    cov.stop()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cov.json"
        cov.json_report(outfile=str(out))
        report = json.loads(out.read_text())
    for path, functions in parts:
        _report(target, n, path, functions, report)


def _report(target: str, n: int, path: str, functions: list[str] | None, report: dict) -> None:
    data = next(v for k, v in report["files"].items() if k.endswith(path))
    print(f"{target}: {n} inputs; {path} as a whole: {data['summary']['percent_covered_display']} %")
    names = functions or sorted(k for k, v in data["functions"].items()
                                if k and v["summary"]["num_statements"] and "." in k)
    total_run = total = 0
    for name in names:
        fn = data["functions"].get(name)
        if fn is None:
            print(f"  {name}: not found")
            continue
        s = fn["summary"]
        total += s["num_statements"] + s.get("num_branches", 0)
        total_run += s["covered_lines"] + s.get("covered_branches", 0)
        missing = fn["missing_lines"]
        print(f"  {name}: {s['percent_covered_display']} %" + (f" (lines never reached: {missing})" if missing else ""))
    if total:
        print(f"  functions under test together: {100 * total_run / total:.0f} % of statements + branches")


if __name__ == "__main__":
    main(sys.argv)
