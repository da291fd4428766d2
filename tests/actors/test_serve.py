"""`fleet serve`'s parts above the registry: openpi's wire format, the batcher and the websocket server, with a small
real VLA policy (the registry-following server with openpi's own client is in tests/actors/test_serve_openpi.py)."""

from __future__ import annotations

import threading

import msgpack
import numpy as np
import pytest
import torch

from actors.serve import Batcher, PolicyServer, ServeConfig
from fleet.client.openpi import PolicyClient, ProtocolError, packb, unpackb
from fleet.embodiments import get_embodiment
from fleet.policy.config import debug_model_config
from fleet.policy.model import VLAModel
from fleet.policy.policy import VLAPolicy
from tests.policy.fakes import FAKE_ENCODER, HashEmbedder

TOKEN = "fleet_test-token"


def test_arrays_and_scalars_cross_the_wire_as_openpi_encodes_them() -> None:
    message = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.bool_(True), "s": "x",
               "n": np.array(["ab", "c"]), "i": np.int64(3)}  # fmt: skip
    back = unpackb(packb(message))
    np.testing.assert_array_equal(back["a"], message["a"])
    assert back["a"].dtype == np.float32 and back["a"].flags.writeable
    assert back["b"] is np.True_ and back["i"] == 3 and back["s"] == "x" and back["n"].tolist() == ["ab", "c"]
    raw = msgpack.unpackb(packb({"a": np.zeros(2, np.uint8)}), raw=False)
    assert raw["a"] == {b"__ndarray__": True, b"data": b"\0\0", b"dtype": "|u1", b"shape": [2]}  # openpi's layout


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ({b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "|O", b"shape": [1]}, "refused"),  # object pointers
        ({b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "<f4", b"shape": [3]}, "does not match"),
        ({b"__ndarray__": True, b"data": b"", b"dtype": "<f4", b"shape": [-1]}, "bad array shape"),
        ({b"__npgeneric__": True, b"data": 0, b"dtype": "|V8"}, "refused"),
    ],
)
def test_frames_that_would_build_unsafe_or_inconsistent_arrays_are_refused(frame: dict, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        unpackb(msgpack.packb({"x": frame}))
    with pytest.raises(ProtocolError, match="not a msgpack"):
        unpackb(b"\xc1")


def _policy(seed: int) -> VLAPolicy:
    torch.manual_seed(seed)
    return VLAPolicy(VLAModel(debug_model_config(text_encoder=FAKE_ENCODER)), embedder=HashEmbedder(), seed=seed)


def _obs(embodiment: str = "panda") -> dict:
    spec = get_embodiment(embodiment)
    return {"images": {"front": np.zeros((64, 64, 3), np.uint8)}, "proprio": np.zeros(spec.proprio_dim, np.float32),
            "prompt": "pick up the red cube", "embodiment": embodiment}  # fmt: skip


@pytest.fixture
def server():  # noqa: ANN201
    policies = {"1": _policy(1), "2": _policy(2)}
    serving = {"version": "1"}
    batcher = Batcher(lambda: (policies[serving["version"]], serving["version"]), max_batch=8, wait_s=0.05).start()
    server = PolicyServer(ServeConfig(port=0), batcher, metadata=lambda: {"model_version": serving["version"]},
                          authorize=lambda token: None if token == TOKEN else "unknown or revoked token")  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert server.ready.wait(10)
    yield server, serving, batcher
    server.stop()
    thread.join(10)
    batcher.stop()


def test_concurrent_clients_are_answered_in_batches_and_each_answer_names_its_version(server) -> None:  # noqa: ANN001
    server, serving, batcher = server
    uri = f"ws://127.0.0.1:{server.port}"
    clients = [PolicyClient(uri, api_key=TOKEN) for _ in range(4)]
    assert clients[0].metadata == {"model_version": "1"}
    replies: list = [None] * 4
    go = threading.Barrier(4)

    def ask(i: int) -> None:
        go.wait()
        replies[i] = clients[i].infer(_obs("panda" if i % 2 else "kuka"))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for i, reply in enumerate(replies):
        action_dim = get_embodiment("panda" if i % 2 else "kuka").action_dim
        assert reply["actions"].shape == (debug_model_config().chunk_size, action_dim)
        assert reply["actions"].dtype == np.float32 and reply["model_version"] == "1"
    assert max(batcher.batch_sizes) > 1  # the four arrived together and shared forwards

    serving["version"] = "2"  # the production alias moved: the next batch is served by the new version
    assert clients[0].infer(_obs())["model_version"] == "2"
    for client in clients:
        client.close()


def test_a_bad_observation_gets_its_reason_and_the_connection_goes_on(server) -> None:  # noqa: ANN001
    server, _, _ = server
    client = PolicyClient(f"ws://127.0.0.1:{server.port}", api_key=TOKEN)
    with pytest.raises(RuntimeError, match="proprio"):
        client.infer({**_obs(), "proprio": np.zeros(3, np.float32)})  # a panda has more joints than that
    with pytest.raises(RuntimeError, match="missing"):
        client.infer({"prompt": "pick"})
    assert client.infer(_obs())["actions"].shape[0] == debug_model_config().chunk_size  # still served
    client.close()


def test_a_client_without_a_valid_token_is_turned_away(server) -> None:  # noqa: ANN001
    from websockets.exceptions import InvalidStatus

    server, _, _ = server
    for token in (None, "fleet_wrong"):
        with pytest.raises(InvalidStatus) as refused:
            PolicyClient(f"ws://127.0.0.1:{server.port}", api_key=token)
        assert refused.value.response.status_code == 401
