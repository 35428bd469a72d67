"""A project from public data: a fashion site's recommendation carousel, replayed.

The Open Bandit Dataset's sample (``convert.py`` makes a log of it): items shown in a
three-slot carousel on three campaigns (``all``, ``men``, ``women``), to users described
by four hashed features, and whether they were clicked. Nothing here is simulated; the
log drives the loop (``streamlearn up --project examples/open_bandit --log obd.csv
--speed 6000``: at a pace, so that the features keep up with the log) and
one model, ``carousel``, learns from its impressions which item a user is likely to click,
from the items' click rates as they stood at each impression (point in time) and the
user's features.
"""

from __future__ import annotations

from streamlearn.project import (
    Count,
    DecayedRate,
    Events,
    Feature,
    Field,
    Head,
    LatestContext,
    Model,
    Project,
    WindowedCount,
)

SHOWN = ["impression"]
CLICK = ["click"]
DAY = 86_400.0
#: The sample's click rate is about 0.5%: the decayed rates start from it.
PRIOR = 0.005
#: The four hashed user features of each impression (the sample has no user id).
USER_FEATURES = [f"user_feature_{i}" for i in range(4)]

project = Project(
    name="open_bandit",
    description="A fashion site's recommendation carousel (Open Bandit Dataset sample).",
    events=Events(impressions=SHOWN, engagements=CLICK),
    # one surface per campaign of the site
    surfaces=["all", "men", "women"],
    fields=[Field(name, "str", f"Hashed user feature {name[-1]}.") for name in USER_FEATURES],
    features=[
        Feature("item_impressions", "item", Count(SHOWN), "Times the item was shown."),
        Feature("item_clicks", "item", Count(CLICK), "Clicks on the item."),
        Feature(
            "item_ctr",
            "item",
            DecayedRate(CLICK, SHOWN, half_life_s=DAY, prior=PRIOR, strength=200),
            "Clicks per impression of the item, decayed (half-life 1 day), smoothed.",
        ),
        Feature(
            "item_impressions_1h",
            "item",
            WindowedCount(SHOWN, window_s=3600),
            "Times the item was shown in the last hour.",
        ),
        Feature(
            "item_group",
            "item",
            LatestContext("item_group"),
            "The item's group (a hashed item feature), from the event context.",
        ),
        Feature(
            "user_clicks",
            "user",
            Count(CLICK),
            "Clicks by users of the segment (users sharing the four user features).",
        ),
        Feature(
            "user_ctr",
            "user",
            DecayedRate(CLICK, SHOWN, half_life_s=DAY, prior=PRIOR, strength=200),
            "Clicks per impression of the segment, decayed (half-life 1 day), smoothed.",
        ),
    ],
    # a click comes with its impression in the sample: a short window is enough
    heads=[Head("click", positives=CLICK, window_s=60.0)],
    models=[
        Model(
            "carousel",
            head="click",
            surfaces=["all", "men", "women"],
            # the sample is small (287 clicks): a few inputs (the tutorial says what they score)
            features=[
                "surface",
                "item_ctr",
                "item_impressions",
                "item_clicks",
                "ctx_user_feature_0",
            ],
            learner="ftrl",
            description="Ranks the carousel by click probability.",
        )
    ],
)
