"""Notebook panels over the impetus HTTP api: `import impetus.widgets as iw`.

* `iw.ModelPicker()`: the model registry, downloads with progress, load / unload
* `iw.Chat(model=...)`: a streaming chat panel
* `iw.Dashboard()`: live charts of the engine
* `iw.Workbench()`: the three in tabs
* `iw.BenchChart()`: a live benchmark view fed by the runner's callbacks
* `iw.Compare(models=[...])`: one prompt to several models (or settings) at once, side by side
* `iw.pull(id)`, `iw.load(id)`, `iw.bench([...])`: long operations as background tasks with
  progress; the kernel stays free (`await task` when the result is needed)
* `%load_ext impetus`: the `%%chat` and `%impetus` magics

Every panel finds the server by itself (`impetus.client`): the Jupyter server hosting this kernel,
`IMPETUS_URL`, or a private `impetus serve` started on loopback; pass `client=` to choose.
"""

from impetus.client import ImpetusClient
from impetus.widgets.bench import BenchChart
from impetus.widgets.chat import Chat
from impetus.widgets.compare import Compare
from impetus.widgets.dashboard import Dashboard
from impetus.widgets.picker import ModelPicker
from impetus.widgets.tasks import Task, bench, load, pull
from impetus.widgets.workbench import Workbench

__all__ = [
    "BenchChart",
    "Chat",
    "Compare",
    "Dashboard",
    "ImpetusClient",
    "ModelPicker",
    "Task",
    "Workbench",
    "bench",
    "load",
    "pull",
]
