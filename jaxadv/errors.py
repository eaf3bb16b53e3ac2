"""The errors jaxadv raises for its users (a leaf module: imports nothing)."""


class ConfigError(ValueError):
  """A config value that cannot work; the message names the key and the fix."""


class NonFiniteError(RuntimeError):
  """Training produced NaN or Inf; the last good checkpoint is untouched."""
