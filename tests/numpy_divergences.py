"""The divergences of kd_jax.training.losses written again in float64 NumPy, from their papers' formulas: the
independent reference of the loss tests (dense and top-k)."""

import numpy as np


def log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def kl(p, q):
  """KL(p || q) = sum_c p_c log(p_c / q_c), with 0 log 0 = 0."""
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0).sum(-1)


def akl_head_weight(p_t, p_s, mu):
  """Adaptive KL's weight of forward KL: g_head / (g_head + g_tail), the head being the teacher's classes taken in
  order of decreasing probability until their mass reaches mu (Wu et al. 2024); 1/2 when p_t = p_s."""
  weights = np.empty(p_t.shape[:-1])
  for index in np.ndindex(*p_t.shape[:-1]):
    teacher, student = p_t[index], p_s[index]
    head, mass = [], 0.0
    for c in sorted(range(len(teacher)), key=lambda c: -teacher[c]):
      if mass >= mu:
        break
      head.append(c)
      mass += teacher[c]
    gaps = np.abs(teacher - student)
    total = gaps.sum()
    weights[index] = gaps[head].sum() / total if total > 0 else 0.5
  return weights


def divergence_of_probs(p_s, p_t, kind, *, beta=0.5, skew=0.1, akl_mu=0.5, akl_head_weight_of=None):
  """D(p_t, p_s) for every kind of losses.divergence but mse, on probabilities [..., C].

  akl_head_weight_of: probabilities (p_t, p_s) to take akl's weight from (default: these), so that a finite
  difference can hold the weight fixed, as the loss does (stop_gradient).
  """
  if kind == "forward_kl":
    return kl(p_t, p_s)
  if kind == "reverse_kl":
    return kl(p_s, p_t)
  if kind == "js":
    m = (p_t + p_s) / 2
    return (kl(p_t, m) + kl(p_s, m)) / 2
  if kind == "generalized_js":
    if beta == 0:
      return kl(p_t, p_s)
    if beta == 1:
      return kl(p_s, p_t)
    m = beta * p_t + (1 - beta) * p_s
    return beta * kl(p_t, m) + (1 - beta) * kl(p_s, m)
  if kind == "skew_forward_kl":
    return kl(p_t, skew * p_t + (1 - skew) * p_s)
  if kind == "skew_reverse_kl":
    return kl(p_s, skew * p_s + (1 - skew) * p_t)
  if kind == "tvd":
    return 0.5 * np.abs(p_t - p_s).sum(-1)
  if kind == "akl":
    weight = akl_head_weight(*(akl_head_weight_of or (p_t, p_s)), akl_mu)
    return weight * kl(p_t, p_s) + (1 - weight) * kl(p_s, p_t)
  raise ValueError(kind)


def divergence(student, teacher, temperature, kind, t2_scaling=True, **params):
  """losses.divergence in float64: s * D(softmax(z_t / T), softmax(z_s / T)), s = T^2 if t2_scaling."""
  student, teacher = np.asarray(student, np.float64) / temperature, np.asarray(teacher, np.float64) / temperature
  if kind == "mse":
    value = ((student - teacher) ** 2).mean(-1)
  else:
    value = divergence_of_probs(np.exp(log_softmax(student)), np.exp(log_softmax(teacher)), kind, **params)
  return value * (temperature ** 2 if t2_scaling else 1.0)
