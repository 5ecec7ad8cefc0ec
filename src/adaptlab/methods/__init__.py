"""Methods: the rungs of the ladder. One module per rung, each registering itself with ``@METHODS.register``.

A method declares the tasks it supports, its hyperparameters as a pydantic ``Params`` model, and implements the
:class:`~adaptlab.methods.base.Method` lifecycle: ``setup`` (load and adapt the base) -> ``fit`` -> ``predict_*``
-> ``save``; ``load`` rebuilds it from a run folder. Adding a rung means adding one file here.
"""

from __future__ import annotations

import importlib
import pkgutil

from adaptlab.methods.base import METHODS, Method, NoParams

__all__ = ["METHODS", "Method", "NoParams", "get_method"]


def get_method(name: str) -> type[Method]:
    return METHODS.get(name)


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_") and info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")


_discover()
