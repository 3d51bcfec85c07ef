"""Config: the schema (every field, its default and constraints), dotted paths, validation."""
