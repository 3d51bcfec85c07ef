"""Losses against an independent NumPy computation, and the properties the formulas promise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from kd_jax import losses, sharding


def np_log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_kl(log_p, log_q):
  return (np.exp(log_p) * (log_p - log_q)).sum(-1)


def np_divergence(student, teacher, temperature, kind, t2_scaling=True):
  s, t = student / temperature, teacher / temperature
  if kind == "mse":
    value = ((s - t) ** 2).mean(-1)
  else:
    log_ps, log_pt = np_log_softmax(s), np_log_softmax(t)
    if kind == "forward_kl":
      value = np_kl(log_pt, log_ps)
    elif kind == "reverse_kl":
      value = np_kl(log_ps, log_pt)
    else:
      log_m = np.log((np.exp(log_ps) + np.exp(log_pt)) / 2)
      value = 0.5 * np_kl(log_pt, log_m) + 0.5 * np_kl(log_ps, log_m)
  return value * (temperature ** 2 if t2_scaling else 1.0)


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
