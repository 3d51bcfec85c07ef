"""Checks a config against the schema (kd_jax/config/schema.py): every field known and present, of its declared type,
and within what its declaration allows. One `ConfigError` names the field, the value and what is allowed.

The rules between fields are kd_jax/config/rules.py; kd_jax/preflight.py runs both and the environment checks.
"""

import ml_collections

from kd_jax.config import paths, schema
from kd_jax.errors import ConfigError, require


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for the first field of `config` the schema does not allow."""
  check_fields(config)
  check_values(config)
  check_members(config)
  check_sweep(config)


def check_fields(config: ml_collections.ConfigDict, section: schema.Section = schema.SCHEMA, prefix: str = "") -> None:
  """Every field of `config` exists in `section` with a compatible type, and none is missing."""
  for key in config.keys():
    path, value, declared = prefix + key, config[key], section.fields.get(key)
    if declared is None:
      known = ", ".join(sorted(section.fields))
      where = f" of config.{prefix[:-1]}" if prefix else ""
      raise ConfigError(path, value, f"unknown field; known fields{where}: {known}")
    if isinstance(declared, schema.Section):
      require(isinstance(value, ml_collections.ConfigDict), path, value, "must be a section (ConfigDict)")
      check_fields(value, declared, path + ".")
    else:
      check_type(path, value, declared)
  for key in section.fields:
    require(key in config, prefix + key, None, "missing field (see kd_jax/config/schema.py)")


def check_type(path: str, value, field: schema.Field) -> None:
  """`value` fits the type of `field` (named `path`): ints pass for floats, lists for tuples."""
  declared = field.value_type
  if value is None:
    require(field.default is None or field.nullable, path, value, f"must be a {declared.__name__}, not None")
    return
  if declared is object or isinstance(value, declared):
    return
  if declared is float and isinstance(value, int) and not isinstance(value, bool):
    return
  require(declared is tuple and isinstance(value, (tuple, list)), path, value,
          f"must be of type {declared.__name__}")


def check_values(config: ml_collections.ConfigDict, section: str = "") -> None:
  """Every field of `config` (of `section`, e.g. 'teacher', if given) within what its declaration allows."""
  for path, field in schema.FIELDS.items():
    if not section or path.startswith(section + "."):
      check_value(path, paths.get(config, path), field)


def check_value(path: str, value, field: schema.Field) -> None:
  """`value` of field `path` within what `field` allows: its choices, interval, sign and own check. None (where the
  type allows it) passes."""
  if value is None:
    return
  or_none = " or None" if field.default is None else ""
  if field.choices:
    require(value in field.choices, path, value, f"allowed: {', '.join(field.choices)}")
  if field.interval:
    low, high = (float(bound) for bound in field.interval[1:-1].split(","))
    above = value > low if field.interval[0] == "(" else value >= low
    below = value < high if field.interval[-1] == ")" else value <= high
    require(above and below, path, value, f"must be in {field.interval}{or_none}")
  if field.positive:
    require(value > 0, path, value, f"must be > 0{or_none}")
  if field.non_negative:
    require(value >= 0, path, value, f"must be >= 0{or_none}")
  if field.check:
    field.check(path, value)


def _is_pairs(pairs) -> bool:
  return isinstance(pairs, (tuple, list)) and all(isinstance(pair, (tuple, list)) and len(pair) == 2
                                                  for pair in pairs)


def check_members(config: ml_collections.ConfigDict) -> None:
  """ensemble.members: () or one entry per member, each member's changes (config.teacher field, value) pairs of the
  fields a member may set (schema.ENSEMBLE_MEMBER_FIELDS) and of their types."""
  size, members = config.ensemble.size, tuple(config.ensemble.members)
  require(len(members) in (0, size), "ensemble.members", members,
          f"must be () or hold one entry per member (ensemble.size={size}), not {len(members)}")
  for m, changes in enumerate(members):
    require(_is_pairs(changes), f"ensemble.members[{m}]", changes,
            "must be a tuple of (config.teacher field, value) pairs, e.g. (('seed', 1), ('hidden_sizes', (512,)))")
    for field, value in changes:
      require(field in schema.ENSEMBLE_MEMBER_FIELDS, f"ensemble.members[{m}]", field,
              f"a member may set these config.teacher fields: {', '.join(schema.ENSEMBLE_MEMBER_FIELDS)}")
      check_type(f"ensemble.members[{m}].{field}", value, schema.FIELDS[f"teacher.{field}"])


def check_sweep(config: ml_collections.ConfigDict) -> None:
  """config.sweep's grid and zipped groups: each swept path is a schema field with a non-empty tuple of values of its
  type, no field is swept twice, and the lists of a zipped group have equal lengths. The values' ranges are checked
  per point (kd_jax/sweeps/expansion.py)."""
  sweep = config.sweep
  groups = [("sweep.grid", sweep.grid)] + [(f"sweep.zipped[{i}]", group) for i, group in enumerate(sweep.zipped)]
  swept = {}
  for where, pairs in groups:
    require(_is_pairs(pairs) and (where == "sweep.grid" or len(pairs) > 0), where, pairs,
            "must be a tuple of (dotted field path, tuple of values) pairs" + (
                "" if where == "sweep.grid" else ", at least one"))
    for path, values in pairs:
      _check_swept_field(path, values, f"config.{where}")
      require(path not in swept, path, values, f"is swept twice: in config.{swept.get(path)} and config.{where}")
      swept[path] = where
    if where != "sweep.grid":
      first_path, first_values = pairs[0]
      for path, values in pairs[1:]:
        require(len(values) == len(first_values), path, values,
                f"has {len(values)} values but {first_path} in the same group of config.{where} has "
                f"{len(first_values)}; zipped lists advance together and need equal lengths")


def _check_swept_field(path, values, where: str) -> None:
  """`path` names a field (not a section) of the schema, and `values` is a non-empty tuple of values of its type."""
  require(isinstance(path, str) and bool(path), where[len("config."):], path,
          "swept fields are given by dotted paths such as 'distill.temperature'")
  parts = path.split(".")
  entry = schema.SCHEMA
  for depth, part in enumerate(parts):
    if not isinstance(entry, schema.Section) or part not in entry.fields:
      prefix = ".".join(parts[:depth])
      known = (f"known fields{' of config.' + prefix if prefix else ''}: {', '.join(sorted(entry.fields))}"
               if isinstance(entry, schema.Section) else f"config.{prefix} is a field, not a section")
      raise ConfigError(path, values, f"unknown field in {where}; {known}")
    entry = entry.fields[part]
  if isinstance(entry, schema.Section):
    raise ConfigError(path, values,
                      f"is a section, not a field; sweep one of its fields: {', '.join(sorted(entry.fields))}")
  require(path != "seed", path, values, "is set by config.sweep.seeds (seeds 0, 1, ..., n-1): set that instead")
  require(parts[0] != "sweep", path, values, "the sweep settings themselves cannot be swept")
  require(isinstance(values, (tuple, list)) and len(values) > 0, path, values,
          f"needs a non-empty tuple of values in {where}")
  for position, value in enumerate(values):
    try:
      check_type(path, value, entry)
    except ConfigError as error:
      raise ConfigError(path, value, f"{error.allowed} (value {position} of its list in {where})") from None
