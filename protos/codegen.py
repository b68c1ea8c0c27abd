"""Regenerate the committed gRPC code from ``protos/v1/recall.proto``.

    python protos/codegen.py           # rewrite the generated files
    python protos/codegen.py --check   # exit 1 when the committed files are stale (CI)

The proto is compiled from a temporary root where ``recall_protos`` links to
this folder, so the generated imports read ``from recall_protos.v1 import ...``
exactly as the installed package is named, with no rewriting.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = "recall_protos/v1/recall.proto"
GENERATED = ("v1/recall_pb2.py", "v1/recall_pb2.pyi", "v1/recall_pb2_grpc.py")


def generate(out_root: Path) -> None:
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        source_root = Path(tmp) / "src"
        (source_root / "recall_protos" / "v1").mkdir(parents=True)
        (source_root / PROTO).write_bytes((HERE / "v1" / "recall.proto").read_bytes())
        (out_root / "recall_protos" / "v1").mkdir(parents=True, exist_ok=True)
        args = ["protoc", f"-I{source_root}", f"--python_out={out_root}",
                f"--pyi_out={out_root}", f"--grpc_python_out={out_root}", PROTO]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Only compare; exit 1 if stale.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out_root = Path(tmp)
        generate(out_root)
        stale = []
        for relative in GENERATED:
            fresh = (out_root / "recall_protos" / relative).read_bytes()
            target = HERE / relative
            if not target.exists() or target.read_bytes() != fresh:
                stale.append(relative)
                if not args.check:
                    target.write_bytes(fresh)
    if args.check and stale:
        print(f"stale generated files: {', '.join(stale)} (run python protos/codegen.py)",
              file=sys.stderr)
        raise SystemExit(1)
    print("generated files are up to date" if not stale else f"regenerated {', '.join(stale)}")


if __name__ == "__main__":
    main()
