"""Apps on top of the library. `store` (models loaded once, requests -> images) needs only argen; `app`
(the Gradio page behind `argen app`) needs the optional extra: `pip install -e .[app]`. Nothing in the core
package imports this package."""
