"""The recorder (`fleet record`, consumer group `recorder`): Kafka trajectory stream → episode store + DB.

For every `TrajectorySegment` on `fleet.trajectories` the recorder validates it (schema, embodiment
shapes, consistency with the episode's earlier segments), decoding it once with its frames left as the
robot compressed them, and appends its original bytes to its episode's staging log
(`fleet.recorder_staging`). Per polled batch: the touched logs are fsync'd (group commit), the segments
are indexed in the DB, finished episodes are written, and only then are the offsets committed. When an
episode's last segment (`done`) and every segment before it are staged, the episode is assembled in
segment order from the parts decoded at poll (read back from the staging log only after a restart, or
once episodes in progress hold more than `max_kept_mb`), written atomically to the `EpisodeStore` and
completed in the DB; its staging log is removed once a flush of the disks that began after the write
has ended (`_Flusher`, off the loop: a host's whole page cache, with brokers beside, can take long).

Idempotent on (robot, episode, segment): a redelivered segment finds itself staged (or its episode
finished) and changes nothing. A restart resumes from the committed offsets and
`recover()` finishes any episode whose segments were all staged before the crash, so a restart
neither loses nor duplicates an episode. Segments that fail validation, and episodes whose
segments do not line up (gaps in `step_start`), go to `fleet.deadletter` with the reason.

Scaling out: replicas in one consumer group split the partitions (keyed by robot id, so an episode
stays with one member), but an episode in progress lives in the staging directory of whoever
received its first segments: replicas must share `staging_dir` and `store_dir` (one volume), or a
rebalance mid-episode leaves that episode incomplete until the partition comes back.

Over 400 lines because what makes a segment durable (staging, the flush tickets, the unlinking of logs) and what
assembles its episode share one state, the episodes in progress and the current batch; kept together so the order
of the durable steps before a commit reads in one place. The staging log's format is `fleet.recorder_staging`'s.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fleet import observability
from fleet.episodes import EpisodeError, EpisodeStore, ZstdFrames, episode_from_segments
from fleet.recorder_db import EpisodeIndex, FinishedEpisode, SegmentRow
from fleet.recorder_staging import SegmentStaging
from fleet.schemas import Message, SchemaError, TrajectorySegment, decode_segment_keeping_frames
from fleet.transport import TRAJECTORIES, MessageLoop, Record, Transport, dead_letter

log = logging.getLogger(__name__)
GROUP_ID = "recorder"


@dataclass(frozen=True)
class RecorderConfig:
    """What the recorder reads and where it writes."""

    store_dir: Path  # episode store root (Settings.episode_store)
    staging_dir: Path  # one append-only log per episode in progress (fleet.recorder_staging)
    group_id: str = GROUP_ID  # consumer group; one group = each segment recorded once across replicas
    poll_timeout_s: float = 0.5  # how long one poll waits for records
    max_records: int = 500  # records per poll (one commit per poll)
    commit_attempts: int = 5  # tries for a batch's DB/store writes before the recorder gives up (and restarts)
    # Compressed frames of episodes in progress held in memory for their finish; past it the least recently touched
    # episodes' are let go and read back from their staging logs (robots that stop mid-episode must not grow it).
    max_kept_mb: float = 256.0

    def __post_init__(self) -> None:
        if Path(self.staging_dir).resolve() == Path(self.store_dir).resolve():
            raise ValueError("staging_dir must differ from store_dir (the store lists every directory in it)")

    @classmethod
    def from_settings(cls, settings: object | None = None, **overrides: object) -> RecorderConfig:
        from fleet.settings import Settings, get_settings

        s: Settings = settings if isinstance(settings, Settings) else get_settings()
        base: dict[str, object] = {"store_dir": s.episode_store, "staging_dir": s.home / "recorder" / "staging"}
        base.update(overrides)
        return cls(**base)  # type: ignore[arg-type]


_Frames = dict[str, tuple[tuple[int, ...], bytes]]  # camera -> (frames' shape, one zstd frame of their bytes)


@dataclass(frozen=True)
class _Part:
    """A staged segment as its episode's write needs it: the segment without pixels, its frames as the robot
    compressed them, and where it came from (its DB row)."""

    segment: TrajectorySegment
    frames: _Frames
    partition: int | None
    offset: int | None
    received_at: float

    @property
    def nbytes(self) -> int:
        return sum(len(chunk) for _, chunk in self.frames.values())


@dataclass
class _Pending:
    """An episode in progress: what its first segment fixed, and which segments are staged."""

    header: tuple[object, ...]  # (embodiment, task, instruction, cameras with frame shapes)
    segments: dict[int, tuple[int, int, bool]] = field(default_factory=dict)  # index -> (step_start, T, done)
    parts: dict[int, _Part] | None = field(default_factory=dict)  # None: let go; the finish reads the staging log

    def kept_bytes(self) -> int:
        return sum(part.nbytes for part in (self.parts or {}).values())

    def last_index(self) -> int | None:
        return next((i for i, (_, _, done) in self.segments.items() if done), None)

    def complete(self) -> bool:
        last = self.last_index()
        return last is not None and all(i in self.segments for i in range(last + 1))


def _header(seg: TrajectorySegment, frames: _Frames) -> tuple[object, ...]:
    cameras = tuple(sorted((name, shape[1:]) for name, (shape, _) in frames.items()))
    return (seg.embodiment, seg.task_id, seg.instruction, cameras)


def _row(part: _Part) -> SegmentRow:
    seg = part.segment
    return SegmentRow(
        robot_id=seg.robot_id,
        episode_id=seg.episode_id,
        embodiment=seg.embodiment,
        task=seg.task_id,
        instruction=seg.instruction,
        segment_index=seg.segment_index,
        num_steps=seg.length,
        interventions=int(seg.intervention.sum()),
        model_version=seg.model_version,
        kafka_partition=part.partition,
        kafka_offset=part.offset,
        received_at=part.received_at,
    )


def _staged_part(entry: dict) -> _Part:
    """A part from its staging-log entry (bytes `decode` accepted when they were staged)."""
    seg, frames = decode_segment_keeping_frames(entry["value"])
    return _Part(seg, frames, entry.get("partition"), entry.get("offset"), float(entry.get("received_at", 0.0)))


def _episode_frames(parts: list[_Part], length: int) -> dict[str, ZstdFrames]:
    """Each camera's frames over the episode's segments, as the segments' zstd frames in order."""
    cameras = {camera: shape[1:] for camera, (shape, _) in parts[0].frames.items()}
    for part in parts:
        if {camera: shape[1:] for camera, (shape, _) in part.frames.items()} != cameras:
            raise EpisodeError(f"segment {part.segment.segment_index}'s cameras differ from the first segment's")
    return {
        camera: ZstdFrames((length, *size), tuple(part.frames[camera][1] for part in parts))
        for camera, size in cameras.items()
    }


class _Flusher:
    """Flushes the disks (`sync`, default `os.sync`) on a thread of its own, so a batch does not wait for it.

    `written()` after writing files returns a ticket; the files are durable once `flushed` >= that ticket (a flush
    starts after the ticket was taken). At most one flush runs; requests made meanwhile share the next one."""

    def __init__(self, sync: Callable[[], None] = os.sync) -> None:
        self._sync = sync
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._written = 0  # tickets handed out
        self.flushed = 0  # every ticket up to this one is on disk
        self._closed = False
        self._thread: threading.Thread | None = None

    def written(self) -> int:
        with self._lock:
            self._written += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="recorder-flush", daemon=True)
                self._thread.start()
            self._wake.notify()
            return self._written

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._written == self.flushed and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                ticket = self._written
            try:
                self._sync()
            except OSError as e:  # tried again at the next request; the staging logs stay meanwhile
                log.error("recorder flush failed: %s", e)
                time.sleep(1.0)
                continue
            with self._lock:
                self.flushed = max(self.flushed, ticket)

    def flush_now(self) -> None:
        """Flush on this thread: every ticket handed out so far is on disk when it returns."""
        with self._lock:
            ticket = self._written
        self._sync()
        with self._lock:
            self.flushed = max(self.flushed, ticket)

    def close(self) -> None:
        """Stop the thread, then flush what is written."""
        with self._lock:
            self._closed = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()
        self.flush_now()


class Recorder:
    """Consumes `fleet.trajectories` and records episodes (one instance per consumer-group member)."""

    def __init__(
        self,
        config: RecorderConfig,
        *,
        transport: Transport,
        index: EpisodeIndex | None,
        on_segment: Callable[[TrajectorySegment], None] | None = None,
        sync: Callable[[], None] = os.sync,
    ) -> None:
        self.config = config
        self.transport = transport
        self.store = EpisodeStore(config.store_dir)
        self.staging = SegmentStaging(config.staging_dir)
        self.index = index  # None = store only (no DB)
        self.on_segment = on_segment  # called, frames left out, once a segment is durably staged (bench latency)
        self.episodes_recorded = 0
        self._pending: dict[tuple[str, str], _Pending] = {}  # least recently touched first
        self._decoded: dict[tuple[str, ...], _Frames] = {}  # the batch's frames, from _decode to _handle
        self._rows: list[SegmentRow] = []  # segment rows of the current batch, indexed before commit
        self._touched: set[tuple[str, str]] = set()
        self._staged: list[TrajectorySegment] = []  # staged in this batch (no pixels), durable after the batch's sync
        self._flusher = _Flusher(sync)  # makes written episodes durable, off the loop
        self._unflushed: dict[tuple[str, str], int] = {}  # episode written -> its flush ticket (staging log kept)
        # Staging logs are unlinked off the loop: an unlink waits on the filesystem's journal, behind any flush of
        # the disks (~3 ms each here, a batch's worth adding up to most of the loop's time).
        self._unlinker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recorder-unlink")
        self._unlinking: dict[tuple[str, str], Future[None]] = {}
        self.loop = MessageLoop(
            transport,
            group_id=config.group_id,
            topics=(TRAJECTORIES,),
            handler=self._handle,
            before_commit=self._before_commit,
            poll_timeout_s=config.poll_timeout_s,
            max_records=config.max_records,
            decoder=self._decode,
        )

    def recover(self) -> int:
        """Finish episodes fully staged before a crash; index the rest. Returns episodes finished."""
        finished = [key for key in self.staging.episodes() if (p := self._load(key)) is not None and p.complete()]
        self._finish(finished)
        self._let_go_of_parts()
        return len(finished)

    def step(self) -> int:
        return self.loop.step()

    def run(self, stop: Callable[[], bool]) -> None:
        self.recover()
        while not stop():
            self.step()

    def flush(self) -> None:
        """Make every episode written so far durable now and drop their staging logs."""
        self._flusher.flush_now()
        self._drop_flushed()
        self._wait_for_unlinks()

    def close(self) -> None:
        self.loop.close()
        self._flusher.close()
        self._drop_flushed()
        self._wait_for_unlinks()
        self._unlinker.shutdown()
        self.staging.close()

    # --- per record ---------------------------------------------------------------------------

    def _decode(self, data: bytes) -> Message:
        """The loop's decoder: a segment refused as `decode` refuses it, decoded once, its frames kept as the robot
        compressed them (held for `_handle`, which the loop calls next with the segment). Any other kind of message
        is refused: only trajectory segments belong on the topic."""
        seg, frames = decode_segment_keeping_frames(data, verify=True)
        self._decoded[seg.dedup_key] = frames
        return seg

    def _handle(self, message: Message, record: Record) -> None:
        assert isinstance(message, TrajectorySegment)  # what _decode returns
        observability.RECORDER_SEGMENTS_CONSUMED.labels(self.config.group_id).inc()
        seg, frames = message, self._decoded[message.dedup_key]
        key = (seg.robot_id, seg.episode_id)
        self._unlinked(key)  # a redelivered segment of an episode whose log is going: let it go first
        if key not in self._pending and self._finished(seg):
            return
        header = _header(seg, frames)
        pending = self._pending.pop(key, None) or self._load(key) or _Pending(header)
        self._pending[key] = pending  # to the end: the least recently touched episodes let go of their parts first
        if header != pending.header:
            raise SchemaError(
                f"segment {seg.segment_index} of {seg.robot_id}/{seg.episode_id} differs from the episode's earlier"
                f" segments in embodiment, task, instruction or cameras ({header} vs {pending.header})"
            )
        last = pending.last_index()
        part = _Part(seg, frames, record.partition, record.offset, time.time())
        if seg.segment_index not in pending.segments:
            if last is not None and seg.segment_index > last:
                raise SchemaError(f"segment {seg.segment_index} comes after the episode's last segment {last}")
            if seg.done and max(pending.segments, default=-1) > seg.segment_index:
                raise SchemaError(f"segment {seg.segment_index} says done but later segments exist")
            self.staging.append(
                record,
                segment_index=seg.segment_index,
                robot_id=seg.robot_id,
                episode_id=seg.episode_id,
                received_at=part.received_at,
            )
            pending.segments[seg.segment_index] = (seg.step_start, seg.length, seg.done)
            if pending.parts is not None:
                pending.parts[seg.segment_index] = part
            self._staged.append(seg)
        self._rows.append(_row(part))
        self._touched.add(key)

    def _finished(self, seg: TrajectorySegment) -> bool:
        """True for a redelivered segment of an episode already in the store (nothing to do)."""
        if not self.store.exists(seg.robot_id, seg.episode_id):
            return False
        if self.staging.exists(seg.robot_id, seg.episode_id):
            return False  # stored but not yet cleaned up: finish it again (idempotent)
        if seg.step_start + seg.length > self.store.read_meta(seg.robot_id, seg.episode_id).length:
            raise SchemaError(f"segment {seg.segment_index} arrived after {seg.robot_id}/{seg.episode_id} was recorded")
        log.debug("duplicate segment %d of recorded episode %s/%s", seg.segment_index, seg.robot_id, seg.episode_id)
        return True

    def _load(self, key: tuple[str, str]) -> _Pending | None:
        staged = self.staging.load(*key)
        if not staged:
            return None
        pending: _Pending | None = None
        for index, entry in sorted(staged.items()):
            part = _staged_part(entry)
            seg = part.segment
            pending = pending or _Pending(_header(seg, part.frames))
            pending.segments[index] = (seg.step_start, seg.length, seg.done)
            assert pending.parts is not None
            pending.parts[index] = part
        assert pending is not None
        self._pending[key] = pending
        return pending

    # --- per batch ----------------------------------------------------------------------------

    def _before_commit(self) -> None:
        for attempt in range(1, self.config.commit_attempts + 1):
            try:
                self._write_batch()
                break
            except Exception as e:
                if attempt == self.config.commit_attempts:
                    log.error("recorder cannot write its batch (%s); stopping with nothing committed", e)
                    raise
                delay = min(0.5 * 2**attempt, 10.0)
                log.warning("batch write failed (attempt %d, retry in %.1f s): %s", attempt, delay, e)
                time.sleep(delay)
        self._rows.clear()
        self._touched.clear()
        self._decoded.clear()
        self._let_go_of_parts()

    def _write_batch(self) -> None:
        self.staging.sync()  # the batch's segments are durable from here on
        if self.on_segment is not None:
            for seg in self._staged:
                self.on_segment(seg)
        observability.RECORDER_SEGMENTS_RECORDED.labels(self.config.group_id).inc(len(self._staged))
        self._staged.clear()
        complete = {key for key in self._touched if key in self._pending and self._pending[key].complete()}
        rows = [r for r in self._rows if (r.robot_id, r.episode_id) not in complete]
        if rows and self.index is not None:
            self.index.segments_received(rows)
        self._finish(sorted(complete))

    def _finish(self, keys: list[tuple[str, str]]) -> None:
        """Write complete episodes to the store, then index them in one DB transaction, then drop their staging."""
        finished = [f for key in keys if (f := self._finalize(key)) is not None]
        if finished and self.index is not None:
            self.index.episodes_finished(finished)
        for f in finished:
            meta = f.meta
            self.episodes_recorded += 1
            observability.RECORDER_EPISODES.labels(self.config.group_id).inc()
            log.info(
                "recorded episode robot=%s episode=%s version=%s steps=%d segments=%d success=%s interventions=%d",
                meta.robot_id, meta.episode_id, meta.model_version, meta.length, len(f.rows), meta.success,
                meta.interventions,
                extra={"robot": meta.robot_id, "episode": meta.episode_id, "version": meta.model_version,
                       "steps": meta.length},
            )  # fmt: skip
        self._cleanup([(f.meta.robot_id, f.meta.episode_id) for f in finished])

    def _cleanup(self, finished: list[tuple[str, str]]) -> None:
        """Episodes now in the store: their staging logs go once the store's files are on disk (`_drop_flushed`)."""
        if finished:
            ticket = self._flusher.written()  # one flush for every episode of the batch
            for key in finished:
                self._unflushed[key] = ticket
                self._pending.pop(key, None)
                self.staging.release(*key)
        self._drop_flushed()

    def kept_bytes(self) -> int:
        """Compressed frames the episodes in progress hold in memory for their finish."""
        return sum(pending.kept_bytes() for pending in self._pending.values())

    def _let_go_of_parts(self) -> None:
        """Past `max_kept_mb`, the least recently touched episodes in progress drop their parts (their staging
        logs hold them)."""
        kept, cap = self.kept_bytes(), self.config.max_kept_mb * 1e6
        for pending in self._pending.values():
            if kept <= cap:
                return
            kept -= pending.kept_bytes()
            pending.parts = None

    def _drop_flushed(self) -> None:
        """Hand the staging logs of stored episodes a finished flush covers to the unlinking thread. An episode
        staged again meanwhile (a redelivered segment) keeps its log: it will be finished again, with a later
        ticket."""
        flushed = self._flusher.flushed
        for key in [k for k, ticket in self._unflushed.items() if ticket <= flushed and k not in self._pending]:
            self._unlinking[key] = self._unlinker.submit(self.staging.path(*key).unlink, missing_ok=True)
            del self._unflushed[key]
        for key in [k for k, future in self._unlinking.items() if future.done()]:
            self._unlinked(key)

    def _wait_for_unlinks(self) -> None:
        for key in list(self._unlinking):
            self._unlinked(key)

    def _unlinked(self, key: tuple[str, str]) -> None:
        """Wait until the episode's staging log, if it is being removed, is gone (raising what the unlink raised)."""
        future = self._unlinking.pop(key, None)
        if future is not None:
            future.result()

    def _finalize(self, key: tuple[str, str]) -> FinishedEpisode | None:
        """Write a complete episode to the store; None when it was rejected instead."""
        pending = self._pending.get(key)
        kept = pending.parts if pending is not None else None
        try:  # frames stay as the robots compressed them: the store concatenates their zstd frames
            if kept is None:
                kept = {index: _staged_part(entry) for index, entry in self.staging.load(*key).items()}
            parts = [kept[index] for index in sorted(kept)]
            episode = episode_from_segments([part.segment for part in parts])
            frames = _episode_frames(parts, episode.meta.length)
        except ValueError as e:  # EpisodeError, SchemaError, or ZstdFrames' sizes
            self._reject(key, str(e))
            return None
        # not fsync'd here: the staging log keeps the episode until the flusher's flush covers the store's files
        path = self.store.write(episode, compressed_frames=frames, durable=False)
        return FinishedEpisode(episode.meta, [_row(part) for part in parts], str(path))

    def _reject(self, key: tuple[str, str], reason: str) -> None:
        robot_id, episode_id = key
        staged = self.staging.load(robot_id, episode_id)
        log.error(
            "rejecting episode robot=%s episode=%s: %s", robot_id, episode_id, reason,
            extra={"robot": robot_id, "episode": episode_id},
        )  # fmt: skip
        for entry in staged.values():
            record = Record(entry["topic"], entry["partition"], entry["offset"], robot_id.encode(), entry["value"])
            dead_letter(
                self.transport, record, f"episode rejected: {reason}", group_id=self.config.group_id,
                category="episode_rejected",
            )  # fmt: skip
        if not self.transport.flush(timeout_s=60.0):
            raise RuntimeError(f"dead letters for rejected episode {robot_id}/{episode_id} not acknowledged")
        self.staging.remove(robot_id, episode_id)
        self._pending.pop(key, None)
