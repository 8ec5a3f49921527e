"""lpo-speech: preference optimization (LPO, DPO, ...) for speech language models."""

__version__ = "0.1.0"
