"""Teacher ensembles (config.ensemble, kd_jax/teachers/ensemble.py): the target against NumPy, the members' directories
and caches, and end-to-end runs in process (each member trained once, cached once, reused by a rerun and by a run that
shares its teacher directory)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import preflight, train
from kd_jax.errors import ConfigError
from kd_jax.models import mlp
from kd_jax.reporting import report
from kd_jax.sweeps import expansion
from kd_jax.teachers import ensemble, teacher
from kd_jax.training import losses
from tests.helpers import load_config, run_main


def np_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return np.exp(z) / np.exp(z).sum(-1, keepdims=True)


def np_ensemble_target(members, temperature):
  """p_ens^T = (1/M) sum_m softmax(z_m / T), members [..., M, C], float64."""
  return np_softmax(np.asarray(members, np.float64) / temperature).mean(-2)


def np_kl(p, q):
  return np.where(p > 0, p * (np.log(np.where(p > 0, p, 1.0)) - np.log(q)), 0.0).sum(-1)


def np_ensemble_divergence(student, members, temperature, kind):
  """T^2 D(p_ens^T, p_s^T) by hand: forward KL(p_ens || p_s), reverse KL(p_s || p_ens), or JS."""
  p_t, p_s = np_ensemble_target(members, temperature), np_softmax(np.asarray(student, np.float64) / temperature)
  if kind == "forward_kl":
    value = np_kl(p_t, p_s)
  elif kind == "reverse_kl":
    value = np_kl(p_s, p_t)
  else:
    m = (p_t + p_s) / 2
    value = 0.5 * np_kl(p_t, m) + 0.5 * np_kl(p_s, m)
  return temperature ** 2 * value


def np_ensemble_gradient(student, members, temperature, kind):
  """d/dz_s of T^2 D: forward KL T (p_s - p_ens); reverse KL T p_s (log p_s - log p_ens - KL(p_s || p_ens))."""
  p_t, p_s = np_ensemble_target(members, temperature), np_softmax(np.asarray(student, np.float64) / temperature)
  if kind == "forward_kl":
    return temperature * (p_s - p_t)
  reverse = np_kl(p_s, p_t)[..., None]
  return temperature * p_s * (np.log(p_s) - np.log(p_t) - reverse)


@pytest.mark.parametrize("scale", [3.0, 30.0])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "js"])
def test_ensemble_divergence_matches_numpy(scale, temperature, kind):
  """T^2 D(mean_m softmax(z_m / T), softmax(z_s / T)) with 3 members, examples and tokens, large logits too."""
  rng = np.random.default_rng(int(scale * 10 + temperature * 3))
  for shape in ((16, 7), (4, 5, 7)):  # examples [B, C]; tokens [B, L, C]
    student = rng.normal(size=shape) * scale
    members = rng.normal(size=shape[:-1] + (3, shape[-1])) * scale
    teacher_logits = losses.EnsembleLogits(jnp.asarray(members, jnp.float32))
    got = losses.divergence(jnp.asarray(student, jnp.float32), teacher_logits, temperature, kind)
    np.testing.assert_allclose(got, np_ensemble_divergence(student, members, temperature, kind), rtol=2e-4,
                               atol=2e-4 * scale)
    if kind != "js":
      gradient = jax.grad(lambda z: losses.divergence(z, teacher_logits, temperature, kind).sum())(
          jnp.asarray(student, jnp.float32))
      np.testing.assert_allclose(gradient, np_ensemble_gradient(student, members, temperature, kind), rtol=1e-3,
                                 atol=1e-4 * scale)


def test_ensemble_target_is_not_the_average_of_logits_and_one_member_is_the_teacher():
  """The average is of probabilities, inside the temperature: it differs from softmax of the averaged logits, and
  an ensemble of one is the single teacher."""
  rng = np.random.default_rng(1)
  student, members = rng.normal(size=(8, 5)) * 3, rng.normal(size=(8, 2, 5)) * 3
  ensemble_value = losses.divergence(jnp.asarray(student), losses.EnsembleLogits(jnp.asarray(members)), 2.0)
  averaged_logits = losses.divergence(jnp.asarray(student), jnp.asarray(members.mean(1)), 2.0)
  assert np.abs(np.asarray(ensemble_value) - np.asarray(averaged_logits)).max() > 1e-2
  np.testing.assert_allclose(losses.divergence(jnp.asarray(student), losses.EnsembleLogits(jnp.asarray(members[:, :1])),
                                               2.0),
                             losses.divergence(jnp.asarray(student), jnp.asarray(members[:, 0]), 2.0), rtol=1e-5,
                             atol=1e-6)


def test_ensemble_target_at_traced_temperatures():
  """A vectorized sweep vmaps the loss over T: one EnsembleLogits serves every temperature."""
  rng = np.random.default_rng(3)
  student, members = jnp.asarray(rng.normal(size=(8, 5)) * 3), jnp.asarray(rng.normal(size=(8, 3, 5)) * 3)
  temperatures = jnp.asarray([0.5, 1.0, 4.0])
  stacked = jax.vmap(lambda t: losses.divergence(student, losses.EnsembleLogits(members), t))(temperatures)
  for row, temperature in zip(stacked, (0.5, 1.0, 4.0)):
    np.testing.assert_allclose(row, np_ensemble_divergence(np.asarray(student), np.asarray(members), temperature,
                                                           "forward_kl"), rtol=2e-4, atol=1e-4)


def test_a_sweep_over_the_ensemble_size_shares_one_teacher_directory(tmp_path):
  """Points of ensemble.size 1 and 3 get one teacher directory: member 0 of the ensemble is the single teacher."""
  config = load_config()
  config.sweep.grid = (("ensemble.size", (1, 3)),)
  points = expansion.expand(config, str(tmp_path))
  assert len({point.config.teacher.workdir for point in points}) == 1
  single, triple = (ensemble.member_configs(point.config, str(tmp_path)) for point in points)
  assert single[0].teacher.workdir == triple[0].teacher.workdir == points[0].config.teacher.workdir


def test_averaged_model_is_the_log_of_the_mean_probabilities():
  """The ensemble as one classifier (what evaluation sees): log mean_m softmax(z_m) at T = 1, of members of other
  widths."""
  inputs = np.random.default_rng(2).normal(size=(6, 4)).astype(np.float32)
  models, params = [], []
  for seed, widths in ((0, (8,)), (1, (16, 16))):
    model = mlp.MLP(hidden_sizes=widths, num_classes=3)
    models.append(model)
    params.append(model.init(jax.random.PRNGKey(seed), inputs)["params"])
  averaged = ensemble.Averaged(ensemble.MemberLogits(tuple(models)))
  got = averaged.apply({"params": tuple(params)}, inputs)
  member_logits = np.stack([np.asarray(m.apply({"params": p}, inputs), np.float64) for m, p in zip(models, params)], 1)
  np.testing.assert_allclose(got, np.log(np_softmax(member_logits).mean(1)), rtol=1e-5, atol=1e-6)
  side_by_side = averaged.members.apply({"params": tuple(params)}, inputs)
  np.testing.assert_allclose(side_by_side.logits, member_logits, rtol=1e-6, atol=1e-6)


def test_member_configs_and_directories(tmp_path):
  config = load_config()
  config.ensemble.size = 3
  config.teacher.seed = 5
  members = ensemble.member_configs(config, str(tmp_path))
  home = os.path.join(str(tmp_path), "teacher")
  assert [member.teacher.seed for member in members] == [5, 6, 7]
  assert members[0].teacher.workdir == home  # config.teacher itself: the single-teacher run's teacher
  assert [os.path.dirname(member.teacher.workdir) for member in members[1:]] == [os.path.join(home, "members")] * 2
  assert members[1].teacher.workdir != members[2].teacher.workdir
  assert all(member.ensemble.size == 1 for member in members)
  assert ensemble.phases(config) == ("teacher_0", "teacher_1", "teacher_2")
  config.ensemble.size = 2
  config.ensemble.members = ((("hidden_sizes", (16,)),), (("seed", 9), ("optim.learning_rate", 0.01)))
  first, second = ensemble.member_configs(config, str(tmp_path))
  assert tuple(first.teacher.hidden_sizes) == (16,) and first.teacher.seed == 5
  assert second.teacher.seed == 9 and second.teacher.optim.learning_rate == 0.01
  assert first.teacher.workdir != home and second.teacher.workdir != home


@pytest.mark.parametrize("changes, message", [
    ({"ensemble.size": 0}, "config.ensemble.size=0: must be >= 1"),
    ({"ensemble.size": 2, "ensemble.members": ((("seed", 1),),)},
     "config.ensemble.members=((('seed', 1),),): must be () or hold one entry per member (ensemble.size=2), not 1"),
    ({"ensemble.size": 2, "ensemble.members": ((("seed", 1),), (("seed", 1),))},
     "config.ensemble.members=((('seed', 1),), (('seed', 1),)): members 0 and 1 are the same teacher"),
    ({"ensemble.size": 2, "ensemble.members": ((), (("name", "hf"),))},
     "config.ensemble.members[1]='name': a member may set these config.teacher fields: seed, init, hidden_sizes"),
    ({"ensemble.size": 2, "ensemble.members": ((), (("dropout_rate", 1.5),))},
     "config.ensemble.members[1].dropout_rate=1.5: must be in [0.0, 1.0)"),
    ({"ensemble.size": 2, "ensemble.members": ((), (("seed", "one"),))},
     "config.ensemble.members[1].seed='one': must be of type int"),
    ({"ensemble.size": 3, "distill.divergence": "mse"},
     "config.distill.divergence='mse': ensemble.size=3 distills the members' averaged probabilities; 'mse' compares "
     "logits"),
])
def test_invalid_ensembles_are_refused_with_one_line(changes, message):
  config = load_config()
  for path, value in changes.items():
    section, key = path.split(".")
    config[section][key] = value
  with pytest.raises(ConfigError) as error:
    preflight.check(config)
  assert str(error.value).startswith(message), str(error.value)


def test_seq2seq_ensembles_are_refused():
  config = load_config("configs/esnli.py")
  config.ensemble.size = 2
  with pytest.raises(ConfigError, match=r"^config.ensemble.size=2: needs a classification data set; "
                                        r"data.name='esnli' is seq2seq"):
    preflight.check(config)


def test_a_member_of_another_label_space_is_refused(tmp_path):
  """A member restored from a teacher directory trained on another data set (its teacher.json says which)."""
  other = tmp_path / "other_teacher"
  (other / "checkpoints").mkdir(parents=True)
  other_config = load_config()
  other_config.data.name = "synthetic_clusters"
  other_config.data.synthetic.num_classes = 5
  (other / "teacher.json").write_text(json.dumps(teacher.identity(other_config)))
  config = load_config()
  config.ensemble.size = 2
  config.ensemble.members = ((), (("init", str(other)),))
  with pytest.raises(ConfigError, match=r"^config.ensemble.members\[1\].init='.*other_teacher': a teacher of "
                                        r"data.name='synthetic_clusters', whose classes are not this run's "
                                        r"\(data.name='digits'\); an ensemble averages probabilities over one label"):
    preflight.check(config)
  (other / "teacher.json").write_text(json.dumps(teacher.identity(load_config())))  # digits: the same label space
  preflight.check(config)


def test_main_refuses_a_bad_ensemble_from_the_command_line(tmp_path):
  """The nested tuple of ensemble.members parses as a command-line override; a bad one exits 2 with one line and
  writes nothing."""
  workdir = tmp_path / "run"
  result = run_main(f"--workdir={workdir}", "--config.ensemble.size=2",
                    "--config.ensemble.members=((('seed', 1),), (('seed', 1),))")
  assert result.returncode == 2, result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith(
      "error: config.ensemble.members=((('seed', 1),), (('seed', 1),)): members 0 and 1 are the same teacher")
  assert not workdir.exists()


def tiny_config(teacher_dir: str, size: int):
  """The smoke config, shrunk to seconds: small teachers, 6 student epochs, no hard-label student."""
  config = load_config()
  config.baseline = False
  config.teacher.hidden_sizes = (64,)
  config.teacher.num_epochs = 20
  config.train.num_epochs = 6
  config.teacher.workdir = teacher_dir
  config.ensemble.size = size
  return config


@pytest.fixture(scope="module")
def single_then_ensemble(tmp_path_factory):
  """A single-teacher run, then an ensemble of 2 sharing its teacher directory (as the points of a sweep over
  ensemble.size do)."""
  root = tmp_path_factory.mktemp("ensemble")
  teacher_dir = str(root / "teacher")
  single = train.train_and_evaluate(tiny_config(teacher_dir, 1), str(root / "single"))
  pair = train.train_and_evaluate(tiny_config(teacher_dir, 2), str(root / "pair"))
  return root, teacher_dir, single, pair


@pytest.mark.slow
def test_each_member_is_trained_and_cached_once(single_then_ensemble):
  root, teacher_dir, single, pair = single_then_ensemble
  # Member 0 is the single run's teacher: reused with its cache; member 1 is trained and cached in its own directory.
  assert "teacher" in single["train"]["phases"] and single["teacher_cache"]["built"]
  assert set(pair["train"]["phases"]) == {"teacher_1", "student"}
  first, second = pair["teacher_cache"]["members"]
  assert not first["built"] and first["path"] == single["teacher_cache"]["path"]
  assert second["built"] and second["path"].startswith(os.path.join(teacher_dir, "members"))
  assert pair["teacher_cache"]["bytes_per_example"] == first["bytes_per_example"] + second["bytes_per_example"]
  assert os.path.isdir(os.path.join(os.path.dirname(os.path.dirname(second["path"])), "params"))
  # The ensemble is named, its members' metrics recorded against it; the ensemble is what the students compare to.
  described = pair["teacher_ensemble"]
  assert described["size"] == 2 and described["label"] == "teacher (ensemble of 2)"
  assert [member["seed"] for member in described["members"]] == [0, 1]
  assert described["members"][0]["metrics"]["accuracy"] == single["metrics"]["teacher"]["accuracy"]
  assert all(member["metrics"]["kl_to_teacher"] > 0 for member in described["members"])
  assert pair["efficiency"]["teacher"]["params"] == 2 * single["efficiency"]["teacher"]["params"]
  assert pair["metrics"]["student"]["accuracy"] > 0.6 and pair["metrics"]["student"]["agreement"] > 0.6
  table = report.metrics_table(pair)
  assert "teacher (ensemble of 2)" in table and "  member 1 (seed 1)" in table
  with open(root / "pair" / "history.jsonl") as stream:
    assert {json.loads(line)["phase"] for line in stream} == {"teacher_1", "student"}


def test_joined_target_is_the_members_caches_side_by_side(single_then_ensemble):
  _, _, _, pair = single_then_ensemble
  first, second = (np.load(os.path.join(member["path"], "logits.npy")) for member in pair["teacher_cache"]["members"])
  assert first.shape == second.shape and np.abs(first - second).max() > 0  # two different teachers


@pytest.mark.slow
def test_rerun_reuses_every_member_and_cache(single_then_ensemble):
  root, teacher_dir, _, pair = single_then_ensemble
  again = train.train_and_evaluate(tiny_config(teacher_dir, 2), str(root / "pair"))
  assert set(again["train"]["phases"]) == {"student"}
  assert not any(member["built"] for member in again["teacher_cache"]["members"])
  assert again["train"]["resumed_from_step"] == pair["train"]["steps"]
  for model in ("teacher", "student"):
    assert again["metrics"][model] == pair["metrics"][model]


@pytest.mark.slow
def test_online_ensemble_matches_cached_ensemble(single_then_ensemble, tmp_path):
  """The members run side by side in the step give the student their stacked caches give."""
  _, teacher_dir, _, pair = single_then_ensemble
  config = tiny_config(teacher_dir, 2)
  config.distill.teacher_mode = "online"
  online = train.train_and_evaluate(config, str(tmp_path))
  assert "teacher_cache" not in online and set(online["train"]["phases"]) == {"student"}
  for name in ("accuracy", "nll", "agreement", "kl_to_teacher"):
    np.testing.assert_allclose(online["metrics"]["student"][name], pair["metrics"]["student"][name], atol=1e-4)
