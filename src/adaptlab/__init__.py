"""adaptlab: prompt or adapt? Run the whole adaptation ladder on one split; compare quality against cost."""

__version__ = "0.1.0"
