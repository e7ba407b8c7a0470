"""Each photo's own turn of the arms, from the body and hand landmarks it shows.

A person holding still for a turn-around still lets their arms drift a few degrees between shots;
at the hand that is centimetres, and the photos' outlines and colours of arms and hands disagree.
Like the head (`photo_heads`), each arm gets, in each photo that shows its elbow and wrist, a
rigid turn of the whole arm (with forearm, hand and fingers) about the shoulder's joint, a world
rotation vector, that brings the fitted arm's elbow, wrist and knuckles onto that photo's
landmarks (MediaPipe Pose's elbow and wrist, and MediaPipe Hands' wrist and four knuckles where a
hand was found). Each arm's turns are fitted over all its photos at once with their mean held at
zero (the body fit's arm is the photos' compromise), a robust reprojection error and a small
prior. A turn over MAX_TURN_DEG is taken for a failed landmark, and that photo keeps the capture
pose's arm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import roma
import torch

from ...avatar import Pose, Rig
from ...maths.deform import forward_kinematics
from ..perceive import Perception
from ..views import View
from .photo_heads import ViewPixels
from .targets import VISIBLE

SIDES = ("L", "R")  # MediaPipe's left landmarks and left hand are Anny's ".L" side (`targets`)
SHOULDER = "upperarm01.{side}"
ELBOW, WRIST = "lowerarm01.{side}", "wrist.{side}"
POSE_LANDMARKS = {"L": (13, 15), "R": (14, 16)}  # elbow, wrist
# MediaPipe Hands: the wrist and the four fingers' knuckles; the bones whose heads they are.
HAND_LANDMARKS = {0: "wrist.{side}", 5: "finger2-1.{side}", 9: "finger3-1.{side}",
                  13: "finger4-1.{side}", 17: "finger5-1.{side}"}  # fmt: skip
HAND_WEIGHT = 0.5  # a found hand's point, against a visible body landmark's visibility
SIGMA = 0.01  # the reprojection error's robust scale, of the photo's longer side (5 px at 512)
TURN_WEIGHT = 2e-4  # per squared degree
MAX_TURN_DEG = 20.0
STEPS = 200
LEARNING_RATE = 0.01
FINAL_RATE = 0.01


def arm_turns(perceptions: Sequence[Perception], views: Sequence[View], rig: Rig, pose: Pose) -> np.ndarray:
    """[C, 2, 3] each photo's turns of the left and right arm (world rotation vectors about the
    shoulder joints, radians) from the capture pose; zero where a photo does not show the arm
    (elbow and wrist) or the rig has no such bones. `views[i]` is `perceptions[i]`'s."""
    turns = np.zeros((len(views), 2, 3), np.float32)
    names = rig.joint_names
    heads = forward_kinematics(rig, pose).world[:, :3, 3].astype(np.float64)
    for side_index, side in enumerate(SIDES):
        bones = [SHOULDER, ELBOW, WRIST, *HAND_LANDMARKS.values()]
        if any(bone.format(side=side) not in names for bone in bones):
            continue
        points = [ELBOW, WRIST, *HAND_LANDMARKS.values()]
        positions = heads[[names.index(bone.format(side=side)) for bone in points]]
        targets, weights = _targets(perceptions, side)
        shown = [index for index in range(len(views)) if (weights[index, :2] > 0).all()]
        if len(shown) < 2:
            continue
        shoulder = heads[names.index(SHOULDER.format(side=side))]
        fitted = _fit(positions, shoulder, targets[shown], weights[shown], [views[index] for index in shown])
        for index, turn in zip(shown, fitted, strict=True):
            if math.degrees(float(np.linalg.norm(turn))) <= MAX_TURN_DEG:
                turns[index, side_index] = turn
    return turns


def arm_joints(rig: Rig) -> list[int] | None:
    """The shoulders' joints, left then right, or None when the rig has not both."""
    names = [SHOULDER.format(side=side) for side in SIDES]
    if any(name not in rig.joint_names for name in names):
        return None
    return [rig.joint_names.index(name) for name in names]


def _targets(perceptions: Sequence[Perception], side: str) -> tuple[np.ndarray, np.ndarray]:
    """[C, 7, 2] pixels and [C, 7] weights of the elbow, the wrist and the hand's five points."""
    count = 2 + len(HAND_LANDMARKS)
    targets = np.zeros((len(perceptions), count, 2))
    weights = np.zeros((len(perceptions), count))
    for index, seen in enumerate(perceptions):
        landmarks = seen.pose[list(POSE_LANDMARKS[side])]
        visibility = np.clip(landmarks[:, 3], 0.0, 1.0)
        targets[index, :2] = landmarks[:, :2]
        weights[index, :2] = np.where(visibility > VISIBLE, visibility, 0.0)
        hand = seen.left_hand if side == "L" else seen.right_hand
        if hand is not None:
            targets[index, 2:] = hand[list(HAND_LANDMARKS), :2]
            weights[index, 2:] = HAND_WEIGHT
    return targets, weights


def _fit(
    points: np.ndarray,  # [K, 3] world, at the capture pose
    shoulder: np.ndarray,  # [3]
    targets: np.ndarray,  # [F, K, 2] pixels
    weights: np.ndarray,  # [F, K]
    views: Sequence[View],  # [F]
) -> np.ndarray:
    """[F, 3] each photo's turn of the arm about the shoulder, mean zero over the photos."""
    base = torch.as_tensor(points - shoulder)
    pivot = torch.as_tensor(shoulder)
    target = torch.as_tensor(targets)
    weight = torch.as_tensor(weights)
    project = ViewPixels(views)
    sigma = torch.as_tensor([SIGMA * max(view.camera.width, view.camera.height) for view in views])
    turns = torch.zeros(len(views), 3, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.Adam([turns], lr=LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: FINAL_RATE ** (step / STEPS))
    for _ in range(STEPS):
        optimiser.zero_grad()
        centred = turns - turns.mean(dim=0)
        world = torch.einsum("fij,kj->fki", roma.rotvec_to_rotmat(centred), base) + pivot
        squared = ((project(world) - target) ** 2).sum(-1) / sigma[:, None] ** 2
        reprojection = (weight * squared / (1 + squared)).sum() / weight.sum().clamp_min(1e-6)
        prior = TURN_WEIGHT * math.degrees(1) ** 2 * (centred**2).sum(-1).mean()
        (reprojection + prior).backward()
        optimiser.step()
        schedule.step()
    with torch.no_grad():
        return (turns - turns.mean(dim=0)).numpy().astype(np.float32)
