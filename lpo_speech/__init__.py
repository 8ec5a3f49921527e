"""lpo-speech: preference optimization (LPO, DPO, ...) for speech language models."""

import warnings

# resemblyzer's webrtcvad and pyworld import pkg_resources (setuptools<81 is pinned for them); their
# deprecation warning would print once per worker process and bury the progress bars.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

__version__ = "0.1.0"
