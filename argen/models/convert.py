"""Official checkpoints -> argen model files, so every argen command can use weights users already have."""

from __future__ import annotations

from pathlib import Path

from argen.model_io import save_model


def convert_official(official: str | Path, kind: str, preset: str | None, out: str | Path) -> Path:
    """Read an official file strictly (weights only) and write it as NAME.safetensors + NAME.json.

    Args:
        official: `vq_ds16_c2i.pt` (kind vq), `vae_ch160v4096z32.pth` (msvq), LlamaGen/EAR GPT `.pt` (gpt,
            preset B/L/XL or ear_B/ear_L/...), `var_d16.pth` ... (var, preset d16/d20/d24/d30).
        kind: vq | msvq | gpt | var. preset: the model preset matching the file (defaults for vq/msvq).
        out: output path.
    """
    if kind == "vq":
        from argen.tokenizers.vqgan import load_official_vq, vq_config

        model = load_official_vq(official, vq_config(preset or "llamagen_vq16"))
    elif kind == "msvq":
        from argen.tokenizers.multiscale import load_official_msvq, msvq_config

        model = load_official_msvq(official, msvq_config(preset or "var_vae_ch160v4096z32"))
    elif kind in ("gpt", "var"):
        if preset is None:
            raise ValueError(f"--preset is required for kind {kind} (e.g. B, ear_B for gpt; d16 for var)")
        if kind == "gpt":
            from argen.models.gpt import gpt_config, load_official_gpt

            model = load_official_gpt(str(official), gpt_config(preset))
        else:
            from argen.models.var import load_official_var, var_config

            model = load_official_var(official, var_config(preset))
    else:
        raise ValueError(f"unknown kind {kind!r}; choose vq, msvq, gpt or var")
    return save_model(model, out)
