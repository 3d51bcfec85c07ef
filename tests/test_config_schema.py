"""The schema: the bottom of the import graph, its choices the registries', and the source of docs/config.md."""

import ast

from kd_jax import data, models
from kd_jax.config import reference, schema
from tests.helpers import REPO_ROOT


def _imported_names(path) -> list[str]:
  """The absolute dotted names a Python file imports: `from kd_jax import errors` imports kd_jax.errors, `from
  kd_jax.config.schema import Field` kd_jax.config.schema.Field, a relative import one of kd_jax.config."""
  names = []
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      names += [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      module = node.module if node.level == 0 else f"kd_jax.config.{node.module or ''}".rstrip(".")
      names += [f"{module}.{alias.name}" for alias in node.names]
  return names


def test_the_config_package_imports_nothing_of_kd_jax_but_itself_and_errors():
  """kd_jax/config is the floor every stage stands on: importing it must not import jax or a stage."""
  for path in sorted((REPO_ROOT / "kd_jax" / "config").glob("*.py")):
    for name in _imported_names(path):
      if name.split(".")[0] == "kd_jax":
        assert name.startswith(("kd_jax.config.", "kd_jax.errors.")), f"kd_jax/config/{path.name} imports {name}"


def test_the_schema_choices_are_the_registries():
  assert schema.FIELDS["data.name"].choices == data.names()
  assert schema.MODEL_NAMES == models.names()
  assert schema.FIELDS["train.remat"].choices == models.remat_options()  # every policy the schema names, this jax has


def test_docs_config_md_is_generated_from_the_schema():
  assert (REPO_ROOT / "docs" / "config.md").read_text() == reference.markdown(), (
      f"docs/config.md is stale: regenerate it with `{reference.COMMAND}`")
