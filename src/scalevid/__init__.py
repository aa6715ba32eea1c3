"""scalevid: SCALE (Spatio-temporal Crop Aggregation for video representation LEarning)."""

__version__ = "0.1.0"

from scalevid.model import ModelConfig, ScaleModel  # noqa: E402

__all__ = ["ModelConfig", "ScaleModel", "__version__"]
