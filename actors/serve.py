"""`fleet serve`: the production version behind openpi's websocket protocol, for robots that only stream.

A robot whose computer cannot run the model (or a team whose robots already talk to openpi servers) gets action
chunks over the network: openpi's own `openpi_client.websocket_client_policy.WebsocketClientPolicy` works unchanged,
and so does `fleet.client.openpi.PolicyClient`. The server follows the registry's production alias the way robots do
(`actors.reload.HotReloader`: signature-checked, refused versions never served, new versions swapped in between
batches, woken by `fleet.models` events), so every robot behind it moves to a new version together.

Each request is one observation (fleet's keys: images, proprio, instruction (or openpi's "prompt"), embodiment,
task); each response is {"actions": float32 (H, action_dim), "model_version": the version that made them,
"server_timing": {"infer_ms", "batch"}}. Inference runs off the event loop in one worker thread, which answers the
requests that arrived together in one batched forward (`VLAPolicy.infer_many`): a forward of many rows costs far
less per row than one of one row. A bad observation gets a text frame naming what is wrong and the connection stays
open; a client needs a token with the `models:read` scope (openpi's `Api-Key` header, or `Bearer`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http
import logging
import queue
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.client.openpi import ProtocolError, packb, unpackb

log = logging.getLogger(__name__)


class BadObservation(ValueError):
    """A request that is not an observation this model can act on (the reason goes back to the client)."""


def to_observation(message: Any) -> dict[str, Any]:
    """Fleet's observation from a request: openpi's "prompt" stands for "instruction"; "task" is optional. The
    batcher checks the rest against the model (`fleet.policy.base.check_observation`)."""
    if not isinstance(message, Mapping):
        raise BadObservation(f"a request is a map of observation fields, got {type(message).__name__}")
    obs = dict(message)
    if "instruction" not in obs and "prompt" in obs:
        obs["instruction"] = obs.pop("prompt")
    obs.setdefault("task", "")
    return obs


def metadata(config: Any, version: str) -> dict[str, Any]:
    """What a client is told on connecting: the version served and the shapes the model takes and gives."""
    return {
        "server": "fleet", "model_version": version, "cameras": list(config.cameras),
        "image_size": config.image_size, "action_horizon": config.chunk_size,
        "embodiments": {e.name: {"action_dim": e.action_dim, "proprio_dim": e.proprio_dim}
                        for e in config.embodiments},
    }  # fmt: skip


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 16  # requests answered by one forward at most
    batch_wait_ms: float = 2.0  # after the first request of a batch, wait this long for others to join it
    certfile: Path | None = None  # TLS (wss://); production refuses to serve without it
    keyfile: Path | None = None

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.batch_wait_ms < 0:
            raise ValueError("max_batch must be >= 1 and batch_wait_ms >= 0")
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("give the TLS certificate and its key together")


@dataclass
class _Request:
    obs: dict[str, Any]
    future: concurrent.futures.Future[dict[str, Any]]


class Batcher:
    """One worker thread answers every connection's requests, those that arrived together in one forward.

    `current()` gives (policy, version) at each batch, so a new version takes over between batches and every
    response names the version that made it.
    """

    def __init__(self, current: Callable[[], tuple[Any, str]], *, max_batch: int, wait_s: float) -> None:
        self.current, self.max_batch, self.wait_s = current, max_batch, wait_s
        self.batch_sizes: Counter[int] = Counter()  # how many requests each forward answered
        self.clients = 0  # connections open now (the server counts them)
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serve-batcher", daemon=True)

    def start(self) -> Batcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def submit(self, obs: dict[str, Any]) -> concurrent.futures.Future[dict[str, Any]]:
        request = _Request(obs, concurrent.futures.Future())
        self._queue.put(request)
        return request.future

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                batch = [self._queue.get(timeout=0.2)]
            except queue.Empty:
                continue
            # Waiting for company only pays when someone else may come: a lone client gets its chunk at once.
            deadline = time.monotonic() + (self.wait_s if self.clients > 1 else 0.0)
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            self._answer(batch)

    def _answer(self, batch: list[_Request]) -> None:
        from fleet.policy.base import check_observation

        policy, version = self.current()
        valid = []
        for request in batch:
            try:
                check_observation(request.obs, policy.config)
            except (KeyError, ValueError, TypeError) as err:
                request.future.set_exception(BadObservation(str(err).strip("'\"")))
            else:
                valid.append(request)
        if not valid:
            return
        started = time.perf_counter()
        try:
            chunks = policy.infer_many([r.obs for r in valid])
        except Exception as err:  # noqa: BLE001 - one bad forward answers its requests with the error, not the server
            log.exception("batch inference failed", extra={"version": version})
            for request in valid:
                request.future.set_exception(err)
            return
        infer_ms = (time.perf_counter() - started) * 1000
        self.batch_sizes[len(valid)] += 1
        for request, chunk in zip(valid, chunks, strict=True):
            request.future.set_result({"actions": chunk, "model_version": version,
                                       "server_timing": {"infer_ms": infer_ms, "batch": len(valid)}})  # fmt: skip


class PolicyServer:
    """openpi's websocket protocol over a `Batcher`; `authorize(token)` says why a token is refused (None: let in)."""

    def __init__(
        self,
        config: ServeConfig,
        batcher: Batcher,
        *,
        metadata: Callable[[], dict[str, Any]],
        authorize: Callable[[str | None], str | None],
    ) -> None:
        self.config, self.batcher, self.metadata, self.authorize = config, batcher, metadata, authorize
        self.port: int | None = None  # the bound port once serving (config.port 0 picks a free one)
        self.ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def run(self) -> None:
        """Serve until `stop()` (from another thread) or an interrupt."""
        asyncio.run(self._serve())

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)

    async def _serve(self) -> None:
        from websockets.asyncio.server import serve

        tls = None
        if self.config.certfile is not None:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(self.config.certfile, self.config.keyfile)
        self._loop, self._stopped = asyncio.get_running_loop(), asyncio.Event()
        async with serve(self._handle, self.config.host, self.config.port, compression=None, max_size=64 << 20,
                         process_request=self._admit, ssl=tls) as server:  # fmt: skip
            self.port = next(iter(server.sockets)).getsockname()[1]
            self.ready.set()
            log.info("policy server listening", extra={"port": self.port, "tls": tls is not None})
            await self._stopped.wait()

    def _admit(self, connection: Any, request: Any) -> Any:
        if request.path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        refused = self.authorize(token.strip() if scheme in ("Api-Key", "Bearer") and token.strip() else None)
        if refused is not None:
            log.warning("policy client refused", extra={"client": str(connection.remote_address), "reason": refused})
            return connection.respond(http.HTTPStatus.UNAUTHORIZED, refused + "\n")
        return None

    async def _handle(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        await ws.send(packb(self.metadata()))
        self.batcher.clients += 1  # only the event loop's thread changes it
        try:
            async for frame in ws:
                if isinstance(frame, str):
                    await ws.send("requests are binary msgpack frames (openpi's protocol), not text")
                    continue
                try:
                    message = unpackb(frame)
                    if isinstance(message, Mapping) and "__ctrl__" in message:  # openpi's episode markers
                        await ws.send(packb({"__ack__": str(message["__ctrl__"])}))
                        continue
                    reply = await asyncio.wrap_future(self.batcher.submit(to_observation(message)))
                except (ProtocolError, BadObservation) as err:
                    await ws.send(f"bad request: {err}")
                    continue
                except Exception as err:  # noqa: BLE001 - the model failed on it: say so, keep the connection
                    await ws.send(f"inference failed: {err.__class__.__name__}: {err}")
                    continue
                await ws.send(packb(reply))
        except ConnectionClosed:
            pass
        finally:
            self.batcher.clients -= 1


class ProductionPolicy:
    """The version the registry's production alias names, as robots load it (`HotReloader`); `current()` is
    called by the batcher only, between batches, so a swap never lands inside a forward."""

    def __init__(self, settings: Any, *, poll_interval_s: float = 10.0, name: str = "serve") -> None:
        from actors.reload import HotReloader, ReloadConfig
        from actors.robot import first_version, policy_loader
        from fleet.registry import Registry
        from fleet.signing import load_trusted_keys

        self.reloader = HotReloader(ReloadConfig(poll_interval_s=poll_interval_s), registry=Registry(settings),
                                    loader=policy_loader, keys=load_trusted_keys(settings), robot_id=name)  # fmt: skip
        first = first_version(self.reloader, "fleet serve")
        self.policy, self.version = first.policy, first.version
        self.reloader.warmup = lambda policy: policy.infer_many([])
        self.reloader.start()

    def current(self) -> tuple[Any, str]:
        swap = self.reloader.take_ready()
        if swap is not None:
            log.info("serving a new version", extra={"version": swap.version, "previous": self.version})
            self.policy, self.version = swap.policy, swap.version
        return self.policy, self.version

    def metadata(self) -> dict[str, Any]:
        return metadata(self.policy.config, self.version)

    def close(self) -> None:
        self.reloader.stop()


def token_check(settings: Any) -> Callable[[str | None], str | None]:
    """A token is let in when it is active and carries `models:read` (fleet.db.tokens)."""
    from fleet.db.session import make_engine, session_factory
    from fleet.db.tokens import MODELS_READ, find_token

    sessions = session_factory(make_engine(settings.database_url))

    def authorize(token: str | None) -> str | None:
        if token is None:
            return "a token is needed: Authorization: Api-Key <token> (scope models:read)"
        with sessions() as session:
            row = find_token(session, plaintext=token)
            if row is None:
                return "unknown or revoked token"
            if MODELS_READ not in row.scopes.split():
                return "this token lacks the models:read scope"
        return None

    return authorize


def serve(
    settings: Any, config: ServeConfig, *, auth: bool = True, on_ready: Callable[[int], None] | None = None
) -> None:
    """Run the policy server on the production version until interrupted."""
    if settings.env == "production" and config.certfile is None:
        raise ValueError("production serves only over TLS: give --certfile and --keyfile")
    if settings.env == "production" and not auth:
        raise ValueError("production serves only to clients with a token")
    from actors.robot import listen_for_events

    policy = ProductionPolicy(settings)
    listener = listen_for_events(settings, "serve", policy.reloader, None)  # model events wake the reloader
    batcher = Batcher(policy.current, max_batch=config.max_batch, wait_s=config.batch_wait_ms / 1000).start()
    server = PolicyServer(config, batcher, metadata=policy.metadata,
                          authorize=token_check(settings) if auth else (lambda _token: None))  # fmt: skip
    if on_ready is not None:
        threading.Thread(target=lambda: server.ready.wait() and on_ready(server.port or 0), daemon=True).start()
    try:
        server.run()
    finally:
        listener.stop()
        batcher.stop()
        policy.close()
