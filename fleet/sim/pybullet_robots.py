"""The PyBullet robot arms: Franka Panda with its parallel gripper, KUKA iiwa with a suction tool.

Each arm turns a normalized action (end-effector deltas + gripper command) into joint targets through
inverse kinematics, and reports its proprioception. The tool always points down; only the KUKA can
turn it about the vertical axis.

Rendering speed: the stock Panda visual meshes are ~100k triangles, which makes PyBullet's CPU
renderer ~10x slower; the URDF is rewritten to render the (much coarser) collision meshes instead.
KUKA end effector: the stock iiwa has no gripper and `kuka_with_gripper2.sdf` is a finicky
multi-joint gripper, so the KUKA gets a suction tool (a cylinder link added to the URDF). Suction
"seals" when the tool tip touches an object while suction is on: a fixed constraint then holds the
object until suction is switched off. This is far more robust than a simulated two-finger grasp and
makes the two embodiments genuinely different.

Over 400 lines because both arms share the IK, limits and asset rewriting (mesh decimation) they are built on.
"""

from __future__ import annotations

import abc
import atexit
import functools
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pybullet
import pybullet_data
from pybullet_utils.bullet_client import BulletClient

_DATA = Path(pybullet_data.getDataPath())


@dataclass(frozen=True)
class ArmLimits:
    """How far one control tick may move the tool, and where the tool may go."""

    max_translation: float = 0.03  # metres per control tick at |action| = 1 (0.3 m/s at 10 Hz)
    max_rotation: float = 0.25  # radians of tool yaw per control tick at |action| = 1
    workspace_low: tuple[float, float, float] = (0.30, -0.32, 0.012)  # lowest tool xyz target, metres
    workspace_high: tuple[float, float, float] = (0.78, 0.32, 0.35)  # highest tool xyz target, metres
    max_lead: float = 0.05  # how far the commanded tool target may run ahead of the real tool, metres


@functools.cache
def _asset_dir() -> Path:
    """A per-process directory for rewritten robot descriptions (removed at exit)."""
    path = Path(tempfile.mkdtemp(prefix="fleet-sim-"))
    atexit.register(shutil.rmtree, path, True)
    return path


@functools.cache
def panda_urdf() -> Path:
    """The Panda URDF with absolute mesh paths and the collision meshes as visuals (fast rendering)."""
    source = _DATA / "franka_panda" / "panda.urdf"
    text = source.read_text()
    text = text.replace("package://meshes/visual/", "package://meshes/collision/")
    text = text.replace("package://meshes/", f"{source.parent / 'meshes'}/")
    out = _asset_dir() / "panda_fast.urdf"
    out.write_text(text)
    return out


_SUCTION_TOOL = """
  <joint name="suction_mount" type="fixed">
    <parent link="lbr_iiwa_link_7"/>
    <child link="suction_tool"/>
    <origin rpy="0 0 0" xyz="0 0 0.045"/>
  </joint>
  <link name="suction_tool">
    <inertial><origin xyz="0 0 0.03"/><mass value="0.1"/>
      <inertia ixx="0.0001" ixy="0" ixz="0" iyy="0.0001" iyz="0" izz="0.0001"/></inertial>
    <visual><origin xyz="0 0 0.03"/><geometry><cylinder length="0.06" radius="0.016"/></geometry>
      <material name="Suction"><color rgba="0.15 0.15 0.15 1"/></material></visual>
    <collision><origin xyz="0 0 0.03"/><geometry><cylinder length="0.06" radius="0.016"/></geometry></collision>
  </link>
  <joint name="suction_tip_joint" type="fixed">
    <parent link="suction_tool"/>
    <child link="suction_tip"/>
    <origin rpy="0 0 0" xyz="0 0 0.06"/>
  </joint>
  <link name="suction_tip">
    <inertial><mass value="0"/><inertia ixx="0" ixy="0" ixz="0" iyy="0" iyz="0" izz="0"/></inertial>
  </link>
"""


def decimate_obj(text: str, cell: float) -> str:
    """A coarser OBJ mesh by vertex clustering: vertices in one `cell`-sized voxel merge into their mean.

    Only used for what the camera sees (collision shapes stay exact); at 64x64 pixels the detail lost
    is invisible and the CPU renderer gets several times faster.
    """
    vertices: list[list[float]] = []
    faces: list[list[int]] = []
    for line in text.splitlines():
        if line.startswith("v "):
            vertices.append([float(x) for x in line.split()[1:4]])
        elif line.startswith("f "):
            faces.append([int(token.split("/")[0]) for token in line.split()[1:]])
    v = np.array(vertices)
    _, cluster = np.unique(np.floor(v / cell).astype(np.int64), axis=0, return_inverse=True)
    cluster = cluster.ravel()
    merged = np.zeros((cluster.max() + 1, 3))
    np.add.at(merged, cluster, v)
    merged /= np.bincount(cluster)[:, None]
    seen: set[tuple[int, ...]] = set()
    lines = [f"v {x:.5f} {y:.5f} {z:.5f}" for x, y, z in merged]
    for face in faces:
        ids = [int(cluster[i - 1 if i > 0 else len(v) + i]) for i in face]
        for k in range(1, len(ids) - 1):
            tri = (ids[0], ids[k], ids[k + 1])
            key = tuple(sorted(tri))
            if len(set(tri)) == 3 and key not in seen:
                seen.add(key)
                lines.append(f"f {tri[0] + 1} {tri[1] + 1} {tri[2] + 1}")
    return "\n".join(lines) + "\n"


@functools.cache
def kuka_urdf(visual_cell: float = 0.02) -> Path:
    """The iiwa URDF with a suction tool on the flange and decimated visual meshes (fast rendering)."""
    source = _DATA / "kuka_iiwa" / "model.urdf"
    meshes = _asset_dir() / "kuka_meshes"
    meshes.mkdir(exist_ok=True)
    text = source.read_text()
    for obj in sorted((source.parent / "meshes").glob("link_*.obj")):
        (meshes / obj.name).write_text(decimate_obj(obj.read_text(), visual_cell))
        text = text.replace(f'filename="meshes/{obj.name}"', f'filename="{meshes / obj.name}"')
    text = text.replace('filename="meshes/', f'filename="{source.parent / "meshes"}/')
    text = text.replace("</robot>", _SUCTION_TOOL + "</robot>")
    out = _asset_dir() / "kuka_suction.urdf"
    out.write_text(text)
    return out


def _heading(quaternion: tuple[float, ...]) -> float:
    """Yaw of a frame's x axis projected on the table (well defined for a tool pointing down)."""
    x, y, z, w = quaternion
    return math.atan2(2.0 * (x * y + w * z), 1.0 - 2.0 * (y * y + z * z))


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


class PyBulletArm(abc.ABC):
    """An arm with a downward tool, driven by end-effector deltas through IK."""

    ee_link: int  # link whose pose is the tool centre point
    arm_joints: tuple[int, ...]  # revolute joints IK drives
    joint_forces: tuple[float, ...]  # max motor force/torque per arm joint
    rest_pose: tuple[float, ...]  # null-space preference for IK, and the reset pose seed

    def __init__(self, client: BulletClient, limits: ArmLimits) -> None:
        self.client = client
        self.limits = limits
        self.body = self._load()
        info = [client.getJointInfo(self.body, j) for j in self.arm_joints]
        self._lower = [i[8] for i in info]
        self._upper = [i[9] for i in info]
        self._ranges = [hi - lo for lo, hi in zip(self._lower, self._upper, strict=True)]
        self._n_ik = sum(1 for j in range(client.getNumJoints(self.body)) if client.getJointInfo(self.body, j)[2] != 4)
        self._low = np.array(limits.workspace_low)
        self._high = np.array(limits.workspace_high)
        self.target = np.zeros(3)
        self.target_yaw = 0.0
        self.closed = False

    @abc.abstractmethod
    def _load(self) -> int:
        """Load the robot into the client; return its body id."""

    @abc.abstractmethod
    def _set_gripper(self, close: bool) -> None:
        """Command the gripper (fingers or suction) for the next control tick."""

    def opening(self) -> float:
        """1.0 fully open .. 0.0 fully closed."""
        return 0.0 if self.closed else 1.0

    def release(self) -> None:
        """Let go of whatever the gripper holds, immediately (fingers just get the open command)."""
        self.closed = False

    @abc.abstractmethod
    def after_physics(self, movable: dict[str, int]) -> None:
        """Hook after each physics substep (e.g. suction sealing: a cup that touches seals at the physics rate,
        not only where the tool happens to be at the end of a control tick)."""

    @abc.abstractmethod
    def held(self, movable: dict[str, int]) -> str | None:
        """Name of the object the gripper holds, if any."""

    @abc.abstractmethod
    def proprio(self) -> np.ndarray:
        """Proprioceptive state, float32, in the embodiment's documented layout."""

    # --- shared kinematics ---------------------------------------------------------------------
    def ee_position(self) -> np.ndarray:
        return np.array(self.client.getLinkState(self.body, self.ee_link)[4])

    def ee_yaw(self) -> float:
        return _wrap(_heading(self.client.getLinkState(self.body, self.ee_link)[5]))

    def _orientation(self, yaw: float) -> tuple[float, ...]:
        # Roll pi points the tool's z axis down; yaw then turns it about the world vertical.
        return self.client.getQuaternionFromEuler((math.pi, 0.0, yaw))

    def _ik(self, position: np.ndarray, yaw: float) -> list[float]:
        q = self.client.calculateInverseKinematics(
            self.body,
            self.ee_link,
            position.tolist(),
            self._orientation(yaw),
            lowerLimits=self._lower + [0.0] * (self._n_ik - len(self._lower)),
            upperLimits=self._upper + [0.04] * (self._n_ik - len(self._upper)),
            jointRanges=self._ranges + [0.04] * (self._n_ik - len(self._ranges)),
            restPoses=list(self.rest_pose) + [0.02] * (self._n_ik - len(self.rest_pose)),
            maxNumIterations=50,
            residualThreshold=1e-4,
        )
        return list(q[: len(self.arm_joints)])

    def reset(self, position: np.ndarray, yaw: float = 0.0) -> None:
        """Teleport the arm so the tool is at `position` (pointing down, at `yaw`), gripper open."""
        for j, q in zip(self.arm_joints, self.rest_pose, strict=True):
            self.client.resetJointState(self.body, j, q)
        for _ in range(4):  # IK from the current joints: iterate so the teleported pose converges
            for j, q in zip(self.arm_joints, self._ik(position, yaw), strict=True):
                self.client.resetJointState(self.body, j, q)
        self.target = np.array(position, dtype=np.float64)
        self.target_yaw = yaw
        self.closed = False
        self._drive(self._ik(self.target, yaw))
        self._set_gripper(False)

    def apply(self, action: np.ndarray) -> None:
        """Set joint targets for one control tick from a normalized action (validated, in [-1, 1])."""
        lim = self.limits
        ee = self.ee_position()
        target = self.target + action[:3].astype(np.float64) * lim.max_translation
        # Don't let the commanded target wind up far from a tool that is blocked (pushing, touching).
        target = np.clip(target, ee - lim.max_lead, ee + lim.max_lead)
        self.target = np.clip(target, self._low, self._high)
        if len(action) == 5:
            self.target_yaw = float(np.clip(self.target_yaw + action[3] * lim.max_rotation, -math.pi / 2, math.pi / 2))
        self.closed = bool(action[-1] > 0.0)
        self._drive(self._ik(self.target, self.target_yaw))
        self._set_gripper(self.closed)

    def _drive(self, q: list[float]) -> None:
        self.client.setJointMotorControlArray(
            self.body,
            list(self.arm_joints),
            pybullet.POSITION_CONTROL,
            targetPositions=q,
            forces=list(self.joint_forces),
            positionGains=[0.3] * len(q),
        )


class PandaArm(PyBulletArm):
    """Franka Panda; action = (dx, dy, dz, gripper), gripper > 0 closes the fingers."""

    ee_link = 11  # panda_grasptarget, between the fingertips
    arm_joints = (0, 1, 2, 3, 4, 5, 6)
    joint_forces = (87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0)
    rest_pose = (0.0, -0.25, 0.0, -2.3, 0.0, 2.05, 0.785)
    fingers = (9, 10)
    finger_force = 40.0  # newtons per finger when closing

    def _load(self) -> int:
        body = self.client.loadURDF(str(panda_urdf()), (0, 0, 0), useFixedBase=True)
        for finger in self.fingers:
            self.client.changeDynamics(body, finger, lateralFriction=1.5, spinningFriction=0.1, frictionAnchor=True)
        for link in range(-1, 8):
            self.client.changeVisualShape(body, link, rgbaColor=(0.93, 0.93, 0.93, 1.0))
        for link in (8, *self.fingers):
            self.client.changeVisualShape(body, link, rgbaColor=(0.22, 0.22, 0.24, 1.0))
        # Couple the fingers (the URDF's <mimic> is ignored by PyBullet): without this, two independent
        # force-limited fingers let a grasped cube slide sideways whenever the hand accelerates.
        gear = self.client.createConstraint(
            body, self.fingers[0], body, self.fingers[1], pybullet.JOINT_GEAR, (1, 0, 0), (0, 0, 0), (0, 0, 0)
        )
        self.client.changeConstraint(gear, gearRatio=-1, erp=0.1, maxForce=100)
        return body

    def _set_gripper(self, close: bool) -> None:
        self.client.setJointMotorControlArray(
            self.body,
            list(self.fingers),
            pybullet.POSITION_CONTROL,
            targetPositions=[0.0 if close else 0.04] * 2,
            forces=[self.finger_force] * 2,
        )

    def reset(self, position: np.ndarray, yaw: float = 0.0) -> None:
        for finger in self.fingers:
            self.client.resetJointState(self.body, finger, 0.04)
        super().reset(position, yaw)

    def after_physics(self, movable: dict[str, int]) -> None:
        pass

    def opening(self) -> float:
        return float(sum(s[0] for s in self.client.getJointStates(self.body, list(self.fingers))) / 0.08)

    def held(self, movable: dict[str, int]) -> str | None:
        if not self.closed:
            return None
        for name, body in movable.items():
            if all(self.client.getContactPoints(self.body, body, finger) for finger in self.fingers):
                return name
        return None

    def proprio(self) -> np.ndarray:
        """(x, y, z, qx, qy, qz, qw, finger_1, finger_2, gripper_closed)."""
        state = self.client.getLinkState(self.body, self.ee_link)
        fingers = [s[0] for s in self.client.getJointStates(self.body, list(self.fingers))]
        return np.array([*state[4], *state[5], *fingers, float(self.closed)], dtype=np.float32)


class KukaSuctionArm(PyBulletArm):
    """KUKA iiwa with a suction tool; action = (dx, dy, dz, dyaw, suction), suction > 0 switches it on."""

    ee_link = 8  # suction_tip
    tool_link = 7  # suction_tool, the link that touches objects
    arm_joints = (0, 1, 2, 3, 4, 5, 6)
    joint_forces = (300.0,) * 7
    rest_pose = (0.0, 0.5, 0.0, -1.6, 0.0, 1.05, 0.0)
    seal_distance = 0.012  # a contact this close to the tip (along the tool axis) seals the suction cup

    def __init__(self, client: BulletClient, limits: ArmLimits) -> None:
        super().__init__(client, limits)
        self._constraint: int | None = None
        self._held: str | None = None

    def _load(self) -> int:
        return self.client.loadURDF(str(kuka_urdf()), (0, 0, 0), useFixedBase=True)

    def _set_gripper(self, close: bool) -> None:
        if not close:
            self.release()

    def release(self) -> None:
        """Switch suction off: drop whatever is held."""
        super().release()
        if self._constraint is not None:
            self.client.removeConstraint(self._constraint)
        self._constraint = None
        self._held = None

    def reset(self, position: np.ndarray, yaw: float = 0.0) -> None:
        self.release()
        super().reset(position, yaw)

    def _tip_contact(self, body: int) -> bool:
        tip = self.ee_position()
        for contact in self.client.getContactPoints(self.body, body, self.tool_link):
            if abs(contact[5][2] - tip[2]) < self.seal_distance:
                return True
        return False

    def after_physics(self, movable: dict[str, int]) -> None:
        if not self.closed or self._constraint is not None:
            return
        for name, body in movable.items():
            if self._tip_contact(body):
                tip_pos, tip_orn = self.client.getLinkState(self.body, self.ee_link)[4:6]
                obj_pos, obj_orn = self.client.getBasePositionAndOrientation(body)
                inv_pos, inv_orn = self.client.invertTransform(tip_pos, tip_orn)
                rel_pos, rel_orn = self.client.multiplyTransforms(inv_pos, inv_orn, obj_pos, obj_orn)
                self._constraint = self.client.createConstraint(
                    self.body,
                    self.ee_link,
                    body,
                    -1,
                    pybullet.JOINT_FIXED,
                    (0, 0, 0),
                    rel_pos,
                    (0, 0, 0),
                    rel_orn,
                )
                self.client.changeConstraint(self._constraint, maxForce=200.0)
                self._held = name
                return

    def held(self, movable: dict[str, int]) -> str | None:
        return self._held

    def proprio(self) -> np.ndarray:
        """(x, y, z, sin yaw, cos yaw, suction_on, sealed, tool_contact)."""
        pos = self.ee_position()
        yaw = self.ee_yaw()
        contact = bool(self.client.getContactPoints(bodyA=self.body, linkIndexA=self.tool_link))
        return np.array(
            [*pos, math.sin(yaw), math.cos(yaw), float(self.closed), float(self._held is not None), float(contact)],
            dtype=np.float32,
        )
