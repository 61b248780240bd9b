"""owui-replay: move Open WebUI thumbs feedback into Portkey's feedback API, auditably."""

__version__ = "0.1.0"
