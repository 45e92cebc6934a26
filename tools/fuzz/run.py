"""Coverage-guided fuzzing of one target of ``tools/fuzz/targets.py`` with atheris (libFuzzer).

    PYTHONPATH=$PWD python tools/fuzz/run.py TARGET [libFuzzer options] [CORPUS_DIR ...]

Without a corpus directory the target's seed corpus (``tests/fuzz/corpus/TARGET``)
is read, and new inputs are kept in ``.fuzz/TARGET`` (not committed), so the seeds
stay as they are. Useful options: ``-runs=N`` (executions), ``-max_total_time=S``,
``-max_len=N`` (default 4096 here), ``-print_final_stats=1``. A failing input is
written as ``crash-<sha1>`` in the working directory; ``--replay TARGET PATH...``
runs files (or every file of a directory) through the target without atheris
(to debug a finding, or to measure line coverage of a corpus with coverage.py).

What it owns: the atheris setup (which modules are instrumented: rr and hpack)
and the mapping of a failure to libFuzzer's crash report. It must not hold
any property of its own (those are in ``targets.py``).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "fuzz" / "corpus"


def _quiet_logs() -> None:
    # The machine logs a crashed stream worker at error level: not a finding, just noise.
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    logging.disable(logging.CRITICAL)


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__)
        raise SystemExit(2)
    sys.path.insert(0, str(ROOT))
    _quiet_logs()
    if argv[1] == "--replay":
        from tools.fuzz.targets import TARGETS

        target = TARGETS[argv[2]]
        n = 0
        for name in argv[3:]:
            path = Path(name)
            for file in sorted(path.iterdir()) if path.is_dir() else [path]:
                target(file.read_bytes())
                n += 1
        print(f"{argv[2]}: {n} inputs replayed, no property broken")
        return

    import atheris

    with atheris.instrument_imports(include=["rr", "hpack", "tools.fuzz"]):
        from tools.fuzz.targets import TARGETS
    name = argv[1]
    if name not in TARGETS:
        raise SystemExit(f"unknown target {name!r}; one of {', '.join(TARGETS)}")
    target = TARGETS[name]
    args = [argv[0], *argv[2:]]
    if not any(a.startswith("-max_len=") for a in args):
        args.append("-max_len=4096")
    if not any(not a.startswith("-") for a in args[1:]):
        out = ROOT / ".fuzz" / name
        out.mkdir(parents=True, exist_ok=True)
        args += [str(out), str(CORPUS / name)]
    atheris.Setup(args, target)
    atheris.Fuzz()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main(sys.argv)
