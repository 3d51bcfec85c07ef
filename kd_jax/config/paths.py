"""Dotted config paths ('distill.temperature'): get and set a field, flatten a config, and the fields two differ in.

Work on ConfigDicts and on their JSON form (nested dicts, as in config.json) alike.
"""

from typing import Iterable


def get(config, path: str):
  """The value of field `path` of `config` (a ConfigDict or a nested dict)."""
  for part in path.split("."):
    config = config[part]
  return config


def set_value(config, path: str, value) -> None:
  """Sets field `path` of `config`; lists become tuples (the form config files use)."""
  *sections, name = path.split(".")
  for section in sections:
    config = config[section]
  value = tuple(value) if isinstance(value, list) else value
  try:
    config[name] = value
  except TypeError:
    # A field the schema declares as `object` (distill.features: 'uniform' or a tuple of pairs) takes the type of its
    # value once a config is copied with its references resolved (a sweep's points); values reaching here were
    # checked against the schema's declared type, so the field takes the new value's type.
    with config.unlocked():
      del config[name]
      config[name] = value


def flatten(tree: dict, prefix: str = "") -> dict:
  """{'a': {'b': 1}} -> {'a.b': 1}: every field of a nested dict by its dotted path."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def differing(a: dict, b: dict, *, ignore: Iterable[str] = (), missing_differs: bool = False) -> list[str]:
  """Sorted dotted paths of the fields in which two nested dicts differ, but the `ignore`d ones.

  By default a field only one holds is not a difference: between two configs it comes from a schema change (a field
  added with its default, or removed), not from another experiment. With `missing_differs` it is (cache metadata).
  """
  flat_a, flat_b, ignored = flatten(a), flatten(b), set(ignore)
  paths = set(flat_a) | set(flat_b) if missing_differs else set(flat_a) & set(flat_b)
  missing = object()
  return sorted(path for path in paths
                if path not in ignored and flat_a.get(path, missing) != flat_b.get(path, missing))


def without(tree: dict, paths: Iterable[str]) -> dict:
  """The flattened nested dict without the fields `paths` (what a config is but for those fields)."""
  removed = set(paths)
  return {path: value for path, value in flatten(tree).items() if path not in removed}
