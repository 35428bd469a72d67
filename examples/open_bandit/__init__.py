"""An example project from public data: the Open Bandit Dataset's sample, replayed.

``project.py`` declares a fashion site's recommendation carousel (three campaigns, one
model); ``convert.py`` turns the sample that ships inside the ``obp`` wheel into an
event log for ``streamlearn up --project … --log …``. ``docs/tutorial/open-bandit.md``
walks through it from ``streamlearn init``.
"""
