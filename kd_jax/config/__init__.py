"""Config: the schema (every field, its default and constraints), dotted paths, validation against the schema, the
rules between fields, and the reference generated from the schema (docs/config.md). The floor of the package: it
imports nothing of kd_jax but kd_jax.errors (tests/test_config_schema.py), so that no jax loads with it."""
