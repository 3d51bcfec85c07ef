"""The teacher assistant (kd_jax/teachers/assistant.py): teacher -> assistant -> student from one config, the
teacher's student becoming the students' teacher, resumable across the assistant/student boundary."""

import glob
import os
import shutil

import jax
import numpy as np
import pytest

from kd_jax import data, models, train
from kd_jax.parallel import sharding
from kd_jax.teachers import assistant, teacher
from tests.helpers import load_config


@pytest.mark.slow
def test_chain_student_distills_the_assistants_logits_and_resumes_bitwise_across_the_boundary(smoke_run, tmp_path):
  """configs/default.py:smoke restoring the shared smoke run's teacher, with an MLP assistant: the students' logit
  cache holds the assistant's logits (computed here from its saved params), not the teacher's; a run stopped inside
  the assistant's phase (its checkpoint at step 200 left, nothing after it) resumes it, crosses into the student
  phase and ends with exactly the uninterrupted run's metrics."""
  config = load_config()
  config.teacher.init = str(smoke_run[0] / "teacher")
  config.teacher.assistant.name = "mlp"
  config.teacher.assistant.hidden_sizes = config.student.hidden_sizes  # the student's compiled step serves both
  config.baseline = False
  uninterrupted = train.train_and_evaluate(config, str(tmp_path / "a"))
  assert set(uninterrupted["metrics"]) == {"teacher", "assistant", "student"}
  assert uninterrupted["train"]["phases"]["assistant"]["steps"] == uninterrupted["train"]["steps"]
  assert uninterrupted["efficiency"]["assistant"]["params"] == 64 * 32 + 32 + 32 * 10 + 10

  task = data.load_task(config)
  model, params = models.create(config.teacher.assistant, num_classes=task.num_classes,
                                example_inputs=task.train.inputs[:1], rng=jax.random.PRNGKey(0))
  home = assistant.directory(config, str(tmp_path / "a" / "teacher"))
  params = teacher.restore_params(home, params, sharding.make_mesh())
  logits_of = lambda cache_dir: np.load(os.path.join(cache_dir, "logits.npy"))[
      np.searchsorted(np.load(os.path.join(cache_dir, "index.npy")), task.train.index)]
  (students_cache,) = glob.glob(os.path.join(home, "logit_cache", "*"))
  (teachers_cache,) = glob.glob(str(tmp_path / "a" / "teacher" / "logit_cache" / "*"))
  assistant_logits = np.asarray(model.apply({"params": params}, task.train.inputs))
  np.testing.assert_allclose(logits_of(students_cache), assistant_logits, rtol=1e-5, atol=1e-5)
  assert np.abs(logits_of(teachers_cache) - assistant_logits).max() > 1.0

  shutil.copytree(tmp_path / "a", tmp_path / "b")  # then back to where a stop at the assistant's step 200 left it
  stopped = assistant.directory(config, str(tmp_path / "b" / "teacher"))
  for path in (os.path.join(stopped, "params"), os.path.join(stopped, "logit_cache"), tmp_path / "b" / "checkpoints",
               *glob.glob(os.path.join(stopped, "checkpoints", "[0-9]*"))):
    if not str(path).endswith(os.sep + "200"):
      shutil.rmtree(path)
  os.remove(tmp_path / "b" / "results.json")
  resumed = train.train_and_evaluate(config, str(tmp_path / "b"))
  assert (resumed["train"]["resumed_phase"], resumed["train"]["resumed_from_step"]) == ("assistant", 200)
  assert resumed["metrics"] == uninterrupted["metrics"]
  assert resumed["validation_metrics"] == uninterrupted["validation_metrics"]
