"""Writes the logprobs file of a kd_jax teacher for a config's training split: the format a teacher from anywhere is
read in (teacher.source='logprobs_file'; kd_jax/teachers/logprobs_file.py, docs/teachers.md).

    python scripts/teacher_logprobs.py --config=configs/causal_lm.py:smoke --workdir=runs/causal_lm_teacher \\
      --out=runs/causal_lm_teacher/logprobs.jsonl

The teacher is the config's (config.teacher, source 'model'): trained in `<workdir>/teacher` when teacher.init is
'train' (a rerun reuses it), or the checkpoint's weights, or an earlier run's teacher directory. --top_logprobs
entries per token (default 20). Bad input: one line on stderr, exit status 2.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kd_jax.parallel import environment  # pylint: disable=wrong-import-position

environment.prepare()  # before JAX starts

from absl import flags  # pylint: disable=wrong-import-position
from ml_collections import config_flags  # pylint: disable=wrong-import-position


def main(argv) -> int:
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "Config file (causal_lm), optionally `file.py:<options>`.",
                                  flag_values=flag_values, lock_config=True)
  flags.DEFINE_string("workdir", None, "Where the teacher lives (<workdir>/teacher) when it is trained here.",
                      flag_values=flag_values)
  flags.DEFINE_string("out", None, "The logprobs file to write.", flag_values=flag_values)
  flags.DEFINE_integer("top_logprobs", 20, "Top entries per token.", flag_values=flag_values)
  flag_values(argv)
  from kd_jax import data, evaluation, preflight  # pylint: disable=import-outside-toplevel
  from kd_jax.errors import UserError  # pylint: disable=import-outside-toplevel
  from kd_jax.parallel import sharding  # pylint: disable=import-outside-toplevel
  from kd_jax.teachers import logprobs_file, teacher  # pylint: disable=import-outside-toplevel
  from kd_jax.training import metric_writer  # pylint: disable=import-outside-toplevel
  config, workdir, out = flag_values.config, flag_values.workdir, flag_values.out
  try:
    if not workdir or not out:
      raise UserError("--workdir and --out are required")
    preflight.check(config)
    if config.data.name != "causal_lm" or config.teacher.source != "model":
      raise UserError(f"--config: needs data.name='causal_lm' and teacher.source='model' (a teacher run here), not "
                      f"{config.data.name!r} and {config.teacher.source!r}")
    task = data.load_task(config)
    mesh = sharding.make_mesh(config.train.num_devices, config.mesh)
    evaluator = evaluation.for_task(config, task, mesh)
    the_teacher = teacher.obtain(config, task, mesh, workdir, writer=metric_writer.MetricWriter(workdir, "teacher"),
                                 evaluate_fn=lambda model, params: evaluator.during_training(model, params,
                                                                                            teacher_inputs=True))
    lines = logprobs_file.write_from_teacher(the_teacher.model, the_teacher.params, task, out,
                                             top_logprobs=flag_values.top_logprobs,
                                             chat_template=config.data.chat_template, mesh=mesh,
                                             batch_size=config.data.eval_batch_size)
  except UserError as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  print(f"wrote {out}: {lines} lines (top {flag_values.top_logprobs} logprobs per response token)")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
