"""The committed generated gRPC code matches ``protos/v1/recall.proto`` (CI fails when stale)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_generated_code_is_fresh() -> None:
    done = subprocess.run([sys.executable, str(REPO / "protos" / "codegen.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr or done.stdout


def test_the_service_has_the_documented_methods() -> None:
    from recall_protos.v1 import recall_pb2

    service = recall_pb2.DESCRIPTOR.services_by_name["RecallService"]
    assert {m.name for m in service.methods} >= {"Retrieve", "BatchRetrieve", "ListSources",
                                                 "Reload"}
