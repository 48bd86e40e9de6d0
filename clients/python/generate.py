#!/usr/bin/env python3
"""Generates the modbot Python client from proto/ with grpcio-tools.

    python clients/python/generate.py OUT_DIR

writes OUT_DIR/modbot/v1/*_pb2.py, *_pb2_grpc.py and *.pyi. Nothing generated is committed:
the protos are the source of truth, and this script is how every tool gets its client.
"""

import pathlib
import sys

from grpc_tools import protoc
import grpc_tools

REPO = pathlib.Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO / "proto"


def generate(out_dir: pathlib.Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "modbot" / "v1").glob("*.proto"))
    if not protos:
        raise SystemExit(f"no .proto files under {PROTO_ROOT}")
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    generate(pathlib.Path(sys.argv[1]))
