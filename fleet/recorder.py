"""The recorder (`fleet record`, consumer group `recorder`): Kafka trajectory stream → episode store + DB.

For every `TrajectorySegment` on `fleet.trajectories` the recorder validates it (schema, embodiment
shapes, consistency with the episode's earlier segments), decoding it once with its frames left as the
robot compressed them, and holds it with its episode in memory. Kafka is an episode in progress's durable
copy: the group's committed offset on a partition never passes the first offset of an episode held only in
memory, until that episode is in the store and a flush of the disks that began after its write has ended
(`_Flusher`, off the loop: a host's whole page cache, with brokers beside, can take long). Per polled batch
the segments are indexed in the DB, complete episodes (the last segment, `done`, and every one before it)
are assembled in segment order, written atomically to the `EpisodeStore` and completed in the DB, and only
then are the offsets committed. An episode held longer than `max_pin_s`, or past `max_kept_mb` of episodes in
progress, is staged instead: its segments' original bytes go to its own staging log
(`fleet.recorder_staging`, fsync'd with the batch, group commit), later ones too, so that a long or abandoned
episode neither holds back the commits (what a restart reads again) nor grows the memory; its parts are read
back from the log when it finishes, and the log is removed after the flush that covers its store write.

Idempotent on (robot, episode, segment): a redelivered segment finds itself held or staged (or its episode
recorded) and changes nothing. A restart reads again from the committed offsets, so every segment of an
episode not yet durably stored comes again, and `recover()` finishes any staged episode whose segments were
all staged before the crash: a restart neither loses nor duplicates an episode. A stored episode redelivered
is recorded again unless its store copy reads back whole and the DB has it finished (a crash between the two
writes, or before the flush). Segments that fail validation, and episodes whose segments do not line up (gaps
in `step_start`), go to `fleet.deadletter` with the reason.

Scaling out: replicas in one consumer group split the partitions (keyed by robot id, so an episode
stays with one member). When the group reassigns, a member drops the episodes of partitions it no longer holds:
their new owner reads them again from the committed offsets. A staged episode lives in the staging directory of
whoever staged it, so replicas must share `staging_dir` and `store_dir` (one volume), or a rebalance mid-episode
leaves a staged episode incomplete until the partition comes back.

Over 400 lines because what makes a segment durable (the offsets it holds back, staging, the flush tickets, the
unlinking of logs) and what assembles its episode share one state, the episodes in progress and the current batch;
kept together so the order of the durable steps before a commit reads in one place. The staging log's format is
`fleet.recorder_staging`'s.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fleet import observability
from fleet.episodes import EpisodeError, EpisodeMeta, EpisodeStore, ZstdFrames, episode_from_segments
from fleet.recorder_db import EpisodeIndex, FinishedEpisode, SegmentRow
from fleet.recorder_staging import SegmentStaging
from fleet.schemas import Message, SchemaError, TrajectorySegment, decode_segment_keeping_frames
from fleet.transport import TRAJECTORIES, MessageLoop, Record, Transport, dead_letter
from fleet.transport.consumer import offsets_past

log = logging.getLogger(__name__)
GROUP_ID = "recorder"


@dataclass(frozen=True)
class RecorderConfig:
    """What the recorder reads and where it writes."""

    store_dir: Path  # episode store root (Settings.episode_store)
    staging_dir: Path  # one append-only log per staged episode in progress (fleet.recorder_staging)
    group_id: str = GROUP_ID  # consumer group; one group = each segment recorded once across replicas
    poll_timeout_s: float = 0.5  # how long one poll waits for records
    max_records: int = 500  # records per poll (one commit per poll)
    commit_attempts: int = 5  # tries for a batch's DB/store writes before the recorder gives up (and restarts)
    # Segments of episodes in progress held in memory for their finish; past it the least recently touched episodes
    # are staged and let go, read back from their staging logs (robots that stop mid-episode must not grow it).
    max_kept_mb: float = 256.0
    # How long an episode is held in memory only (Kafka its durable copy) before it is staged: a restart reads again
    # the records back to the oldest such episode's first, and a robot gone mid-episode must not hold that back.
    max_pin_s: float = 120.0

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
    """A segment as its episode's write needs it: the segment without pixels, its frames as the robot compressed
    them, and the record it came in (its DB row; its bytes for the staging log or the dead-letter topic)."""

    segment: TrajectorySegment
    frames: _Frames
    record: Record
    received_at: float

    @property
    def nbytes(self) -> int:
        return len(self.record.value) + sum(len(chunk) for _, chunk in self.frames.values())


@dataclass
class _Pending:
    """An episode in progress: what its first segment fixed, which segments are in, and where they are durable."""

    header: tuple[object, ...]  # (embodiment, task, instruction, cameras with frame shapes)
    segments: dict[int, tuple[int, int, bool]] = field(default_factory=dict)  # index -> (step_start, T, done)
    parts: dict[int, _Part] | None = field(default_factory=dict)  # None: let go; the finish reads the staging log
    staged: bool = False  # its segments are in its staging log; else in memory only, Kafka holding them
    pins: dict[tuple[str, int], int] = field(default_factory=dict)  # (topic, partition) -> its first offset there
    since: float = field(default_factory=time.time)  # when this recorder began to hold it
    kept: int = 0  # bytes of its parts held in memory (summed as they come: every batch asks for all episodes')

    def add(self, part: _Part) -> None:
        seg, record = part.segment, part.record
        self.segments[seg.segment_index] = (seg.step_start, seg.length, seg.done)
        if self.parts is not None:
            self.parts[seg.segment_index] = part
            self.kept += part.nbytes
        where = (record.topic, record.partition)
        self.pins[where] = min(self.pins.get(where, record.offset), record.offset)

    def let_go(self) -> None:
        self.parts, self.kept = None, 0

    def kept_bytes(self) -> int:
        return self.kept

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
        kafka_partition=part.record.partition,
        kafka_offset=part.record.offset,
        received_at=part.received_at,
    )


def _staged_part(entry: dict) -> _Part:
    """A part from its staging-log entry (bytes `decode` accepted when they were staged)."""
    seg, frames = decode_segment_keeping_frames(entry["value"])
    return _Part(seg, frames, _staged_record(entry, seg.robot_id), float(entry.get("received_at", 0.0)))


def _staged_record(entry: dict, robot_id: str) -> Record:
    """The record a staging-log entry was staged from (its key the robot's id, as robots send)."""
    return Record(entry["topic"], entry["partition"], entry["offset"], robot_id.encode(), entry["value"])


@dataclass(frozen=True)
class _Unflushed:
    """An episode written to the store whose files a flush has yet to cover."""

    ticket: int  # the flusher's ticket: durable once `flushed` reaches it
    staged: bool  # its staging log goes after the flush
    pins: dict[tuple[str, int], int]  # the offsets it holds back meanwhile (none when staged)
    length: int  # steps stored


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
        self.on_segment = on_segment  # called, frames left out, once a segment's batch is written (bench latency)
        self.episodes_recorded = 0
        self._pending: dict[tuple[str, str], _Pending] = {}  # least recently touched first
        self._decoded: dict[tuple[str, ...], _Frames] = {}  # the batch's frames, from _decode to _handle
        self._rows: list[SegmentRow] = []  # segment rows of the current batch, indexed before commit
        self._touched: set[tuple[str, str]] = set()
        self._accepted: list[TrajectorySegment] = []  # new in this batch (no pixels), recorded once it is written
        self._flusher = _Flusher(sync)  # makes written episodes durable, off the loop
        self._unflushed: dict[tuple[str, str], _Unflushed] = {}  # episodes written, their flush to come
        self._settled: OrderedDict[tuple[str, str], int] = OrderedDict()  # recently recorded for good -> steps
        self._read_up_to: dict[tuple[str, int], int] = {}  # (topic, partition) -> offset after the last one read
        self._committed: dict[tuple[str, int], int] = {}  # the offsets of the last commit
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
            committable=self._committable,
            on_assignment=self._assigned,
        )

    def recover(self) -> int:
        """Finish episodes fully staged before a crash; index the rest. Returns episodes finished."""
        finished = [key for key in self.staging.episodes() if (p := self._load(key)) is not None and p.complete()]
        self._finish(finished)
        self._stage_or_let_go()
        return len(finished)

    def step(self) -> int:
        """One polled batch; with none, commit what flushes since the last commit let go of (a fleet gone quiet
        must not leave its last episodes to be read again)."""
        records = self.loop.step()
        if not records:
            self._drop_flushed()
            if self._offsets(()) != self._committed and not self.loop.commit(()):
                self._committed = {}  # refused: tried again at the next step
        return records

    def run(self, stop: Callable[[], bool]) -> None:
        self.recover()
        while not stop():
            self.step()

    def flush(self) -> None:
        """Make every episode written so far durable now, drop their staging logs and release their offsets."""
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
        part = _Part(seg, frames, record, time.time())
        if seg.segment_index not in pending.segments:
            if last is not None and seg.segment_index > last:
                raise SchemaError(f"segment {seg.segment_index} comes after the episode's last segment {last}")
            if seg.done and max(pending.segments, default=-1) > seg.segment_index:
                raise SchemaError(f"segment {seg.segment_index} says done but later segments exist")
            if pending.staged:
                self._stage_part(part)
            pending.add(part)
            self._accepted.append(seg)
        self._rows.append(_row(part))
        self._touched.add(key)

    def _finished(self, seg: TrajectorySegment) -> bool:
        """True for a redelivered segment of an episode already recorded (nothing to do); False for one to record,
        or to record again."""
        key = (seg.robot_id, seg.episode_id)
        if (unflushed := self._unflushed.get(key)) is not None:
            length = unflushed.length  # written by this recorder, its flush to come
        elif key in self._settled:
            length = self._settled[key]
        elif not self.store.exists(*key):
            return False
        elif self.staging.exists(*key):
            return False  # stored but its staging log not yet removed: finish it again (idempotent)
        elif (stored := self._recorded_length(key)) is None:
            return False
        else:
            length = stored
        if seg.step_start + seg.length > length:
            raise SchemaError(f"segment {seg.segment_index} arrived after {seg.robot_id}/{seg.episode_id} was recorded")
        log.debug("duplicate segment %d of recorded episode %s/%s", seg.segment_index, seg.robot_id, seg.episode_id)
        return True

    def _recorded_length(self, key: tuple[str, str]) -> int | None:
        """A stored episode met again (read again after a restart or a rebalance): its length when its store copy
        reads back whole and the DB has it finished, else None and it is recorded again. Its segments all come
        again then: the committed offsets stayed at or before its first until both writes and the flush were done,
        or it was staged."""
        try:
            length = self.store.read(*key).meta.length
        except (OSError, ValueError, TypeError, EOFError) as e:
            log.warning("stored episode robot=%s episode=%s does not read back (%s): recording it again", *key, e,
                        extra={"robot": key[0], "episode": key[1]})  # fmt: skip
            return None
        if self.index is not None and not self.index.is_finished(*key):
            return None
        self._settle(key, length)
        return length

    def _settle(self, key: tuple[str, str], length: int) -> None:
        self._settled[key] = length
        self._settled.move_to_end(key)
        while len(self._settled) > 10_000:  # a cache: a key dropped is looked up in the store again
            self._settled.popitem(last=False)

    def _load(self, key: tuple[str, str]) -> _Pending | None:
        staged = self.staging.load(*key)
        if not staged:
            return None
        pending: _Pending | None = None
        for _, entry in sorted(staged.items()):
            part = _staged_part(entry)
            pending = pending or _Pending(_header(part.segment, part.frames), staged=True)
            pending.add(part)
        assert pending is not None
        self._pending[key] = pending
        return pending

    def _stage_part(self, part: _Part) -> None:
        seg = part.segment
        self.staging.append(part.record, segment_index=seg.segment_index, robot_id=seg.robot_id,
                            episode_id=seg.episode_id, received_at=part.received_at)  # fmt: skip

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

    def _write_batch(self) -> None:
        self._stage_or_let_go()
        self.staging.sync()  # the batch's staged segments are durable from here on
        complete = {key for key in self._touched if key in self._pending and self._pending[key].complete()}
        rows = [r for r in self._rows if (r.robot_id, r.episode_id) not in complete]
        if rows and self.index is not None:
            self.index.segments_received(rows)
        self._finish(sorted(complete))
        if self.on_segment is not None:
            for seg in self._accepted:
                self.on_segment(seg)
        observability.RECORDER_SEGMENTS_RECORDED.labels(self.config.group_id).inc(len(self._accepted))
        self._accepted.clear()

    def _stage_or_let_go(self) -> None:
        """Stage the episodes held in memory only for longer than `max_pin_s`; past `max_kept_mb`, stage the least
        recently touched ones and let go of their parts (read back from their logs when they finish)."""
        now, cap = time.time(), self.config.max_kept_mb * 1e6
        kept = self.kept_bytes()
        for key, pending in self._pending.items():  # least recently touched first
            over = kept > cap
            if not pending.staged and (over or now - pending.since >= self.config.max_pin_s):
                assert pending.parts is not None  # an episode in memory only holds all its parts
                for _, part in sorted(pending.parts.items()):
                    self._stage_part(part)
                pending.staged = True
                log.debug("staged episode robot=%s episode=%s (%s)", *key, "memory cap" if over else "held long",
                          extra={"robot": key[0], "episode": key[1]})  # fmt: skip
            if over and pending.parts is not None:
                kept -= pending.kept_bytes()
                pending.let_go()

    def _committable(self, records: Sequence[Record]) -> dict[tuple[str, int], int]:
        self._committed = self._offsets(records)
        return self._committed

    def _offsets(self, records: Sequence[Record]) -> dict[tuple[str, int], int]:
        """The offsets to commit after `records`: past them, but never past the first offset of an episode whose
        only durable copy is Kafka's (held in memory, or stored and not yet flushed)."""
        for where, offset in offsets_past(records).items():
            self._read_up_to[where] = max(self._read_up_to.get(where, 0), offset)
        offsets = dict(self._read_up_to)
        held = itertools.chain(
            (p.pins for p in self._pending.values() if not p.staged), (u.pins for u in self._unflushed.values())
        )
        for pins in held:
            for where, offset in pins.items():
                if where in offsets and offset < offsets[where]:
                    offsets[where] = offset
        return offsets

    def _assigned(self, partitions: frozenset[tuple[str, int]]) -> None:
        """The group reassigned: episodes that came on partitions now another member's are dropped (it reads them
        again from the committed offsets, which never passed them); partitions kept are read again from there."""
        self._read_up_to.clear()
        for key in [k for k, p in self._pending.items() if not set(p.pins) <= partitions]:
            del self._pending[key]
            log.info("episode robot=%s episode=%s left to the partition's new owner", *key,
                     extra={"robot": key[0], "episode": key[1]})  # fmt: skip

    def _finish(self, keys: list[tuple[str, str]]) -> None:
        """Write complete episodes to the store, then index them in one DB transaction, then let go of them."""
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
        self._cleanup([f.meta for f in finished])

    def _cleanup(self, finished: list[EpisodeMeta]) -> None:
        """Episodes now in the store keep their staging logs, or hold back the offsets of their segments, until the
        store's files are on disk (`_drop_flushed`)."""
        if finished:
            ticket = self._flusher.written()  # one flush for every episode of the batch
            for meta in finished:
                key = (meta.robot_id, meta.episode_id)
                pending = self._pending.pop(key)
                pins = {} if pending.staged else pending.pins
                self._unflushed[key] = _Unflushed(ticket, pending.staged, pins, meta.length)
                if pending.staged:
                    self.staging.release(*key)
        self._drop_flushed()

    def kept_bytes(self) -> int:
        """Segment bytes the episodes in progress hold in memory for their finish."""
        return sum(pending.kept_bytes() for pending in self._pending.values())

    def _drop_flushed(self) -> None:
        """Episodes whose store write a finished flush covers: their staging logs go to the unlinking thread, and
        the offsets they held back are free."""
        flushed = self._flusher.flushed
        for key in [k for k, u in self._unflushed.items() if u.ticket <= flushed and k not in self._pending]:
            unflushed = self._unflushed.pop(key)
            if unflushed.staged:
                self._unlinking[key] = self._unlinker.submit(self.staging.path(*key).unlink, missing_ok=True)
            self._settle(key, unflushed.length)
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
        pending = self._pending[key]
        kept = pending.parts
        try:  # frames stay as the robots compressed them: the store concatenates their zstd frames
            if kept is None:
                kept = {index: _staged_part(entry) for index, entry in self.staging.load(*key).items()}
            parts = [kept[index] for index in sorted(kept)]
            episode = episode_from_segments([part.segment for part in parts])
            frames = _episode_frames(parts, episode.meta.length)
        except ValueError as e:  # EpisodeError, SchemaError, or ZstdFrames' sizes
            self._reject(key, str(e))
            return None
        # not fsync'd here: the staging log or Kafka keeps the episode until the flusher's flush covers the files
        path = self.store.write(episode, compressed_frames=frames, durable=False)
        return FinishedEpisode(episode.meta, [_row(part) for part in parts], str(path))

    def _reject(self, key: tuple[str, str], reason: str) -> None:
        robot_id, episode_id = key
        pending = self._pending.pop(key)
        if pending.staged or pending.parts is None:
            staged = sorted(self.staging.load(robot_id, episode_id).items())
            records = [_staged_record(entry, robot_id) for _, entry in staged]
        else:
            records = [part.record for _, part in sorted(pending.parts.items())]
        log.error(
            "rejecting episode robot=%s episode=%s: %s", robot_id, episode_id, reason,
            extra={"robot": robot_id, "episode": episode_id},
        )  # fmt: skip
        for record in records:
            dead_letter(
                self.transport, record, f"episode rejected: {reason}", group_id=self.config.group_id,
                category="episode_rejected",
            )  # fmt: skip
        if not self.transport.flush(timeout_s=60.0):
            raise RuntimeError(f"dead letters for rejected episode {robot_id}/{episode_id} not acknowledged")
        self.staging.remove(robot_id, episode_id)
