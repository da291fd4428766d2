"""Robots on a Ray cluster of two nodes (Ray's own multi-node test cluster, both on this machine): `run_fleet` joins
it by address, spreads the robots over the nodes, and when one node is lost the robots it carried are started again
on the node left and finish their episodes, while the others never stop."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import pytest

from actors.sim_fleet import FleetConfig, run_fleet
from fleet.registry import Registry, publish_model
from fleet.settings import Settings
from tests.actors.test_fleet_loop import _model

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
EPISODES = 10


def test_robots_spread_over_two_nodes_and_survive_the_loss_of_one(stack: Settings) -> None:
    import ray
    from ray.cluster_utils import Cluster

    settings = stack.model_copy(update={"model_name": f"vla-cluster-{uuid.uuid4().hex[:6]}"})
    registry = Registry(settings)
    v1 = publish_model(registry, _model(1), parent_version=None)
    registry.promote(v1.version, actor="test", role="admin", reason="seed")

    ray.shutdown()  # this process may hold the local node another test started: the robots go to the cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    worker = cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    prefix = f"node{uuid.uuid4().hex[:4]}"
    config = FleetConfig(n=2, tasks=("pick",), embodiments=("panda", "kuka"), episodes=EPISODES, duration_s=None,
                         poll_interval_s=600, robot_prefix=prefix, address=cluster.address)  # fmt: skip
    placed: dict[str, Any] = {}

    def progress(reports: list[dict]) -> None:
        if placed or not all(r.get("episodes", 0) >= 1 for r in reports):
            return
        robots = {r["robot_id"] for r in reports}
        placed["nodes"] = {rid: ray.get(ray.get_actor(rid).node.remote()) for rid in robots}
        placed["lost"] = sorted(rid for rid, node in placed["nodes"].items() if node == worker.node_id)
        placed["episodes"] = {r["robot_id"]: r["episodes"] for r in reports}
        cluster.remove_node(worker)  # the machine under those robots goes away

    try:
        results = run_fleet(settings, config, on_progress=progress)
    finally:
        ray.shutdown()
        with contextlib.suppress(Exception):
            cluster.shutdown()
    assert placed, "the robots never reported an episode"
    assert len(set(placed["nodes"].values())) == 2, placed  # spread: one robot on each node
    [lost] = placed["lost"]
    by_robot = {r["robot_id"]: r for r in results}
    assert by_robot[lost]["restarts"] >= 1 and by_robot[lost]["episodes"] == EPISODES  # replaced, finished
    assert by_robot[lost]["state"] != "lost" and placed["episodes"][lost] < EPISODES
    [kept] = set(by_robot) - {lost}
    assert by_robot[kept]["restarts"] == 0 and by_robot[kept]["episodes"] == EPISODES  # never stopped
