"""The synthetic world that drives the whole online-learning loop (``streamlearn simulate``).

Modules: ``world`` (the hidden truth), ``behaviour`` (engagements and their delays),
``ranking`` (expected CTR of a ranking), ``events`` (what is published), ``scoring``
(the HTTP client of serving), ``stats`` and ``metrics`` (what is counted), ``loop``
(the :class:`Simulator`). ``streams.simulator`` re-exports the public names.
"""
