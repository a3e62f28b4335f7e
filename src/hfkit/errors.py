"""The errors hfkit raises: each names the problem and the fix."""


class HfkitError(Exception):
    """Base class of every error hfkit raises on bad input."""


class ModelNotFoundError(HfkitError, FileNotFoundError):
    """A name or path that resolves to no model files."""


class ConfigError(HfkitError, ValueError):
    """A config.json that is missing, unreadable or unsupported."""


class CheckpointError(HfkitError, ValueError):
    """Weights that are missing, corrupt or do not fit the model."""
