"""The exception tree of streamlearn: one root here, in the lowest layer; each package's
root derives from it, so the two edges map every expected failure with one lookup.

Each class carries how the edges answer it: ``status`` is the HTTP status serving answers
with (``headers`` and ``close`` say more for a few), ``exit_code`` the CLI's exit status
after one ``error: …`` line on stderr — 2 when the input given (a file, a flag, a
dataset, a model name) is unusable, as for a usage error; 1 when something failed while
running. A subclass inherits both unless it says otherwise. The whole tree (checked
against the classes by ``tests/unit/test_errors.py``)::

    StreamlearnError             500  1  root; every expected failure
    ├── MissingExtra             500  1  an extra of the install is missing (``extra``)
    ├── ModelError               500  2  models/errors.py: learners, features, snapshots, registry
    │   ├── FeatureError         400  2  a feature spec or row is not what the featuriser expects
    │   ├── SnapshotError        500  1  a snapshot cannot be built, exported or read back
    │   │   └── ParityError      500  1  the ONNX graph does not score what its learner scores
    │   └── RegistryError        500  2  the registry cannot find, publish or stage a model version
    │       └── StageError       409  2  a stage change the registry's state forbids
    ├── StreamsError             500  1  streams/errors.py: events, Kafka, state
    │   ├── BrokerError          503  1  the embedded broker did not start or answer
    │   ├── KafkaError           503  1  a Kafka client operation failed
    │   ├── ContractError        400  2  a record does not match its contract (``reason`` code)
    │   ├── CatalogError         500  2  a declaration (event, feature, head, model) is wrong
    │   ├── StateLost            500  1  a processor's memory is undefined: stop uncommitted
    │   │   └── RankLost         500  1  a trainer rank died or went silent: all resume from the cut
    │   └── Fenced               500  1  another worker owns the partitions now: stop uncommitted
    ├── ProjectError             500  2  streamlearn/project/errors.py: a project cannot be loaded
    ├── OfflineError             500  2  offline/errors.py: replay, datasets, batch training, flows
    │   ├── RangeError           400  2  a replay bound is malformed or out of range
    │   ├── DatasetError         400  2  a dataset is missing or malformed
    │   │   └── EvalError        400  2  the evaluation file, a column or a label is not usable
    │   └── FlowError            500  2  a flow cannot run as asked
    │       └── FlowStepError    500  2  a step of a run raised (``step``, ``record``, ``path``)
    └── ServingError             500  1  serving/errors.py: the prediction service
        ├── BadRequest           400  1  malformed body, wrong shape, bad value
        ├── Unauthorized         401  1  admin call without the right bearer token
        ├── NotFound             404  1  no such path
        │   ├── ModelNotFound    404  1  the model is not served here
        │   ├── VersionNotFound  404  1  the version is not in the registry, or not the one serving
        │   └── AdminDisabled    404  1  admin endpoints are off (no token configured)
        ├── MethodNotAllowed     405  1  the path exists, the method does not
        ├── RequestTimeout       408  1  the request did not arrive in time (connection closed)
        ├── LengthRequired       411  1  no Content-Length (connection closed)
        ├── PayloadTooLarge      413  1  body over the limit (connection closed)
        ├── HeadersTooLarge      431  1  request line and headers over the limit (connection closed)
        ├── Unavailable          503  1  try again later (``Retry-After: 1``)
        │   ├── ModelNotReady    503  1  the model has no version loaded yet
        │   └── Overloaded       503  1  over the connection cap (connection closed)
        ├── RegistryUnavailable  500  1  the registry cannot be read
        └── SnapshotRejected     500  1  a version failed to load; the old one keeps serving

The edges: ``streamlearn.cli.ui.ErrorMapping`` (the CLI's command group) and
``streamlearn.serving.http.ServingAPI`` (the HTTP app) each catch :class:`StreamlearnError` once and
read these attributes; anything else is a bug (a traceback, or a logged 500). Errors
live in the packages' ``errors.py`` modules only.
"""

from __future__ import annotations

from typing import ClassVar


class StreamlearnError(Exception):
    """Root of every expected failure; says how the HTTP and CLI edges answer it."""

    #: HTTP status serving answers with.
    status: ClassVar[int] = 500
    #: Extra HTTP response headers.
    headers: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: Close the HTTP connection after answering (the request stream may be out of sync).
    close: ClassVar[bool] = False
    #: CLI exit status: 2 the input given is unusable, 1 a failure while running.
    exit_code: ClassVar[int] = 1


class MissingExtra(StreamlearnError):
    """What was asked for needs an extra of the install that is not installed (``extra``,
    e.g. ``deep``; ``modules``, the missing imports). Its message names the command that
    installs it: ``pip install 'streamlearn[deep]'``."""

    def __init__(self, extra: str, needed_by: str, modules: tuple[str, ...]) -> None:
        super().__init__(
            f"{needed_by} needs the {extra!r} extra ({', '.join(modules)} not installed): "
            f"pip install 'streamlearn[{extra}]'"
        )
        self.extra = extra
        self.modules = modules


class ModelError(StreamlearnError):
    """Root of every error raised by :mod:`models` (mostly about what was asked for: a
    learner, its params, a model or version name)."""

    exit_code = 2


class FeatureError(ModelError):
    """A feature spec or an input row is not what the featuriser expects."""

    status = 400
    exit_code = 2


class SnapshotError(ModelError):
    """A snapshot cannot be built, exported or read back."""

    exit_code = 1


class ParityError(SnapshotError):
    """A snapshot's ONNX graph does not score what its learner scores (``max_abs_diff``)."""

    def __init__(self, message: str, max_abs_diff: float) -> None:
        super().__init__(message)
        self.max_abs_diff = max_abs_diff


class RegistryError(ModelError):
    """The model registry cannot find, publish or stage a model version."""


class StageError(RegistryError):
    """A model version cannot be promoted, rolled back or rejected in the registry's state."""

    status = 409
