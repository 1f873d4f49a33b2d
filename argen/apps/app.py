"""`argen app`: a Gradio page to explore the generators (needs `pip install -e .[app]`).

Tabs: sample (any shipped or local generator; classes, EAR passes, CFG, temperature, seed -> grid, EAR growth
GIF or VAR scale strip, measured time, passes and FLOPs), extend (EAR centre continued outward) and side by
side (two models, same seed). Models load once (`ModelStore`); every request is the CLI's (see
`argen.apps.store`). Inputs the models cannot run show their message in place of the result, never a
traceback.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from typing import Any

from argen.apps import store as st
from argen.data import FASHION_MNIST_CLASSES

# Gradio would otherwise phone home at import and launch; the app must work offline.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
import gradio as gr

CLASS_HELP = "Fashion-MNIST classes: " + ", ".join(f"{i} {c}" for i, c in enumerate(FASHION_MNIST_CLASSES))
INTRO = (
    "# argen\nSample the shipped Fashion-MNIST generators: raster (LlamaGen), EAR (spiral, several tokens "
    "per pass; the any-schedule EAR runs at any number of passes), VAR and ActVAR (sparse VAR). "
    "Times are measured on this machine."
)
OWN = "empty = the model's own"
# Gradio floats an image's label and buttons over its top edge: room for them above the picture
CSS = ".result .image-container { padding-top: 2.4rem; }"


def _shown(outputs: int, message_at: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A request's outputs; for inputs it cannot run (ValueError, incl. CheckpointError), its message where
    the result text goes (output `message_at`) and every other output cleared, so no earlier result stays
    beside the message, and the next result replaces the message."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except (ValueError, FileNotFoundError) as e:
                cleared: list[Any] = [None] * outputs
                cleared[message_at] = "**Error:** " + re.sub(r"([\\`*_\[\]<>#|])", r"\\\1", str(e))
                return tuple(cleared)

        return run

    return wrap


def _stats_md(result: st.SampleResult) -> str:
    s = result.stats
    lines = [
        f"**{s['model']}**: {s['images']} images, **{s['passes']} passes**, "
        f"**{s['gflops_per_image']:.3g} GFLOPs** per image (CFG included)",
        f"sampled in **{s['sampling_s']:.2f} s** ({s['images_per_s']} images/s) in **{s['dtype']}** on "
        f"{s['device']}; request {s['request_s']:.2f} s",
        f"seed {s['seed']}, CFG {s['cfg_scale']:g}, temperature {s['temperature']:g}",
    ]
    lines += [f"warning: {w}" for w in result.warnings]
    return "\n\n".join(lines)


def _progress(progress: gr.Progress) -> st.Progress:
    return lambda fraction, desc: progress(fraction, desc=desc)


def build_app(store: st.ModelStore) -> gr.Blocks:
    """The page over `store` (not launched)."""
    generators = st.describe(store, store.generators)
    ears = st.describe(store, [n for n in store.generators if store.is_ear(n)])
    ear_default = ears[0][1] if ears else None

    @_shown(outputs=3, message_at=2)
    def on_sample(
        name,
        classes,
        per_class,
        passes,
        cfg,
        temperature,
        seed,
        frames,
        progress=gr.Progress(),  # noqa: B008 (Gradio's idiom: it passes a tracker per request)
    ):
        result = st.sample(
            store, name, classes, per_class, passes, cfg, temperature, seed, frames, _progress(progress)
        )
        for warning in result.warnings:
            gr.Warning(warning)
        return result.grid, result.frames, _stats_md(result)

    @_shown(outputs=2, message_at=1)
    def on_extend(name, images, centre, canvas, cfg, seed):
        image, report = st.extend(store, name, images, centre, canvas, cfg, seed)
        return image, (
            f"{report['mode']}: {report['centre_tokens']}x{report['centre_tokens']} centre tokens -> "
            f"{report['canvas_tokens']}x{report['canvas_tokens']} canvas in {report['passes']} passes, "
            f"{report['request_s']:.2f} s in **{report['dtype']}** on {report['device']}. "
            "Rows: original | kept centre | generated."
        )

    @_shown(outputs=4, message_at=1)
    def on_compare(left, right, classes, per_class, seed, progress=gr.Progress()):  # noqa: B008
        results = st.compare(store, left, right, classes, per_class, seed, _progress(progress))
        return results[0].grid, _stats_md(results[0]), results[1].grid, _stats_md(results[1])

    # Gradio keeps copies of served images: drop those older than an hour, hourly
    with gr.Blocks(title="argen", delete_cache=(3600, 3600)) as app:
        gr.Markdown(f"{INTRO} Models run in **{store.dtype}** on {store.device}.")
        with gr.Tab("Sample"):
            with gr.Row():
                with gr.Column(scale=1):
                    model = gr.Dropdown(generators, value=store.default, label="model")
                    classes = gr.Textbox(
                        "",
                        label="classes (comma-separated ids; empty = all)",
                        info=CLASS_HELP,
                        elem_id="classes",
                    )
                    per_class = gr.Slider(1, 8, value=1, step=1, label="images per class")
                    start_passes, start_cfg, start_temperature = store.defaults(store.default)
                    passes = gr.Number(
                        start_passes, precision=0, label="passes (--schedule; EAR only, 0 = the model's own)"
                    )
                    cfg = gr.Number(start_cfg, label=f"CFG scale (1 = off; {OWN})", elem_id="cfg")
                    temperature = gr.Number(start_temperature, label=f"temperature ({OWN})")
                    seed = gr.Number(0, precision=0, label="seed")
                    frames = gr.Checkbox(True, label="growth GIF (EAR/raster) or scale strip (VAR/ActVAR)")
                    run = gr.Button("Generate", variant="primary", elem_id="generate")
                with gr.Column(scale=2):
                    grid = _image("samples (one column per class)", "grid")
                    stats = gr.Markdown(elem_id="stats")
                    animation = _image("growth / scales", "frames")
            inputs = [model, classes, per_class, passes, cfg, temperature, seed, frames]
            run.click(on_sample, inputs, [grid, animation, stats])
            model.change(store.defaults, model, [passes, cfg, temperature])
        with gr.Tab("Extend (EAR)"):
            with gr.Row():
                with gr.Column(scale=1):
                    ear = gr.Dropdown(ears, value=ear_default, label="EAR model")
                    images = gr.Textbox("0,1,2,3", label="Fashion-MNIST test images (indices)")
                    centre = gr.Slider(1, 16, value=8, step=1, label="kept centre (tokens)")
                    canvas = gr.Slider(16, 32, value=20, step=1, label="canvas (tokens; 16 = inpainting)")
                    own_cfg = store.defaults(ear_default)[1] if ear_default else None
                    ext_cfg = gr.Number(own_cfg, label=f"CFG scale ({OWN})", elem_id="ext_cfg")
                    ext_seed = gr.Number(0, precision=0, label="seed")
                    ext_run = gr.Button("Extend", variant="primary", elem_id="extend")
                with gr.Column(scale=2):
                    ext_image = _image("original | kept centre | generated", "ext_image")
                    ext_stats = gr.Markdown(elem_id="ext_stats")
            ext_inputs = [ear, images, centre, canvas, ext_cfg, ext_seed]
            ext_run.click(on_extend, ext_inputs, [ext_image, ext_stats])
            ear.change(lambda name: store.defaults(name)[1], ear, ext_cfg)
        with gr.Tab("Side by side"):
            with gr.Row():
                left = gr.Dropdown(generators, value=store.default, label="left model")
                right = gr.Dropdown(generators, value=_other(store), label="right model")
                cmp_classes = gr.Textbox("", label="classes (empty = all)", elem_id="cmp_classes")
                cmp_per_class = gr.Slider(1, 8, value=1, step=1, label="images per class")
                cmp_seed = gr.Number(0, precision=0, label="seed (the same for both)")
            cmp_run = gr.Button("Compare", variant="primary", elem_id="compare")
            with gr.Row():
                with gr.Column():
                    left_grid, left_stats = _image("left", "left_grid"), gr.Markdown(elem_id="left_stats")
                with gr.Column():
                    right_grid, right_stats = _image("right", "right_grid"), gr.Markdown()
            cmp_run.click(
                on_compare,
                [left, right, cmp_classes, cmp_per_class, cmp_seed],
                [left_grid, left_stats, right_grid, right_stats],
            )
    return app


def _image(label: str, elem_id: str) -> gr.Image:
    """A result picture, its label and buttons above it (CSS), not floating over the first and last image."""
    return gr.Image(type="filepath", label=label, elem_id=elem_id, elem_classes=["result"])


def _other(store: st.ModelStore) -> str:
    rest = [n for n in store.generators if n != store.default]
    return "var_fmnist" if "var_fmnist" in rest else (rest or [store.default])[0]


def serve(cfg: st.AppConfig, ready: Callable[[str], None] | None = None) -> None:
    """Load the models, build the page and serve it until interrupted; `ready(url)` once it listens."""
    store = st.ModelStore(cfg)
    if cfg.preload:
        store.warm_up()
    app = build_app(store)
    # one request at a time: sampling uses every CPU thread torch has
    app.queue(default_concurrency_limit=1)
    _, url, _ = app.launch(
        server_name=cfg.host,
        server_port=cfg.port,
        show_error=True,
        ssr_mode=False,
        css=CSS,
        prevent_thread_lock=True,
        quiet=True,
        footer_links=[],
    )
    if ready is not None:
        ready(url)
    try:
        app.block_thread()
    finally:
        app.close()
