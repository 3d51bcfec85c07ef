"""Config: the schema (every field, its default and constraints), dotted paths, validation against the schema, and
the rules between fields. The floor of the package: it imports nothing of kd_jax but kd_jax.errors, so that no jax
loads with it."""
