"""The Gradio UI: a thin layer over the engine (the only part that imports gradio)."""
