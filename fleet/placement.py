"""Where fleet's work goes on a Ray cluster: a node kept for the learner, the robots spread over the rest.

A node started for the learner, e.g. `ray start --address HEAD --labels fleet-role=learner --resources
'{"fleet_learner": 2}'` (one unit per data-parallel learner it should hold), takes the learner's workers
(`fleet learner run --num-learners 2 --learner-node`: each asks for one `fleet_learner`) and no robot: robots select
nodes whose `fleet-role` is not `learner`, so a robot's control loop never shares cores with an update. Any other node
takes robots, spread over them (`fleet robots run --ray-address`).
"""

from __future__ import annotations

LEARNER_RESOURCE = "fleet_learner"  # custom Ray resource a learner node offers, one unit per learner worker
ROLE_LABEL, LEARNER_ROLE = "fleet-role", "learner"  # Ray node label marking the learner's node
ROBOT_NODES = {ROLE_LABEL: f"!{LEARNER_ROLE}"}  # Ray label selector: every node but the learner's
