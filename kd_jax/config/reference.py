"""The config reference, docs/config.md, generated from the schema (`COMMAND` regenerates it).

Every field by section: its type, default, the values its declaration allows, and its doc.
"""

from kd_jax.config import schema

COMMAND = "python -m kd_jax.config.reference > docs/config.md"


def _escaped(text: str) -> str:
  """`text` safe in a Markdown table cell: pipes escaped, and '<' outside code spans (`<split>.csv` would read as an
  HTML tag)."""
  parts = text.replace("|", "\\|").split("`")
  return "`".join(part if i % 2 else part.replace("<", "&lt;") for i, part in enumerate(parts))


def allowed(field: schema.Field) -> str:
  """What `field`'s declaration allows, in words; '' where any value of its type goes (or other rules decide)."""
  words = []
  if field.choices:
    words.append(", ".join(f"`{choice}`" for choice in field.choices))
  if field.interval:
    words.append(f"in {field.interval}")
  if field.positive:
    words.append("> 0")
  if field.non_negative:
    words.append(">= 0")
  if field.check:
    words.append(field.check.__doc__.splitlines()[0].rstrip("."))
  if words and (field.nullable or field.default is None) and not words[-1].endswith("or None"):
    words.append("or None")
  return " ".join(words)


def _table(fields: dict, prefix: str) -> list[str]:
  lines = ["| field | type | default | allowed | meaning |", "|---|---|---|---|---|"]
  for name, field in fields.items():
    meaning = field.doc + (" *Operational: a resumed run may change it.*" if field.operational else "")
    lines.append(f"| `{prefix}{name}` | {field.value_type.__name__} | `{field.default!r}` | "
                 f"{_escaped(allowed(field))} | {_escaped(meaning)} |")
  return lines


def _section(section: schema.Section, path: str, depth: int) -> list[str]:
  lines = ["", f"{'#' * depth} `{path}`", "", _escaped(section.doc)]
  fields = {name: entry for name, entry in section.fields.items() if isinstance(entry, schema.Field)}
  if fields:
    lines += [""] + _table(fields, f"{path}.")
  for name, entry in section.fields.items():
    if isinstance(entry, schema.Section):
      lines += _section(entry, f"{path}.{name}", depth + 1)
  return lines


def markdown() -> str:
  """docs/config.md."""
  lines = [
      "# Config reference",
      "",
      f"Generated from kd_jax/config/schema.py by `{COMMAND}`; do not edit it by hand (tests/test_config_schema.py "
      "fails when it is stale).",
      "",
      "Every field of a kd_jax config, by section. A config file's `get_config(arg)` builds on "
      "`kd_jax.config.schema.default_config()`; override any field with `--config.<section>.<field>=<value>`. Before "
      "anything runs or is written (kd_jax/preflight.py), each value is checked against what its field allows (the "
      "column below), then against the rules between fields (kd_jax/config/rules.py) and the environment (devices, "
      "files, checkpoints; in the modules they concern). A bad value is one line naming the field, the value and "
      "what is allowed.",
      "",
      "## Top level",
      "",
  ]
  lines += _table({name: entry for name, entry in schema.SCHEMA.fields.items() if isinstance(entry, schema.Field)}, "")
  for name, entry in schema.SCHEMA.fields.items():
    if isinstance(entry, schema.Section):
      lines += _section(entry, name, 2)
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  print(markdown(), end="")
