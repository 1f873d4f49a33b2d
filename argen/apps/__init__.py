"""Apps on top of the library: the reports and pictures behind `argen reconstruct`, `argen extend` and
`argen demo` (`reconstruct`, `extend`, `demo`); `store` (models loaded once, requests -> images) needs only
argen; `app` (the Gradio page behind `argen app`) needs the optional extra: `pip install -e .[app]`. Only the
CLI imports this package (tests/test_layering.py checks it)."""
