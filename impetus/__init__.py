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


__all__ = ["DISTRIBUTION", "LABEXTENSION", "__version__"]
