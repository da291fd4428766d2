"""The three-stage training recipe as library functions and commands.

Stages: collect scripted demonstrations (`demos`), pre-train one multi-task, multi-embodiment VLA on them
and post-train it on 50-100 demonstrations of one task (`train`), then measure success per
task x embodiment in simulation (`evaluate`). `cli` wraps them as `fleet demos|train|eval`; `make demo`
and `bench/policy.py` call the functions directly. Importing this package imports neither torch nor PyBullet.
"""
