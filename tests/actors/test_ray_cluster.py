"""Robots and the learner on a Ray cluster (Ray's own multi-node test cluster, all on this machine): a node kept for
the learner (fleet.placement) takes the data-parallel learners and no robot; `run_fleet` joins the cluster by
address, spreads the robots over the other two nodes, and when one node is lost the robots it carried are started
again on the node left and finish their episodes, while the others never stop."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import pytest

from actors.sim_fleet import ROBOT_PLACEMENT, FleetConfig, run_fleet
from fleet.placement import LEARNER_RESOURCE, LEARNER_ROLE, ROLE_LABEL
from fleet.policy.config import debug_model_config
from fleet.registry import Registry, publish_model
from fleet.settings import Settings
from learner.rllib import RLlibConfig, VLALearner
from tests.actors.test_fleet_loop import _model

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
EPISODES = 10


def test_robots_spread_over_two_nodes_off_the_learners_and_survive_the_loss_of_one(stack: Settings) -> None:
    import ray
    from ray.cluster_utils import Cluster

    settings = stack.model_copy(update={"model_name": f"vla-cluster-{uuid.uuid4().hex[:6]}"})
    registry = Registry(settings)
    v1 = publish_model(registry, _model(1), parent_version=None)
    registry.promote(v1.version, actor="test", role="admin", reason="seed")

    ray.shutdown()  # this process may hold the local node another test started: the robots go to the cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    worker = cluster.add_node(num_cpus=2)
    learner_node = cluster.add_node(num_cpus=2, labels={ROLE_LABEL: LEARNER_ROLE}, resources={LEARNER_RESOURCE: 1})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    learner = VLALearner(RLlibConfig(num_learners=1, learner_node=True), model_config=debug_model_config())
    try:  # the data-parallel learner sits on the node kept for it
        [learner_at] = [
            r.get() for r in learner.group.foreach_learner(lambda _: ray.get_runtime_context().get_node_id())
        ]
    finally:
        learner.shutdown()
    assert learner_at == learner_node.node_id
    head = cluster.head_node.node_id

    @ray.remote(num_cpus=0.1)
    class Probe:
        def node(self) -> str:
            return ray.get_runtime_context().get_node_id()

    probes = [Probe.options(**ROBOT_PLACEMENT).remote() for _ in range(6)]  # spread over three nodes, two would go
    assert set(ray.get([p.node.remote() for p in probes])) == {head, worker.node_id}  # to the learner's without it
    for probe in probes:
        ray.kill(probe)
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
    assert set(placed["nodes"].values()) == {head, worker.node_id}, placed  # spread, one robot each, none on the
    lost = placed["lost"]  # learner's node
    by_robot = {r["robot_id"]: r for r in results}
    for robot in lost:
        assert by_robot[robot]["restarts"] >= 1 and by_robot[robot]["episodes"] == EPISODES  # replaced, finished
        assert by_robot[robot]["state"] != "lost" and placed["episodes"][robot] < EPISODES
    for robot in set(by_robot) - set(lost):
        assert by_robot[robot]["restarts"] == 0 and by_robot[robot]["episodes"] == EPISODES  # never stopped
