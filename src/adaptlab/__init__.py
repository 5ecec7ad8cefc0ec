"""adaptlab: prompt or adapt? Run the whole adaptation ladder on one split; compare quality against cost."""

__version__ = "0.1.0"


def load(path, backend: str = "auto", **kwargs):
    """A ready predictor from an exported bundle (see :func:`adaptlab.bundle.load`); imports torch only when called."""
    from adaptlab.bundle import load as _load

    return _load(path, backend, **kwargs)
