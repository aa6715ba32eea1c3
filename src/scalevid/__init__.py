"""scalevid: SCALE (Spatio-temporal Crop Aggregation for video representation LEarning)."""

__version__ = "0.1.0"
