"""Errors meant for the user: one line, no traceback, exit code 2 from main.py."""


class UserError(Exception):
  """Bad input (config value, path, data file, checkpoint) the user can fix.

  The message is the whole report: name the field or file, the value, and what is allowed.
  main.py prints it as a single line and exits with status 2.
  """


class ConfigError(UserError):
  """An invalid config value: `config.<field>=<value>: <what is allowed>`."""

  def __init__(self, field: str, value, allowed: str):
    self.field = field
    self.value = value
    self.allowed = allowed
    super().__init__(f"config.{field}={value!r}: {allowed}")


def require(condition: bool, field: str, value, allowed: str) -> None:
  """Raises `ConfigError(field, value, allowed)` unless `condition`: the one-line check of a config value."""
  if not condition:
    raise ConfigError(field, value, allowed)


class NonFiniteError(Exception):
  """Training produced NaN or Inf: the message names the phase, the first bad step and the loss terms.

  The last checkpoint saved before that step is kept; results.json is not written. main.py exits with status 1.
  """
