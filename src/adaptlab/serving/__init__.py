"""Serving many adapters from one base model: an engine interface, a transformers engine, an HTTP app.

    adaptlab serve --base minilm --adapter rt=runs/rotten_tomatoes/lora \
        --adapter probe=runs/rotten_tomatoes/linear_probe

- :mod:`adaptlab.serving.engine`: the small :class:`Engine` Protocol the HTTP layer talks to.
- :mod:`adaptlab.serving.transformers_engine`: the engine shipped here (transformers + peft multi-adapter).
- :mod:`adaptlab.serving.batching`: bounded queue and per-adapter micro-batching on one worker thread.
- :mod:`adaptlab.serving.app`: FastAPI endpoints (OpenAI-shaped), JSON errors, limits, Prometheus metrics.
- :mod:`adaptlab.serving.replicas`: ``--replicas N``: that app on N Ray Serve replicas behind one retrying front.
"""
