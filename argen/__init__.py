"""argen: efficient autoregressive image generation (raster, EAR spiral, VAR, ActVAR)."""

__version__ = "0.1.0"
