"""`fleet serve` on the real registry, driven by openpi's own `openpi-client` from an environment of its own: action
chunks of the right shape for each embodiment, the version named in each answer, a bad request answered with its
reason, and a newly promoted version served without a restart."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
import torch

from dashboards import crud
from fleet.db.migrate import upgrade
from fleet.db.session import make_engine, session_factory
from fleet.policy.config import debug_model_config
from fleet.policy.model import VLAModel
from fleet.registry import Registry, announce, publish_model
from fleet.settings import Settings
from fleet.stack.process import free_port
from tests.envs import cached_env
from tests.faults.helpers import ChildService

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
# openpi-client imports typing_extensions without declaring it
OPENPI_CLIENT = ("openpi-client==0.1.2", "typing-extensions==4.16.0")
DRIVER = Path(__file__).with_name("openpi_driver.py")


def _model(seed: int) -> VLAModel:
    torch.manual_seed(seed)
    return VLAModel(debug_model_config())


def test_openpi_client_gets_chunks_from_fleet_serve_and_follows_a_promotion(stack: Settings, tmp_path: Path) -> None:
    openpi = cached_env("openpi", OPENPI_CLIENT)
    name = f"vla-serve-{uuid.uuid4().hex[:6]}"
    db_url = f"sqlite:///{tmp_path / 'fleet.db'}"
    upgrade(db_url)
    with session_factory(make_engine(db_url))() as s, s.begin():
        _, token = crud.create_token(s, name="arm-1", scopes=["models:read"])
        _, wrong_scope = crud.create_token(s, name="arm-2", scopes=["robot:produce"], robot_id="arm-2")
    settings = stack.model_copy(update={"model_name": name})
    registry = Registry(settings)
    v1 = publish_model(registry, _model(1), parent_version=None)
    registry.promote(v1.version, actor="test", role="admin", reason="seed")

    port = free_port()
    env = {"FLEET_MODEL_NAME": name, "FLEET_DATABASE_URL": db_url}
    server = ChildService(["fleet", "serve", "--port", str(port), "--batch-wait-ms", "5"], env=env,
                          log_path=tmp_path / "serve.log").start()  # fmt: skip

    def drive(*args: str) -> dict:  # one openpi client session; its JSON summary
        done = subprocess.run([openpi, str(DRIVER), str(port), *args], capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.alive() and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        refused = httpx.get(f"http://127.0.0.1:{port}/", headers={"Authorization": f"Api-Key {wrong_scope}",
                            "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}, timeout=10)  # fmt: skip
        assert refused.status_code == 401 and "models:read" in refused.text

        seen = drive(token)
        assert seen["metadata_version"] == v1.version
        horizon = debug_model_config().chunk_size
        for embodiment, answer in seen["answers"].items():
            assert answer["shape"] == [horizon, answer["action_dim"]], embodiment
            assert answer["dtype"] == "float32" and answer["version"] == v1.version
        assert "missing" in seen["bad_request"]

        v2 = publish_model(registry, _model(2), parent_version=v1.version)
        # a client acting on v1 when the alias moves: the same connection's answers turn to v2, no restart
        acting = subprocess.Popen([openpi, str(DRIVER), str(port), token, v2.version], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)  # fmt: skip
        time.sleep(5)
        registry.promote(v2.version, actor="test", role="admin", reason="better")
        announce(settings, v2, event="promoted", alias="production", actor="test", reason="better")
        out, err = acting.communicate(timeout=180)
        assert acting.returncode == 0, err[-3000:]
        later = json.loads(out.strip().splitlines()[-1])
        assert later["metadata_version"] == v1.version and later["later_version"] == v2.version
    finally:
        server.stop()
