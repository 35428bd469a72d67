"""The floor of a Python prediction server: a bare ASGI handler on uvicorn.

The baseline of ``bench/bench_serving.py``. It parses the same request (msgspec, into the
same contract struct), runs the same ONNX graph (the registry's serving version, in an
onnxruntime session with serving's options) on the same featurised rows and answers the
same JSON reply, on uvicorn with httptools and uvloop like serving. It does nothing else:
no feature reads (each request's rows were featurised at start-up from the same stored
values), no feature log, no metrics, no limits, no version swaps. What serving costs
above it is the price of being a product.

With ``--bootstrap-servers`` it also produces, per request, the two records serving
produces (a feature-log record of serving's size, made at start-up, and the reply), from
the handler after it answers, with delivery reports for failures only (served by
``poll(0)`` after each request): what Kafka alone costs a request, at the least.

Run by the bench: ``python bench/thin_handler.py --port P --registry DIR --now T
[--bootstrap-servers HOST:PORT --topic-prefix P]``.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec
import numpy as np
import onnxruntime as ort
import uvicorn
from aged_registry import PROJECT, entities, traffic  # bench/ is on sys.path as a script

from streamlearn.models.features import FeatureSpec, Featuriser
from streamlearn.models.registry import FileRegistry
from streamlearn.streams.contracts import PredictionReply, PredictionRequest
from streamlearn.streams.features.store import served_features
from streamlearn.streams.kafka.clients import make_producer
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics

Message = MutableMapping[str, Any]


def _session(onnx: bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(onnx, opts, providers=["CPUExecutionProvider"])


def app_for(
    registry: FileRegistry,
    models: list[str],
    n_requests: int,
    now: float,
    kafka: KafkaConfig | None = None,
) -> Callable[[Message, Any, Any], Awaitable[None]]:
    """The ASGI app over the serving versions of ``models`` in ``registry`` (with
    ``kafka``: producing a feature-log record and the reply per request)."""
    sessions, versions, featurisers = {}, {}, {}
    for model in models:
        mv = registry.serving_version(model)
        assert mv is not None, f"no version of {model!r} to serve"
        sessions[model] = _session(registry.read_onnx(mv))
        versions[model] = mv.version
        featurisers[model] = Featuriser(FeatureSpec.from_dict(mv.metadata["feature_spec"]))
    users, items = entities(now)
    rows: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    row = served_features(PROJECT.catalog).row
    for model, req in traffic(n_requests, models):
        user = users.get(req.user_id)
        raw = [row(req, c, user, items.get(c), now) for c in req.candidates]
        rows[req.request_id] = featurisers[model].transform_many(raw)
    decoder = msgspec.json.Decoder(PredictionRequest)
    encoder = msgspec.json.Encoder()
    producer = None
    if kafka is not None:
        topics = Topics(kafka.topic_prefix)
        feature_log, predictions = topics.feature_log, topics.predictions
        producer = make_producer(kafka, **{"linger.ms": 20, "delivery.report.only.error": True})
        # serving's feature-log record is ~385 bytes a candidate (20: 7.7 kB)
        logged = {r: b"x" * (385 * len(idx)) for r, (idx, _) in rows.items()}

    async def app(scope: Message, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        model = scope["path"][len("/v1/models/") : -len(":predict")]
        req = decoder.decode(body)
        idx, val = rows[req.request_id]
        scores = sessions[model].run(["prob"], {"idx": idx, "val": val})[0].tolist()
        out = encoder.encode(PredictionReply(req.request_id, model, versions[model], scores))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(out)),
                ],
            }
        )
        await send({"type": "http.response.body", "body": out})
        if producer is not None:
            producer.produce(feature_log, logged[req.request_id], req.user_id)
            producer.produce(predictions, out, req.user_id)
            producer.poll(0)

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--registry", required=True)
    ap.add_argument("--models", default="feed,ads")
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--now", type=float, required=True)
    ap.add_argument("--bootstrap-servers", help="also produce two records a request there")
    ap.add_argument("--topic-prefix", default="")
    args = ap.parse_args()
    kafka = None
    if args.bootstrap_servers:
        kafka = KafkaConfig(args.bootstrap_servers, topic_prefix=args.topic_prefix)
    app = app_for(
        FileRegistry(args.registry), args.models.split(","), args.requests, args.now, kafka
    )
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        server_header=False,
        date_header=False,
    )


if __name__ == "__main__":
    main()
