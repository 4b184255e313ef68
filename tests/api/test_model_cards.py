"""`v1/models` cards of models on disk but not loaded: `created` is when the model arrived."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.api.conftest import Server

ARRIVED = 1_600_000_000  # 2020-09-13: long before this server started


def test_created_is_when_the_model_arrived_on_disk(server: Server, tiny_model_dir: Path) -> None:
    home = server.log.parent  # the server's IMPETUS_HOME (its log lives there)
    folder = home / "models" / "arrived-tiny"
    shutil.copytree(tiny_model_dir, folder)
    os.utime(folder, (ARRIVED, ARRIVED))
    try:
        cards = {m.id: m for m in server.openai().models.list().data}
        assert cards["arrived-tiny"].created == ARRIVED
        assert cards["arrived-tiny"].model_extra and not cards["arrived-tiny"].model_extra["loaded"]
        # a loaded model's card says when it was loaded: after the server started
        loaded = cards[str(tiny_model_dir)]
        assert loaded.created > ARRIVED
    finally:
        shutil.rmtree(folder)
