"""Regenerate the committed gRPC/protobuf modules from proto/.

Usage: python scripts/gen_proto.py [OUT_DIR]

OUT_DIR defaults to the repository root, so proto/provenance/v1/x.proto becomes
provenance/v1/x_pb2.py, x_pb2.pyi and x_pb2_grpc.py. tests/test_proto_fresh.py runs this
into a temporary folder and fails when the committed files differ.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"


def generate(out_dir: Path) -> list[Path]:
    """Run protoc over every .proto under proto/; return the .proto files compiled."""
    protos = sorted(PROTO_DIR.rglob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(p.relative_to(PROTO_DIR)) for p in protos],
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")
    return protos


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "out_dir",
        nargs="?",
        type=Path,
        default=ROOT,
        help="where to write (default: the repository)",
    )
    out = parser.parse_args().out_dir
    out.mkdir(parents=True, exist_ok=True)
    done = generate(out)
    print(f"generated {len(done)} proto file(s) into {out}")
