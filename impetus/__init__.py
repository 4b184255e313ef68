"""impetus: a Jupyter-first LLM workbench on MLX."""

from importlib.metadata import PackageNotFoundError, version

# The distribution's name on the package index (`impetus` there is an unrelated project); the
# import name and the `impetus` command stay `impetus`.
DISTRIBUTION = "impetus-lab"
# The labextension's npm package name (extension/package.json), also its folder under
# share/jupyter/labextensions.
LABEXTENSION = "impetus-lab"

try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"


def _jupyter_server_extension_points() -> list[dict[str, object]]:
    from impetus.jupyter.extension import ImpetusExtension

    return [{"module": "impetus", "app": ImpetusExtension}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": LABEXTENSION}]


def load_ipython_extension(ipython: object) -> None:
    """`%load_ext impetus`: the `%%chat` and `%impetus` magics (impetus.widgets.magics)."""
    from impetus.widgets.magics import load_ipython_extension as load

    load(ipython)


__all__ = ["DISTRIBUTION", "LABEXTENSION", "__version__", "load_ipython_extension"]
