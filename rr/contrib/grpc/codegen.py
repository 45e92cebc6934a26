"""Run grpcio-tools on a ``.proto`` file and import what it generates (for examples, tests, scripts).

What it owns: one call of ``grpc_tools.protoc`` (in-process) into a directory
the caller chooses, and importing the ``<name>_pb2`` and ``<name>_pb2_grpc``
modules from there.

What it must never do: write next to the ``.proto`` or into the package tree
(generated code is not committed), or replace grpcio-tools' generator with one
of rr's own. Applications with a build step run ``python -m grpc_tools.protoc``
themselves and import the modules as usual.

A ``.proto`` file can be loaded once per process: protobuf's default
descriptor pool (which reflection reads) refuses a second, different
definition of the same file.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType


def generate(proto: str | Path, out_dir: str | Path, include: tuple[str | Path, ...] = ()) -> tuple[ModuleType, ModuleType]:
    """Generate ``<name>_pb2.py`` and ``<name>_pb2_grpc.py`` in ``out_dir`` and import both."""
    from grpc_tools import protoc

    proto, out_dir = Path(proto).resolve(), Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = Path(protoc.__file__).parent / "_proto"
    args = ["grpc_tools.protoc", f"-I{proto.parent}", *(f"-I{Path(p)}" for p in include), f"-I{well_known}",
            f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", str(proto)]
    if protoc.main(args) != 0:
        raise RuntimeError(f"grpc_tools.protoc failed on {proto}")
    name = proto.stem
    sys.path.insert(0, str(out_dir))
    try:
        return importlib.import_module(f"{name}_pb2"), importlib.import_module(f"{name}_pb2_grpc")
    finally:
        sys.path.remove(str(out_dir))
