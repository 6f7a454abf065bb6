"""The one error type for a config value or input that cannot work, shared by every stage."""


class ConfigError(ValueError):
    """A config value or input that cannot work; the message names the key or file and what to change."""
