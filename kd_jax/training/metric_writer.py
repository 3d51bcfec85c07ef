"""Metric history: one JSON line per (phase, step) in `<workdir>/history.jsonl`, and TensorBoard event files.

In a multi-process run every process computes the same scalars; process 0 alone writes them.
"""

import json
import os

import tensorboardX

from kd_jax import files
from kd_jax.parallel import distributed


class MetricWriter:
  """Writes scalars of one training phase ('teacher', 'student', 'student_hard') at a step.

  History lines look like {"phase": "student", "step": 100, "train/loss": 0.53, ...}. TensorBoard events go to
  `<workdir>/tensorboard/<phase>/`, so the phases show as separate runs.
  """

  def __init__(self, workdir: str, phase: str):
    self.phase = phase
    self._history_path = os.path.join(workdir, "history.jsonl")
    self._tensorboard_dir = os.path.join(workdir, "tensorboard", phase)
    self._summary_writer = None
    self._writes = distributed.is_main_process()

  def drop_after(self, step: int) -> None:
    """Forgets this phase's lines after `step` (a resumed run logs those steps again)."""
    if not self._writes or not os.path.exists(self._history_path):
      return
    with open(self._history_path) as stream:
      lines = stream.readlines()
    kept = [line for line in lines if not _is_after(line, self.phase, step)]
    if len(kept) != len(lines):
      with files.atomic_open(self._history_path) as stream:
        stream.write("".join(kept).encode())

  def write_scalars(self, step: int, scalars: dict) -> None:
    """Appends one history line and the matching TensorBoard scalars."""
    if not self._writes:
      return
    record = {"phase": self.phase, "step": int(step), **{key: float(value) for key, value in scalars.items()}}
    os.makedirs(os.path.dirname(self._history_path), exist_ok=True)
    with open(self._history_path, "a") as stream:
      stream.write(json.dumps(record) + "\n")
    if self._summary_writer is None:
      self._summary_writer = tensorboardX.SummaryWriter(self._tensorboard_dir)
    for key, value in scalars.items():
      self._summary_writer.add_scalar(key, float(value), int(step))

  def close(self) -> None:
    if self._summary_writer is not None:
      self._summary_writer.flush()
      self._summary_writer.close()


class FanOutWriter:
  """The MetricWriter interface over the writers of every point that shares one run (a vectorized sweep's shared
  hard-label baseline)."""

  def __init__(self, writers: list[MetricWriter]):
    self._writers = writers

  def drop_after(self, step: int) -> None:
    for writer in self._writers:
      writer.drop_after(step)

  def write_scalars(self, step: int, scalars: dict) -> None:
    for writer in self._writers:
      writer.write_scalars(step, scalars)


def _is_after(line: str, phase: str, step: int) -> bool:
  try:
    record = json.loads(line)
  except json.JSONDecodeError:
    return True  # a line cut off by a kill
  return record.get("phase") == phase and record.get("step", 0) > step
