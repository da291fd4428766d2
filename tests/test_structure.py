"""Each job of the loop in one place: checks on the code itself (issue #31's structure)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("fleet", "learner", "actors", "dashboards")


def _calls(name: str) -> set[str]:
    """Product files that call `name(...)` (a bare name or an attribute)."""
    found = set()
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call):
                    func = node.func
                    called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                    if called == name:
                        found.add(str(path.relative_to(ROOT)))
    return found


def test_one_place_makes_mlflow_clients() -> None:
    assert _calls("MlflowClient") == {"fleet/mlflow_client.py"}


def test_one_place_builds_episodes_from_segments_and_one_builds_segments_from_steps() -> None:
    assert _calls("episode_from_segments") == {"fleet/recorder.py", "learner/ingest.py"}
    assert _calls("TrajectorySegment") == {"fleet/client/episode.py"}
    assert _calls("EpisodeStream") == {"fleet/client/__init__.py", "actors/runtime.py"}


def test_one_class_builds_kafka_consumers() -> None:
    """Every service reads Kafka through fleet.transport's KafkaGroupConsumer (MessageLoop, the learner, the
    ConsumerThreads of the dashboard and the robots' model events, the lag report)."""
    assert _calls("KafkaConsumer") == {"fleet/transport/consumer.py"}


def test_every_stream_is_read_by_one_loop() -> None:
    """The recorder, the learner, the dashboard's views and the robots' listeners all read by a MessageLoop (decode,
    dead-letter or skip, dedup, commit in one place); nothing else asks a consumer for records or decodes a dead
    letter's worth of bytes on its own."""
    assert _calls("MessageLoop") == {
        "fleet/recorder.py", "learner/service.py", "dashboards/monitor.py", "fleet/client/__init__.py", "fleet/demo.py",
    }  # fmt: skip
    assert _calls("consumer") == {"fleet/transport/consumer.py"}  # transport.consumer(...): only the loop's
    assert _calls("dead_letter") <= {"fleet/transport/consumer.py", "fleet/recorder.py"}  # + an episode's segments


def test_robots_and_evaluations_run_chunks_on_one_schedule() -> None:
    assert _calls("ChunkSchedule") == {"actors/runtime.py", "fleet/recipe/evaluate.py"}


def test_the_default_tasks_and_arms_are_written_once() -> None:
    """fleet.defaults holds them; everything else refers to it (TaskSpec's own list says which arms simulate a
    task, a property of the PyBullet backend rather than a default choice)."""
    literal = {("pick", "push", "place"), ("panda", "kuka")}
    found = set()
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                constants = isinstance(node, ast.Tuple) and all(isinstance(e, ast.Constant) for e in node.elts)
                if constants and tuple(e.value for e in node.elts) in literal:  # type: ignore[attr-defined]
                    found.add(str(path.relative_to(ROOT)))
    assert found == {"fleet/defaults.py", "fleet/sim/base.py"}


def test_benches_and_probes_are_modules_that_import_without_path_tricks() -> None:
    """bench/ and research/ run as `python -m bench.<name>` / `python -m research.<name>` and import each other as
    packages; none edits sys.path, and each imports as a module."""
    import importlib

    scripts = sorted(p for folder in ("bench", "research") for p in (ROOT / folder).glob("*.py"))
    assert not [str(p.relative_to(ROOT)) for p in scripts if "sys.path" in p.read_text()]
    for path in scripts:
        importlib.import_module(f"{path.parent.name}.{path.stem}")


def test_a_product_file_over_400_lines_says_why_at_the_top() -> None:
    long = {}
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            if text.count("\n") > 400:
                long[str(path.relative_to(ROOT))] = ast.get_docstring(ast.parse(text)) or ""
    unexplained = sorted(name for name, doc in long.items() if "Over 400 lines because" not in doc)
    assert long and not unexplained, unexplained
