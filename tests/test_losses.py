"""Losses against an independent NumPy computation, and the properties the formulas promise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from kd_jax.config import schema
from kd_jax.parallel import sharding
from kd_jax.training import losses
from kd_jax.training.objective import Objective
from tests import numpy_divergences


np_log_softmax = numpy_divergences.log_softmax
np_divergence = numpy_divergences.divergence


def np_cross_entropy(logits, labels, eps):
  num_classes = logits.shape[-1]
  targets = (1 - eps) * np.eye(num_classes)[np.maximum(labels, 0)] + eps / num_classes
  return np.where(labels >= 0, -(targets * np_log_softmax(logits)).sum(-1), 0.0)


@pytest.fixture
def random_logits():
  rng = np.random.default_rng(0)
  return rng.normal(size=(16, 7)) * 3, rng.normal(size=(16, 7)) * 3, rng.integers(-1, 7, size=16)


@pytest.mark.parametrize("kind", losses.DIVERGENCES)
@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("t2_scaling", [True, False])
def test_divergence_matches_numpy(random_logits, kind, temperature, t2_scaling):
  student, teacher, _ = random_logits
  got = losses.divergence(jnp.asarray(student, jnp.float32), jnp.asarray(teacher, jnp.float32), temperature, kind,
                          t2_scaling)
  np.testing.assert_allclose(got, np_divergence(student, teacher, temperature, kind, t2_scaling), rtol=1e-4,
                             atol=1e-5)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_cross_entropy_matches_numpy_and_skips_unlabeled(random_logits, label_smoothing):
  student, _, labels = random_logits
  got = losses.cross_entropy(jnp.asarray(student, jnp.float32), jnp.asarray(labels), label_smoothing)
  np.testing.assert_allclose(got, np_cross_entropy(student, labels, label_smoothing), rtol=1e-5, atol=1e-6)
  assert np.all(np.asarray(got)[labels < 0] == 0)


@pytest.mark.parametrize("kind", losses.DIVERGENCES)
def test_divergence_is_zero_for_equal_logits(random_logits, kind):
  student, _, _ = random_logits
  logits = jnp.asarray(student, jnp.float32)
  np.testing.assert_allclose(losses.divergence(logits, logits, 3.0, kind), 0.0, atol=1e-6)


def test_hinton_loss_matches_numpy_with_transfer_set(random_logits):
  """(1-a) mean_{labeled} CE + a T^2 mean_{all} KL: unlabeled rows enter the soft term only."""
  student, teacher, labels = random_logits
  alpha, temperature, eps = 0.3, 2.0, 0.1
  terms = losses.distillation_loss(
      jnp.asarray(student, jnp.float32), jnp.asarray(teacher, jnp.float32), jnp.asarray(labels),
      jnp.ones(len(labels)), weights=losses.loss_weights(alpha, None, None), temperature=temperature,
      label_smoothing=eps)
  labeled = labels >= 0
  hard = np_cross_entropy(student, labels, eps)[labeled].mean()
  soft = np_divergence(student, teacher, temperature, "forward_kl").mean()
  np.testing.assert_allclose(terms.loss, (1 - alpha) * hard + alpha * soft, rtol=1e-5)
  np.testing.assert_allclose(terms.hard, hard, rtol=1e-5)


def test_alpha_zero_is_plain_cross_entropy(random_logits):
  student, teacher, labels = random_logits
  labels = np.abs(labels)
  terms = losses.distillation_loss(
      jnp.asarray(student, jnp.float32), jnp.asarray(teacher, jnp.float32), jnp.asarray(labels),
      jnp.ones(len(labels)), weights=losses.loss_weights(0.0, None, None), temperature=4.0)
  np.testing.assert_allclose(terms.loss, np_cross_entropy(student, labels, 0.0).mean(), rtol=1e-5)


def test_explicit_form_weights():
  assert losses.loss_weights(None, 1.0, 0.3) == losses.LossWeights(hard=1.0, soft=0.3)
  assert losses.loss_weights(0.25, None, None) == losses.LossWeights(hard=0.75, soft=0.25)
  with pytest.raises(AssertionError):
    losses.loss_weights(0.5, 1.0, 0.3)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_gradient_of_t2_kl_is_t_times_probability_difference(random_logits, temperature):
  """d/dz_s [T^2 KL(p_t^T || p_s^T)] = T (p_s^T - p_t^T)   (Hinton et al. 2015, eq. 2)."""
  student, teacher, _ = random_logits
  student, teacher = jnp.asarray(student, jnp.float32), jnp.asarray(teacher, jnp.float32)
  grad = jax.grad(lambda z: losses.divergence(z, teacher, temperature).sum())(student)
  expected = temperature * (jax.nn.softmax(student / temperature) - jax.nn.softmax(teacher / temperature))
  np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)


def test_high_temperature_approaches_logit_matching(random_logits):
  """With zero-mean logits, T^2 KL -> (1/2C) sum_c (z_s - z_t)^2 = mse / 2 as T grows (Hinton et al. 2015, 2.1)."""
  student, teacher, _ = random_logits
  student = student - student.mean(-1, keepdims=True)
  teacher = teacher - teacher.mean(-1, keepdims=True)
  mse = np.asarray(losses.divergence(jnp.asarray(student), jnp.asarray(teacher), 1.0, "mse"))
  kl_high_t = np.asarray(losses.divergence(jnp.asarray(student, jnp.float32), jnp.asarray(teacher, jnp.float32),
                                           200.0))
  np.testing.assert_allclose(kl_high_t, mse / 2, rtol=2e-2)
  kl_low_t = np.asarray(losses.divergence(jnp.asarray(student), jnp.asarray(teacher), 1.0))
  assert np.abs(kl_low_t - mse / 2).mean() > 10 * np.abs(kl_high_t - mse / 2).mean()


@pytest.mark.multidevice
def test_token_level_loss_does_not_depend_on_how_the_batch_is_split():
  """Masked token loss normalized by the real tokens of the global batch: 8 shards == 1 shard == NumPy."""
  rng = np.random.default_rng(1)
  batch, length, vocab = 16, 5, 11
  student = rng.normal(size=(batch, length, vocab)).astype(np.float32)
  teacher = rng.normal(size=(batch, length, vocab)).astype(np.float32)
  labels = rng.integers(0, vocab, size=(batch, length)).astype(np.int32)
  # Very uneven padding: the first rows are almost all padding, so per-device means would differ.
  real_lengths = np.concatenate([np.ones(8, int), np.full(8, length)])
  token_weights = (np.arange(length)[None, :] < real_lengths[:, None]).astype(np.float32)

  def loss(student, teacher, labels, token_weights, axis_name=None):
    return losses.distillation_loss(student, teacher, labels, token_weights, weights=losses.LossWeights(1.0, 0.7),
                                    temperature=2.0, axis_name=axis_name).loss

  mesh = sharding.make_mesh()
  assert mesh.size == 8
  sharded = jax.jit(jax.shard_map(
      lambda *args: jax.lax.pmean(loss(*args, axis_name=sharding.DATA_AXIS), sharding.DATA_AXIS),
      mesh=mesh, in_specs=P(sharding.DATA_AXIS), out_specs=P()))(student, teacher, labels, token_weights)
  single = loss(student, teacher, labels, token_weights)
  real = token_weights > 0
  expected = (np_cross_entropy(student, labels, 0.0)[real].mean()
              + 0.7 * np_divergence(student, teacher, 2.0, "forward_kl")[real].mean())
  np.testing.assert_allclose(single, expected, rtol=1e-5)
  np.testing.assert_allclose(sharded, expected, rtol=1e-5)


def test_global_mean_is_zero_without_weight():
  assert float(losses.global_mean(jnp.ones(4), jnp.zeros(4))) == 0.0


# The divergence family: beta (generalized_js), skew (the skew KLs) and akl_mu (akl) at values other than their
# defaults, on logits of ordinary and of large scale (saturated softmaxes), at several temperatures.
PARAMS = {"generalized_js": [{"beta": 0.0}, {"beta": 0.2}, {"beta": 0.5}, {"beta": 0.9}, {"beta": 1.0}],
          "skew_forward_kl": [{"skew": 0.0}, {"skew": 0.1}, {"skew": 0.7}],
          "skew_reverse_kl": [{"skew": 0.0}, {"skew": 0.1}, {"skew": 0.7}],
          "tvd": [{}], "akl": [{"akl_mu": 0.3}, {"akl_mu": 0.5}, {"akl_mu": 0.9}]}
FAMILY = [(kind, params) for kind, values in PARAMS.items() for params in values]


def family_logits(scale):
  rng = np.random.default_rng(5)
  return rng.normal(size=(12, 9)) * scale, rng.normal(size=(12, 9)) * scale


def loss_params(params):
  return losses.DivergenceParams(**{"beta": 0.5, "skew": 0.1, "akl_mu": 0.5, **params})


@pytest.mark.parametrize("kind,params", FAMILY)
@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
@pytest.mark.parametrize("scale", [3.0, 30.0])
def test_divergence_family_matches_numpy(kind, params, temperature, scale):
  student, teacher = family_logits(scale)
  got = losses.divergence(jnp.asarray(student, jnp.float32), jnp.asarray(teacher, jnp.float32), temperature, kind,
                          params=loss_params(params))
  expected = np_divergence(student, teacher, temperature, kind, **params)
  assert np.all(np.isfinite(np.asarray(got)))
  np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-5 * temperature**2)


@pytest.mark.parametrize("kind,params", FAMILY)
@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
@pytest.mark.parametrize("scale", [3.0, 30.0])
def test_divergence_family_gradient_matches_numpy_finite_differences(kind, params, temperature, scale):
  """d/dz_s against central differences of the float64 reference (akl's weight held at the point, as the loss's
  stop_gradient holds it)."""
  student, teacher = family_logits(scale)
  student, teacher = student[:4], teacher[:4]
  gradient = jax.grad(lambda z: losses.divergence(z, jnp.asarray(teacher, jnp.float32), temperature, kind,
                                                  params=loss_params(params)).sum())(jnp.asarray(student, jnp.float32))
  assert np.all(np.isfinite(np.asarray(gradient)))
  weight_of = None
  if kind == "akl":
    probs = lambda z: np.exp(numpy_divergences.log_softmax(z / temperature))
    weight_of = (probs(teacher), probs(student))
  value = lambda z: numpy_divergences.divergence(z, teacher, temperature, kind, **params, **(
      {"akl_head_weight_of": weight_of} if weight_of else {})).sum()
  step = 1e-6 * scale
  expected = np.zeros_like(student)
  for index in np.ndindex(*student.shape):
    shift = np.zeros_like(student)
    shift[index] = step
    expected[index] = (value(student + shift) - value(student - shift)) / (2 * step)
  np.testing.assert_allclose(gradient, expected, rtol=2e-3, atol=2e-4 * max(temperature, 1.0))


def test_divergence_family_special_cases():
  """generalized_js at beta = 0.5 is js, at 0 and 1 forward and reverse KL (TRL's convention); the skew KLs at
  lambda = 0 are forward and reverse KL and at lambda = 1 vanish; tvd is in [0, 1]; akl is between its two KLs."""
  student, teacher = (jnp.asarray(z, jnp.float32) for z in family_logits(3.0))
  div = lambda kind, **params: np.asarray(losses.divergence(student, teacher, 2.0, kind, params=loss_params(params)))
  np.testing.assert_allclose(div("generalized_js", beta=0.5), div("js"), rtol=1e-6)
  np.testing.assert_allclose(div("generalized_js", beta=0.0), div("forward_kl"), rtol=1e-6)
  np.testing.assert_allclose(div("generalized_js", beta=1.0), div("reverse_kl"), rtol=1e-6)
  np.testing.assert_allclose(div("skew_forward_kl", skew=0.0), div("forward_kl"), rtol=1e-6)
  np.testing.assert_allclose(div("skew_reverse_kl", skew=0.0), div("reverse_kl"), rtol=1e-6)
  np.testing.assert_allclose(div("skew_forward_kl", skew=1.0), 0.0, atol=1e-6)
  np.testing.assert_allclose(div("skew_reverse_kl", skew=1.0), 0.0, atol=1e-6)
  # JSD_beta vanishes at both ends; JSD_beta / beta tends to forward KL (the limit TRL's endpoint takes).
  np.testing.assert_allclose(div("generalized_js", beta=1e-3) / 1e-3, div("forward_kl"), rtol=2e-2)
  np.testing.assert_allclose(div("generalized_js", beta=1 - 1e-3) / 1e-3, div("reverse_kl"), rtol=2e-2)
  tvd = div("tvd") / 4.0  # T^2 = 4
  assert np.all((tvd >= 0) & (tvd <= 1))
  low, high = np.minimum(div("forward_kl"), div("reverse_kl")), np.maximum(div("forward_kl"), div("reverse_kl"))
  assert np.all((div("akl") >= low - 1e-6) & (div("akl") <= high + 1e-6))


def test_generalized_js_beta_can_be_traced():
  """beta reaches the compiled step as an array (a vectorized sweep stacks it): one vmapped call over several betas
  equals the calls one by one, the endpoints included."""
  student, teacher = (jnp.asarray(z, jnp.float32) for z in family_logits(3.0))
  betas = jnp.asarray([0.0, 0.3, 1.0], jnp.float32)
  stacked = jax.jit(jax.vmap(lambda beta: losses.divergence(
      student, teacher, 2.0, "generalized_js", params=losses.DivergenceParams(beta=beta))))(betas)
  for row, beta in zip(stacked, [0.0, 0.3, 1.0]):
    np.testing.assert_allclose(row, np_divergence(np.asarray(student), np.asarray(teacher), 2.0, "generalized_js",
                                                  beta=beta), rtol=2e-4, atol=1e-5)
  # With beta traced, the endpoints' gradients w.r.t. the student are forward and reverse KL's (the JSD branch that
  # jnp.where leaves out holds log(0) = -inf in its mixture and must not leak NaN into them).
  gradient = jax.jit(jax.grad(lambda z, beta, kind: losses.divergence(
      z, teacher, 2.0, kind, params=losses.DivergenceParams(beta=beta)).sum()), static_argnums=2)
  for beta, kind in ((0.0, "forward_kl"), (1.0, "reverse_kl")):
    np.testing.assert_allclose(gradient(student, jnp.float32(beta), "generalized_js"),
                               gradient(student, jnp.float32(beta), kind), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind,expected", [
    ("constant", [0.0, 0.0, 0.0, 0.0, 0.0]),
    ("linear", [0.0, 0.25, 0.5, 0.75, 1.0]),
    ("cosine", [0.0, (1 - np.cos(np.pi / 4)) / 2, 0.5, (1 - np.cos(3 * np.pi / 4)) / 2, 1.0]),
])
def test_schedule_fraction(kind, expected):
  np.testing.assert_allclose(losses.schedule_fraction(kind, np.arange(5), 5.0), expected, atol=1e-7)


def test_scheduled_loss_moves_temperature_and_weights_step_by_step():
  """A linear schedule from T = 4, alpha = 0.9 to T = 1, alpha = 0.1 over 5 steps: at_step(s) (inside the compiled
  step) is the loss with the values of step s, and schedule_table (the history) holds the same values."""
  config = schema.default_config()
  config.distill.update(temperature=4.0, alpha=0.9, schedule="linear", temperature_end=1.0, alpha_end=0.1)
  objective = Objective.from_config(config, num_steps=5)
  table = objective.schedule_table()
  np.testing.assert_allclose(table["temperature"], [4.0, 3.25, 2.5, 1.75, 1.0])
  np.testing.assert_allclose(table["soft_weight"], [0.9, 0.7, 0.5, 0.3, 0.1], rtol=1e-6)
  np.testing.assert_allclose(table["hard_weight"], [0.1, 0.3, 0.5, 0.7, 0.9], rtol=1e-6)
  student, teacher = (jnp.asarray(z, jnp.float32) for z in family_logits(3.0))
  labels, weights = jnp.zeros(12, jnp.int32), jnp.ones(12)
  at_step = jax.jit(lambda loss, step: loss.at_step(step)(student, teacher, labels, weights).loss)
  for step in range(5):
    expected = losses.distillation_loss(student, teacher, labels, weights, temperature=table["temperature"][step],
                                        weights=losses.LossWeights(table["hard_weight"][step],
                                                                   table["soft_weight"][step])).loss
    np.testing.assert_allclose(at_step(objective.logit_loss, jnp.int32(step)), expected, rtol=1e-5)
  # The hard-label baseline's loss does not move, and a constant schedule logs nothing.
  assert Objective.from_config(config, distills=False, num_steps=5).schedule_table() == {}


def test_a_bfloat16_students_loss_is_computed_in_float32():
  """Logits held in bfloat16 (a bf16 student): both terms are computed in float32 from them, so the loss equals the
  float64 loss of the same (bf16-rounded) logits to float32 precision, not to bfloat16's ~4e-3; and the result is
  float32."""
  rng = np.random.default_rng(7)
  student = jnp.asarray(rng.normal(size=(64, 10)) * 4, jnp.bfloat16)
  teacher = jnp.asarray(rng.normal(size=(64, 10)) * 4, jnp.bfloat16)
  labels = rng.integers(-1, 10, size=64)
  terms = losses.distillation_loss(student, teacher, jnp.asarray(labels), jnp.ones(64),
                                   weights=losses.LossWeights(0.5, 0.5), temperature=2.0, label_smoothing=0.1)
  assert terms.loss.dtype == jnp.float32 and terms.hard.dtype == jnp.float32
  student64, teacher64 = np.asarray(student, np.float64), np.asarray(teacher, np.float64)
  hard = np_cross_entropy(student64, labels, 0.1)[labels >= 0].mean()
  soft = np_divergence(student64, teacher64, 2.0, "forward_kl").mean()
  np.testing.assert_allclose(terms.hard, hard, rtol=2e-6)
  np.testing.assert_allclose(terms.loss, 0.5 * hard + 0.5 * soft, rtol=2e-6)
