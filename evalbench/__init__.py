"""evalbench: zero-shot and linear-probe transfer evaluation for CLIP-like models."""
__version__ = "0.1.0"
