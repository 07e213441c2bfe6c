"""Object detection (Faster R-CNN, RetinaNet): boxes, classes and scores; everything is the base's."""

from __future__ import annotations

from .base import Task

__all__ = ["TASK"]

TASK = Task()
