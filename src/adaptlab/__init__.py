"""adaptlab: prompt or adapt? Run the whole adaptation ladder on one split; compare quality against cost."""

import logging

__version__ = "0.1.0"

# bitsandbytes (imported by transformers when installed) warns on every import on CPUs with AVX512-BF16 that it
# could not fetch an optional kernel from the Hugging Face hub; its own 4-bit CPU path is used instead.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def load(path, backend: str = "auto", **kwargs):
    """A ready predictor from an exported bundle (see :func:`adaptlab.bundle.load`); imports torch only when called."""
    from adaptlab.bundle import load as _load

    return _load(path, backend, **kwargs)
