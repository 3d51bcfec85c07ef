"""kd_jax's dropout masks are JAX's own, bit for bit (kd_jax/models/dropout.py computes them without the rolled
Threefry loop of JAX's CPU lowering): models train exactly as they did with flax's nn.Dropout."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax.models import dropout


@pytest.mark.parametrize("shape,p", [((7,), 0.9), ((3, 5), 0.5), ((2, 4, 33, 17), 0.1)])
def test_bernoulli_equals_jax_random_bernoulli(shape, p):
  draw = jax.jit(lambda key: dropout.bernoulli(key, p, shape))
  for seed in (0, 1, 2**31 + 5):
    key = jax.random.PRNGKey(seed)
    expected = np.asarray(jax.random.bernoulli(key, p, shape))
    np.testing.assert_array_equal(np.asarray(dropout.bernoulli(key, p, shape)), expected)
    np.testing.assert_array_equal(np.asarray(draw(key)), expected)
  typed = jax.random.key(11)
  np.testing.assert_array_equal(np.asarray(dropout.bernoulli(typed, p, shape)),
                                np.asarray(jax.random.bernoulli(typed, p, shape)))


def test_bernoulli_per_example_keys_under_vmap_and_the_fused_kernel():
  """The train step draws masks per example (vmap over keys): the same masks as JAX's, and no while loop left in the
  compiled program (the rolled Threefry loop is what the module avoids)."""
  keys = jax.random.split(jax.random.PRNGKey(3), 5)
  ours = jax.jit(jax.vmap(lambda key: dropout.bernoulli(key, 0.9, (4, 16, 16))))
  np.testing.assert_array_equal(np.asarray(ours(keys)),
                                np.asarray(jax.vmap(lambda key: jax.random.bernoulli(key, 0.9, (4, 16, 16)))(keys)))
  assert "while" not in ours.lower(keys).compile().as_text()


def test_other_key_implementations_fall_back_to_jax():
  key = jax.random.key(4, impl="rbg")
  np.testing.assert_array_equal(np.asarray(dropout.bernoulli(key, 0.7, (6, 5))),
                                np.asarray(jax.random.bernoulli(key, 0.7, (6, 5))))


class _TwoDropouts(nn.Module):
  layer: type

  @nn.compact
  def __call__(self, x, train: bool):
    hidden = self.layer(0.1)(nn.Dense(8)(x), deterministic=not train)
    return self.layer(0.5, broadcast_dims=(1,), deterministic=not train)(hidden)


def test_dropout_module_equals_flax_dropout():
  """Same module names and rng stream as nn.Dropout, so the same keys and masks (broadcast_dims included)."""
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 6, 3))
  ours, theirs = _TwoDropouts(dropout.Dropout), _TwoDropouts(nn.Dropout)
  params = theirs.init(jax.random.PRNGKey(1), x, train=False)
  rngs = {"dropout": jax.random.PRNGKey(2)}
  expected = theirs.apply(params, x, train=True, rngs=rngs)
  np.testing.assert_array_equal(np.asarray(ours.apply(params, x, train=True, rngs=rngs)), np.asarray(expected))
  assert float(jnp.mean(expected == 0)) > 0.3  # the masks did drop
  np.testing.assert_array_equal(np.asarray(ours.apply(params, x, train=False)),
                                np.asarray(theirs.apply(params, x, train=False)))
