"""impetus: a Jupyter-first LLM workbench on MLX."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("impetus")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"


def _jupyter_server_extension_points() -> list[dict[str, object]]:
    from impetus.jupyter.extension import ImpetusExtension

    return [{"module": "impetus", "app": ImpetusExtension}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "impetus"}]


__all__ = ["__version__"]
