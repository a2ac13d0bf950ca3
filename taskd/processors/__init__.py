"""Built-in processor types, one module per family."""

from __future__ import annotations

from taskd.pipeline import ProcessorType
from taskd.processors import basic, http, shell

BUILTINS: dict[str, ProcessorType] = {
    kind.name: kind for kind in (shell.TYPE, http.TYPE, basic.SLEEP, basic.LOG, basic.PYTHON)
}
