"""Where a recorder's CPU goes per segment (issue #34: the recorders are the 1,000-robot fleet's first bottleneck).

Feeds `--robots` x `--seconds` synthetic segments (bench/scale.py's recorded two-camera segment, one a second per
robot, 10-segment episodes) through the product's `Recorder` from an in-memory broker (no Kafka: what is left is
fleet's own work per segment) into an SQLite index (or `--db-url`'s, e.g. PostgreSQL), under cProfile, and prints
segments per CPU second and the functions that take the time:

    PYTHONPATH=. .venv/bin/python -m research.recorder_profile --robots 200 --seconds 20
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import tempfile
import time
import uuid
from pathlib import Path

import msgpack
import numpy as np

from bench.scale import EPISODE_SEGMENTS, HZ, STEPS, _template
from fleet.schemas import encode_array
from fleet.transport import TRAJECTORIES
from tests.data.fakes import FakeTransport


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--robots", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--max-records", type=int, default=500)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--db-url", default=None, help="the index's database (default: a new SQLite file)")
    parser.add_argument("--no-profile", action="store_true", help="CPU time only (cProfile's own overhead is ~1/3)")
    args = parser.parse_args()

    from fleet.db import make_engine, session_factory
    from fleet.db.migrate import upgrade
    from fleet.recorder import Recorder, RecorderConfig
    from fleet.recorder_db import SqlEpisodeIndex

    work = Path(tempfile.mkdtemp(prefix="fleet-recorder-profile-"))
    transport = FakeTransport()
    body = _template()
    now = time.time()
    tag = uuid.uuid4().hex[:8]  # robots of their own: a database reused across runs holds none of them yet
    for s in range(args.seconds):
        for j in range(args.robots):
            episode, index = divmod(s, EPISODE_SEGMENTS)
            done = index == EPISODE_SEGMENTS - 1
            body.update(robot_id=f"{tag}-r{j}", episode_id=f"ep-{episode}", segment_index=index,
                        step_start=index * STEPS, created_at=now, done=done, success=done,
                        timestamps=encode_array(now - (STEPS - 1 - np.arange(STEPS)) / HZ))  # fmt: skip
            transport.send(TRAJECTORIES, msgpack.packb(body, use_bin_type=True), key=f"{tag}-r{j}")
    url = args.db_url or f"sqlite:///{work / 'fleet.db'}"
    upgrade(url)
    engine = make_engine(url)
    config = RecorderConfig(store_dir=work / "episodes", staging_dir=work / "staging", max_records=args.max_records)
    recorder = Recorder(config, transport=transport, index=SqlEpisodeIndex(session_factory(engine)))
    segments = args.robots * args.seconds
    profile = cProfile.Profile()
    machine = _busy_ticks()
    cpu, wall = time.process_time(), time.perf_counter()
    if not args.no_profile:
        profile.enable()
    while recorder.step():
        pass
    profile.disable()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    machine = _busy_ticks() - machine
    print(f"{segments} segments, {recorder.episodes_recorded} episodes: {cpu:.1f} s CPU, "
          f"{1000 * cpu / segments:.2f} ms a segment ({segments / cpu:.0f} segments per CPU second); "
          f"{wall:.1f} s wall (waits on the disks are off the CPU); the whole machine busy {machine} ticks meanwhile "
          f"(the database's work and the kernel's, the filesystem journal's included)")  # fmt: skip
    if args.no_profile:
        return
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(args.top)
    print(out.getvalue())
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(args.top)
    print(out.getvalue())


def _busy_ticks() -> int:
    """Clock ticks all cores spent busy since boot (/proc/stat; idle and iowait left out)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return sum(ticks) - ticks[3] - ticks[4]


if __name__ == "__main__":
    main()
