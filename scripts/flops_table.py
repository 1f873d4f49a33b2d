"""Analytic per-image sampling cost (CFG on) of official-size and Fashion-MNIST models, as a markdown table.

python scripts/flops_table.py
"""

from argen.models.actvar import actvar_config
from argen.models.flops import actvar_sampling_flops, gpt_sampling_flops, var_sampling_flops
from argen.models.gpt import gpt_config
from argen.models.var import var_config
from argen.orders import build_order


def gpt_row(name: str, preset: str, schedule: object = None) -> tuple:
    cfg = gpt_config(preset)
    order = build_order(cfg.order, cfg.grid, cfg.schedule if schedule is None else schedule)
    out = gpt_sampling_flops(cfg, order)
    return name, out["passes"], out["tokens"], out["flops"] / 1e9


def var_row(name: str, preset: str, sparse: bool) -> tuple:
    cfg = var_config(preset)
    if sparse:
        total = actvar_sampling_flops(actvar_config(preset), adaln_per_scale=False)["total"]
    else:
        total = var_sampling_flops(cfg, adaln_per_scale=False)["total"]
    return name, len(cfg.patch_nums), 2 * cfg.seq_len, total / 1e9


rows = [
    gpt_row("LlamaGen-B raster", "B"),
    gpt_row("EAR-B (sides)", "ear_B"),
    gpt_row("LlamaGen-L raster", "L"),
    gpt_row("EAR-L (sides)", "ear_L"),
    var_row("VAR-d16", "d16", False),
    var_row("ActVAR-d16 (preset budget)", "d16", True),
    var_row("VAR-d30", "d30", False),
    var_row("ActVAR-d30 (preset budget)", "d30", True),
    gpt_row("fmnist raster (fmnist_raster_s)", "fmnist_raster_s"),
    gpt_row("fmnist EAR (fmnist_s, sides)", "fmnist_s"),
    gpt_row("fmnist EAR, 16 passes", "fmnist_s", 16),
    gpt_row("fmnist EAR, 8 passes", "fmnist_s", 8),
    var_row("fmnist VAR", "fmnist", False),
    var_row("fmnist ActVAR (preset budget)", "fmnist", True),
]
print("| model | passes | tokens processed | GFLOPs / image |\n|---|---|---|---|")
for name, passes, tokens, gflops in rows:
    print(f"| {name} | {passes} | {tokens} | {gflops:.1f} |")
