"""Training objectives (losses), one section per model family, each registering its task.

Losses live here so that training and distillation reuse the same forward passes.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------- tokenizers

# ------------------------------------------------------------------------------------------ GPT (raster, EAR)

# --------------------------------------------------------------------------------------------------- VAR

# ------------------------------------------------------------------------------------------------ classifier
