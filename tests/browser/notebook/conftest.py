"""The `lab` fixture (tests.browser.notebook.lab)."""

from tests.browser.notebook.lab import lab

__all__ = ["lab"]
