"""The model protocol (kd_jax/models/protocol.py): users' models named in a config (an NNX module, a Linen module, an
(init_fn, apply_fn) pair) train through the same loop as the built-in ones: they learn, resume bitwise, sweep
vectorized as sequentially, give the same result on 1 and 8 devices, and take LoRA and freezing by path; bad names
are one line, exit 2, nothing written."""

import functools
import os

import jax
import numpy as np
import pytest
from flax import nnx

from kd_jax import data, files, models, train
from kd_jax.models import export, peft, protocol
from kd_jax.parallel import preemption, sharding
from kd_jax.sweeps import runner
from kd_jax.training import loop, steps, vectorized
from tests.helpers import REPO_ROOT, SigtermAt, digits_student, load_config, run_main

NNX_CNN = "configs/models/nnx_cnn.py:create"
NNX_MLP = "tests/user_models.py:nnx_mlp"
LINEN_MLP = "tests/user_models.py:linen_mlp"
MLP_PAIR = "tests/user_models.py:mlp_pair"


def custom_model_config(smoke_run, student_name: str = NNX_CNN):
  """configs/custom_model.py:smoke with `student_name`, distilling from the smoke run's trained teacher, without the
  hard-label student."""
  workdir, _ = smoke_run
  config = load_config("configs/custom_model.py")
  config.student.name = student_name
  config.teacher.workdir = os.path.join(workdir, "teacher")
  config.baseline = False
  return config


@pytest.mark.slow
def test_the_nnx_adapter_computes_the_modules_own_logits():
  """The NNX CNN through the adapter gives the logits of the module its factory builds, holding the adapter's
  params, called directly: in eval mode, and in train mode with its dropout stream reseeded from the step's key
  (another key, other masks)."""
  config = load_config("configs/custom_model.py")
  inputs = data.load_task(config).train.inputs[:16]
  model, params = models.create(config.student, num_classes=10, example_inputs=inputs[:1], rng=jax.random.PRNGKey(3))
  assert jax.tree.map(np.shape, params) == {"convs": {"0": {"kernel": (3, 3, 1, 8), "bias": (8,)},
                                                      "1": {"kernel": (3, 3, 8, 16), "bias": (16,)}},
                                            "head": {"kernel": (16, 10), "bias": (10,)}}
  factory = protocol.load_factory(NNX_CNN, "student.name")
  reference = nnx.eval_shape(lambda: factory(config.student, num_classes=10, rngs=nnx.Rngs(0)))
  state = nnx.state(reference, nnx.Param)
  nnx.replace_by_pure_dict(state, nnx.restore_int_paths(params))
  nnx.update(reference, state)
  keys = jax.random.split(jax.random.PRNGKey(5), 2)

  @nnx.jit
  def module_logits(module, inputs, key):
    nnx.reseed(module, default=jax.random.fold_in(jax.random.wrap_key_data(key), 0))
    return nnx.view(module, deterministic=True)(inputs), nnx.view(module, deterministic=False)(inputs)

  @jax.jit
  def adapter_logits(params, inputs, keys):
    apply = functools.partial(model.apply, {"params": params}, inputs)
    return apply(), apply(train=True, rngs={"dropout": keys[0]}), apply(train=True, rngs={"dropout": keys[1]})

  eval_logits, train_logits, other = adapter_logits(params, inputs, keys)
  expected_eval, expected_train = module_logits(reference, inputs, keys[0])
  np.testing.assert_array_equal(eval_logits, expected_eval)
  np.testing.assert_array_equal(train_logits, expected_train)
  assert not np.array_equal(train_logits, eval_logits) and not np.array_equal(train_logits, other)


@pytest.mark.slow
def test_the_nnx_cnn_student_learns_from_cached_logits(smoke_run, tmp_path):
  """configs/custom_model.py:smoke's NNX CNN distilled on digits from the smoke teacher's cached logits ends far above
  chance (0.1)."""
  config = custom_model_config(smoke_run)
  results = train.train_and_evaluate(config, str(tmp_path))
  accuracy = results["metrics"]["student"]["accuracy"]
  assert accuracy > 0.6, accuracy
  # Exported (--format=params) and loaded back: the trained parameters bit for bit, the test accuracy of the run.
  assert export.export(str(tmp_path), model="student", export_format="params", out=str(tmp_path / "exported")) == [
      export.MODEL_FILE, export.SAFETENSORS_FILE]
  model, params = models.load_exported(str(tmp_path / "exported"))
  trained = export.trained_model(str(tmp_path), "student").params
  assert jax.tree.structure(params) == jax.tree.structure(trained)
  for expected, got in zip(jax.tree.leaves(trained), jax.tree.leaves(params)):
    np.testing.assert_array_equal(got, expected)
  test = data.load_task(config).test
  logits = np.asarray(jax.jit(model.apply)({"params": params}, test.inputs))
  assert np.mean(np.argmax(logits, axis=-1) == test.label) == pytest.approx(accuracy, abs=1e-12)


@pytest.mark.slow
def test_a_function_pair_teacher_trains_and_teaches_a_linen_student_online(tmp_path):
  """An (init_fn, apply_fn) MLP teacher trained in the run, run in the step (teacher_mode='online') to distil a Linen
  MLP student with dropout: both far above chance."""
  config = load_config("configs/custom_model.py")
  config.teacher.name, config.teacher.hidden_sizes, config.teacher.num_epochs = MLP_PAIR, (128,), 20
  config.student.name, config.student.hidden_sizes = LINEN_MLP, (32,)
  config.distill.teacher_mode, config.baseline = "online", False
  results = train.train_and_evaluate(config, str(tmp_path))
  accuracy = {model: results["metrics"][model]["accuracy"] for model in ("teacher", "student")}
  assert accuracy["teacher"] > 0.6 and accuracy["student"] > 0.6, accuracy


@pytest.mark.trains
@pytest.mark.parametrize("name", [NNX_MLP, LINEN_MLP])
@pytest.mark.parametrize("stacked", [False, True])
def test_an_interrupted_user_student_resumes_bitwise(tmp_path, stacked, name):
  """An NNX (or Linen) MLP student with dropout stopped by SIGTERM at step 150 and rerun ends with the parameters of
  the uninterrupted run, bit for bit; alone, and as two runs stacked under vmap (a vectorized sweep's program)."""
  config, examples, model, params, objective = digits_student(50, 150, 100, name=name, dropout_rate=0.1)

  def make_program():
    common = dict(model=model, optim_config=config.optim, num_steps=300, examples=examples,
                  batch_size=config.data.batch_size, train_config=config.train)
    if stacked:
      return vectorized.program(init_params={0: params}, objectives=[objective, objective],
                                learning_rates=[3e-3, 1e-3], seeds=[0, 0], **common)
    return steps.program(init_params=params, objective=objective, seed=0, mesh=sharding.make_mesh(), **common)

  num_runs = 2 if stacked else 1
  run = lambda writer, directory: loop.train(
      "student", make_program(), [loop.RunLog(f"run {i}", writer, np.zeros(300)) for i in range(num_runs)],
      num_steps=300, checkpoint_dir=str(directory), train_config=config.train, evaluate=lambda params: {})
  with preemption.sigterm_requests_stop():
    uninterrupted = run(SigtermAt(), tmp_path / "uninterrupted")
    writer = SigtermAt(step=100)
    with pytest.raises(preemption.Preempted, match=r"^student: stopped by SIGTERM at step 150 of 300"):
      run(writer, tmp_path / "interrupted")
  with preemption.sigterm_requests_stop():
    resumed = run(writer, tmp_path / "interrupted")
  assert resumed.stats["resumed_from_step"] == 150
  for expected, got in zip(jax.tree.leaves(uninterrupted.params), jax.tree.leaves(resumed.params)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


@pytest.mark.slow
@pytest.mark.parametrize("name", [NNX_MLP, LINEN_MLP])
def test_a_vectorized_seed_sweep_of_a_user_student_equals_the_sequential_one(smoke_run, tmp_path, name):
  """Two seeds of an NNX (or Linen) MLP student with dropout trained together (parameters stacked, vmapped) give the
  metrics of the two runs one after another."""
  metrics = {}
  for mode in ("sequential", "vectorized"):
    config = custom_model_config(smoke_run, name)
    config.student.dropout_rate = 0.1
    config.sweep.seeds, config.sweep.mode = 2, mode
    config.train.num_steps = 60
    config.train.log_every_steps, config.train.eval_every_steps, config.train.checkpoint_every_steps = 20, 60, 60
    workdir = tmp_path / mode
    runner.run(config, str(workdir))
    results = [files.read_json(str(workdir / point / "results.json"))
               for point in sorted(os.listdir(workdir)) if (workdir / point / "results.json").exists()]
    assert [r["train"]["phases"]["student"]["vectorized_runs"] for r in results] == [
        2, 2] if mode == "vectorized" else [1, 1]
    metrics[mode] = [r["metrics"]["student"] for r in results]
  assert metrics["sequential"][0]["accuracy"] != metrics["sequential"][1]["accuracy"]  # two seeds, two students
  for sequential, vectorized_point in zip(metrics["sequential"], metrics["vectorized"]):
    for name in ("accuracy", "nll", "ece", "kl_to_teacher"):
      assert vectorized_point[name] == pytest.approx(sequential[name], rel=1e-4, abs=1e-5), name


@pytest.mark.slow
@pytest.mark.multidevice
@pytest.mark.parametrize("student_name", [NNX_CNN, LINEN_MLP])
def test_a_user_student_on_one_device_equals_fsdp_over_eight(smoke_run, tmp_path, student_name):
  """The NNX CNN student (or a Linen MLP with dropout) trained on 1 device and with its parameters split over 8
  (mesh.fsdp=8) ends with the same metrics."""
  results = {}
  for name, overrides in (("single", {"num_devices": 1}), ("fsdp", {})):
    config = custom_model_config(smoke_run, student_name)
    if student_name == LINEN_MLP:
      config.student.hidden_sizes, config.student.dropout_rate = (32,), 0.1
    config.train.num_steps = 100
    config.train.update(overrides)
    if name == "fsdp":
      config.mesh.data, config.mesh.fsdp = 1, 8
    results[name] = train.train_and_evaluate(config, str(tmp_path / name))
  assert results["single"]["train"]["num_devices"] == 1 and results["fsdp"]["train"]["num_devices"] == 8
  for name in ("accuracy", "nll", "ece", "kl_to_teacher"):
    np.testing.assert_allclose(results["fsdp"]["metrics"]["student"][name],
                               results["single"]["metrics"]["student"][name], atol=1e-5, err_msg=name)


@pytest.mark.trains
def test_lora_and_freezing_by_path_on_an_nnx_student():
  """LoRA on an NNX MLP's head (its adapters merged into the weights in each call) with hidden/1 trainable: after
  three steps the adapters and hidden/1 moved, hidden/0 and the head's own weights did not; the plain model that
  evaluation sees (adapters merged) computes the adapted model's logits."""
  config, examples, _, _, objective = digits_student(50, 150, 100, name=NNX_MLP)
  config.student.hidden_sizes = (32, 16)
  config.student.lora.rank, config.student.lora.target_modules = 2, ("head",)
  config.student.trainable = ("hidden/1/",)
  model, params = models.create_student(config.student, num_classes=10, example_inputs=examples.inputs[:1],
                                        rng=jax.random.PRNGKey(0))
  params = jax.device_get(params)  # a host copy: the step donates the state's buffers
  mesh = sharding.make_mesh()
  step = steps.compile_step(mesh, model=model, teacher_model=None)
  state = sharding.replicate(steps.create_train_state(model, params, config.optim, 10,
                                                      peft.of_student(config.student)), mesh)
  rng = sharding.replicate(jax.random.PRNGKey(1), mesh)
  for i in range(3):
    batch = sharding.shard_batch(examples.select(np.arange(i * 64, (i + 1) * 64)), mesh)
    state, _ = step(state, None, sharding.replicate(objective, mesh), rng, batch)
  after = jax.device_get(state.params)
  moved = {peft.path_name(path): not np.array_equal(leaf, before)
           for (path, leaf), before in zip(jax.tree_util.tree_flatten_with_path(after)[0], jax.tree.leaves(params))}
  assert moved == {"head/bias": False, "head/kernel": False, "head/lora_a": True, "head/lora_b": True,
                   "hidden/0/bias": False, "hidden/0/kernel": False, "hidden/1/bias": True, "hidden/1/kernel": True}
  inputs = examples.inputs[:8]
  np.testing.assert_allclose(peft.plain_model(model).apply({"params": peft.plain_params(model, after)}, inputs),
                             model.apply({"params": after}, inputs), atol=1e-6)


def bad_name_cases():
  cwd = str(REPO_ROOT)
  returns = "a flax.nnx.Module, a flax.linen.Module or an (init_fn, apply_fn) pair"
  return [
      ("student.name", "nnx_cnn",
       "allowed: mlp, cnn, hf, or a user's model 'package.module:factory' or 'path/to/file.py:factory'"),
      ("student.name", "no_such_package.models:create",
       "no module named 'no_such_package' (give 'package.module:factory' importable from here, or "
       "'path/to/file.py:factory')"),
      ("student.name", "configs/models/missing.py:create",
       f"no such file 'configs/models/missing.py' (a path relative to {cwd} or absolute)"),
      ("student.name", "configs/models/nnx_cnn.py:build",
       f"'configs/models/nnx_cnn.py' has no factory 'build' (a function of the model's config block returning "
       f"{returns})"),
      ("teacher.name", "tests/user_models.py:raises", "the factory raised ValueError: no widths in (32, 64)"),
      ("student.name", "tests/user_models.py:not_a_model",
       f"the factory returned dict, not a model: it must return {returns}"),
      ("student.name", "tests/user_models.py:nnx_batchnorm",
       "the NNX module holds non-parameter state (BatchStat): kd_jax trains parameters only, one example at a time, "
       "where batch statistics do not exist (use LayerNorm or GroupNorm)"),
  ]


@pytest.mark.parametrize("field, name, allowed", bad_name_cases())
def test_bad_user_models_are_one_line_exit_2_and_write_nothing(tmp_path, field, name, allowed):
  workdir = tmp_path / "run"
  result = run_main(f"--workdir={workdir}", "--config=configs/custom_model.py:smoke", f"--config.{field}={name}")
  assert (result.returncode, result.stderr) == (2, f"error: config.{field}={name!r}: {allowed}\n")
  assert not workdir.exists()


@pytest.mark.parametrize("overrides, message", [
    (["--config.student.lora.rank=2", "--config.student.lora.target_modules=('head',)",
      "--config.student.lora.dropout=0.1"],
     "config.student.lora.dropout=0.1: must be 0 for an NNX or (init_fn, apply_fn) student: its adapters are merged "
     "into the weights before each call (dropout on x A B needs a Linen module)"),
    (["--config.student.lora.rank=2", "--config.student.lora.target_modules=('classifier',)"],
     "config.student.lora.target_modules=('classifier',): matches no linear layer of the student (a layer named N is "
     "targeted when N is a target or ends with '.' + a target)"),
    (["--config.student.lora.rank=64", "--config.student.lora.target_modules=('head',)"],
     "config.student.lora.rank=64: must be <= 10, the smallest width (min of inputs and outputs) of the targeted "
     "layers"),
    (["--config.student.trainable=('classifier',)"],
     "config.student.trainable=('classifier',): matches no parameter of the student (names are '/'-joined paths such "
     "as 'convs/0/bias')"),
])
def test_lora_and_freezing_that_do_not_fit_the_nnx_student_are_refused_before_anything_is_written(
    tmp_path, overrides, message):
  workdir = tmp_path / "run"
  result = run_main(f"--workdir={workdir}", "--config=configs/custom_model.py:smoke", *overrides)
  assert (result.returncode, result.stderr) == (2, f"error: {message}\n")
  assert not workdir.exists()


@pytest.mark.parametrize("student_name, first_bias", [(LINEN_MLP, "Dense_0/bias"), (MLP_PAIR, "layer0/bias")])
@pytest.mark.parametrize("overrides, message", [
    (["--config.student.lora.rank=64", "--config.student.lora.target_modules=('layer1', 'Dense_1')"],
     "config.student.lora.rank=64: must be <= 10, the smallest width (min of inputs and outputs) of the targeted "
     "layers"),
    (["--config.student.trainable=('classifier',)"],
     "config.student.trainable=('classifier',): matches no parameter of the student (names are '/'-joined paths such "
     "as '{first_bias}')"),
])
def test_lora_and_freezing_that_do_not_fit_a_linen_or_function_student_are_refused_before_anything_is_written(
    tmp_path, student_name, first_bias, overrides, message):
  """A Linen module's or a function pair's parameter shapes come from tracing its init on one example of the task
  (data.example_inputs, nothing computed), so the preflight check refuses what it refuses for an NNX student (the
  head of 10 classes is the narrowest targeted layer), before the workdir is claimed."""
  workdir = tmp_path / "run"
  result = run_main(f"--workdir={workdir}", "--config=configs/custom_model.py:smoke",
                    f"--config.student.name={student_name}", "--config.student.hidden_sizes=(16,)", *overrides)
  assert (result.returncode, result.stderr) == (2, f"error: {message.format(first_bias=first_bias)}\n")
  assert not workdir.exists()
