"""Prometheus metrics of one app: requests, latency, model use, batch sizes, tokens, queue depth, models loaded."""

from __future__ import annotations

from fastapi.responses import Response

from adaptlab.serving.batching import Batcher
from adaptlab.serving.engine import AdapterInfo


class Metrics:
    """Prometheus metrics in a registry of their own (one per app)."""

    def __init__(self, batcher: Batcher, models: dict[str, AdapterInfo]):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()  # no *_created series: they double the output for nothing here
        self.registry = CollectorRegistry()
        self.requests = Counter("adaptlab_http_requests_total", "HTTP requests by path and status",
                                ["path", "status"], registry=self.registry)
        self.latency = Histogram("adaptlab_http_request_seconds", "HTTP request latency (to the last byte)",
                                 ["path"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.model_requests = Counter("adaptlab_model_requests_total", "Inference requests by model and endpoint",
                                      ["model", "endpoint"], registry=self.registry)
        self.batch = Histogram("adaptlab_batch_size", "Inputs per engine call", ["kind"], registry=self.registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.tokens = Counter("adaptlab_generated_tokens_total", "Completion tokens generated", ["model"],
                              registry=self.registry)
        queue = Gauge("adaptlab_queue_depth", "Requests waiting for the engine", registry=self.registry)
        queue.set_function(lambda: batcher.depth)
        loaded = Gauge("adaptlab_models_loaded", "Models served, the base included", registry=self.registry)
        loaded.set_function(lambda: len(models))

    def render(self) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
