"""One robot, wired to the real services: Kafka transport, registry alias follower, command listener.

`build_robot(settings, config)` returns a `RobotRuntime` ready to `run()`, with:
  * a spooling Kafka transport (nothing the robot produces is lost while the broker is down), or, with
    FLEET_INGEST_URL and FLEET_ROBOT_TOKEN, a spooling HTTPS transport through the dashboard for a robot with no
    route to Kafka (its reloader then learns of new versions by polling the registry alone),
  * a `HotReloader` on the `production` alias, woken by `fleet.models` events, that loads only versions signed by a
    key in FLEET_TRUSTED_KEYS_FILE (the start-up model too),
  * a listener that hands `fleet.commands` addressed to this robot to the runtime (through the dashboard, a poll
    of its command feed, for a robot posting over HTTPS).
A real robot uses the same function with its own `env` (driver) instead of the simulator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from actors.reload import HotReloader, ReloadConfig, Swap
from actors.runtime import RobotConfig, RobotRuntime
from actors.supervisor import SupervisorConfig, make_supervisor
from fleet.client import Listener, listen_for_commands, robot_transport
from fleet.client import listen as listen_to_fleet
from fleet.schemas import Command
from fleet.settings import Settings
from fleet.signing import SignedVersion, load_trusted_keys

log = logging.getLogger(__name__)


class NoProductionModel(RuntimeError):
    """The registry has no production version yet."""


@dataclass
class RobotHandle:
    """A built robot and the background pieces to close with it."""

    runtime: RobotRuntime
    reloader: HotReloader
    transport: Any
    listener: Listener | None  # model events and this robot's commands
    unwatch: Callable[[], None] = field(default=lambda: None)  # stops exporting the runtime's metrics

    def close(self) -> None:
        self.unwatch()
        if self.listener is not None:
            self.listener.stop(timeout_s=10)
        self.reloader.stop()
        self.transport.close(timeout_s=10)


def policy_loader(checkpoint: Path, signed: SignedVersion) -> Any:
    """Verified VLA policy from a downloaded checkpoint whose files have the signed sha256s (else CheckpointError)."""
    from fleet.policy import VLAPolicy

    return VLAPolicy.from_checkpoint(
        checkpoint, expected_sha256=signed.weights_sha256, expected_config_sha256=signed.config_sha256, num_threads=1
    )


def first_version(reloader: HotReloader, who: str) -> Swap:
    """The version to start with, loaded and verified as every later one is (NoProductionModel saying why not)."""
    first = reloader.check_once()
    if first is None:
        reason = reloader.stats.last_error or "no version has the production alias"
        raise NoProductionModel(
            f"{who}: no usable production model ({reason}). "
            "Run `make demo` (registers version 1) or `fleet models promote VERSION`."
        )
    reloader.take_ready()
    return first


def listen_for_events(
    settings: Settings,
    listener_id: str,
    reloader: HotReloader,
    on_command: Callable[[Command], None] | None,
) -> Listener:
    """A started thread consuming fleet.models (wakes the reloader) and, with `on_command`, the fleet.commands keyed
    to `listener_id` (a robot's id). The broker down only delays a new version: the alias poll still finds it."""
    return listen_for_commands(settings, listener_id, on_command, on_model=reloader.notify)


def build_robot(
    settings: Settings,
    config: RobotConfig,
    *,
    env: Any | None = None,
    supervision: str = "takeover",
    supervisor_config: SupervisorConfig | None = None,
    poll_interval_s: float = 10.0,
    listen: bool = True,
) -> RobotHandle:
    """Build a robot on the real services; blocks only at start-up, to fetch the production model.

    `supervision` (actors.supervisor.SUPERVISION): "takeover", the scripted expert takes over a robot that
    stalls; "stop", a stalled episode is ended as a failure; "off", nothing watches the robot.
    """
    from fleet.observability import watch_robots
    from fleet.registry import Registry
    from fleet.transport import publish

    keys = load_trusted_keys(settings)  # first: production without FLEET_TRUSTED_KEYS_FILE stops here
    if supervisor_config is not None:  # each robot draws its own "struggling" episodes
        supervisor_config = replace(supervisor_config, seed=config.seed)
    env_factory = None
    if env is None:
        from fleet.sim.registry import make_env

        env = make_env(config.task, config.embodiment, seed=config.seed, scenario=config.scenario)

        def env_factory(task: str) -> tuple[Any, Any]:
            new_env = make_env(task, config.embodiment, seed=config.seed, scenario=config.scenario)
            return new_env, make_supervisor(new_env, supervision, supervisor_config)

    transport = robot_transport(settings, config.robot_id)
    registry = Registry(settings, sessions=None)
    reloader = HotReloader(
        ReloadConfig(poll_interval_s=poll_interval_s, event_delay_s=config.reload_delay_s),
        registry=registry,
        loader=policy_loader,
        keys=keys,
        robot_id=config.robot_id,
    )
    try:
        first = first_version(reloader, f"robot {config.robot_id}")
    except NoProductionModel:
        transport.close(timeout_s=1)
        raise
    runtime = RobotRuntime(
        config,
        env=env,
        policy=first.policy,
        model_version=first.version,
        publish=lambda message: publish(transport, message),
        reloader=reloader,
        supervisor=make_supervisor(env, supervision, supervisor_config),
        spooled=lambda: transport.producer.spooled,
        env_factory=env_factory,
    )
    reloader.warmup = runtime.warm_up
    reloader.pace = runtime.wait_for_slack
    reloader.start()
    listener = (
        listen_to_fleet(settings, config.robot_id, transport, runtime.submit_command, on_model=reloader.notify)
        if listen
        else None
    )
    # This process's /metrics (if it serves one) carries the robot's counters; a Ray fleet exports via its driver.
    unwatch = watch_robots(lambda: [runtime.metrics()])
    return RobotHandle(runtime, reloader, transport, listener, unwatch)
