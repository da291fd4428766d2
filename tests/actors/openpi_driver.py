"""openpi's own client against a fleet policy server: run with the interpreter of an environment holding only
`openpi-client` (tests/actors/test_serve_openpi.py). Prints one JSON line of what it saw.

    python openpi_driver.py PORT TOKEN [WANT_VERSION]

With WANT_VERSION it asks again (for up to 90 s) until an answer names that version, as a robot keeps acting while
the server swaps versions under it.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from openpi_client import websocket_client_policy


def observation(embodiment: str, proprio_dim: int) -> dict:
    return {
        "images": {"front": np.zeros((64, 64, 3), np.uint8)},
        "proprio": np.zeros(proprio_dim, np.float32),
        "prompt": "pick up the red cube",
        "embodiment": embodiment,
    }


def main(port: int, token: str, want: str | None) -> None:
    policy = websocket_client_policy.WebsocketClientPolicy(host="127.0.0.1", port=port, api_key=token)
    meta = policy.get_server_metadata()
    seen = {"metadata_version": meta["model_version"], "answers": {}}
    for name, dims in meta["embodiments"].items():
        reply = policy.infer(observation(name, dims["proprio_dim"]))
        seen["answers"][name] = {
            "shape": list(reply["actions"].shape),
            "dtype": str(reply["actions"].dtype),
            "version": reply["model_version"],
            "action_dim": dims["action_dim"],
        }
    try:
        policy.infer({"prompt": "pick up the red cube", "embodiment": "panda"})
    except RuntimeError as err:
        seen["bad_request"] = str(err)
    if want is not None:
        deadline = time.monotonic() + 90
        version = None
        while version != want and time.monotonic() < deadline:
            version = policy.infer(observation("panda", meta["embodiments"]["panda"]["proprio_dim"]))["model_version"]
            time.sleep(0.2)
        seen["later_version"] = version
    print(json.dumps(seen))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
