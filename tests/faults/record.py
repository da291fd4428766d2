"""What a fault test measured, for bench/faults.py: one JSON line per fault appended to `$FLEET_FAULTS_RECORD`.

Outside the bench the variable is unset and nothing is written; the tests assert the same numbers themselves."""

from __future__ import annotations

import json
import os
from typing import Any


def record_fault(case: str, **measured: Any) -> None:
    """Append `{"case": case, **measured}` to the file `$FLEET_FAULTS_RECORD` names, if it names one."""
    path = os.environ.get("FLEET_FAULTS_RECORD")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"case": case, **measured}, sort_keys=True) + "\n")
