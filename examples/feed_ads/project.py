"""The built-in example project: a social feed and an ads slot.

Users see items on two surfaces, ``feed`` and ``ads``, and click, like, share, convert or
hide them. Two models run: ``feed`` ranks the feed by the probability that a shown item is
engaged with (any engagement is a positive); ``ads`` ranks the ads slot by a calibrated
click probability, learned with negatives downsampled to a quarter and corrected back.
``streamlearn up`` with no ``--project`` runs this project, fed by the simulator
(``streamlearn.simulator``), which drives this project only.

=========  ============  ==========================  ========  ==========
model      head          positives                   surfaces  learner
=========  ============  ==========================  ========  ==========
``feed``   engagement    click, like, share,         feed      ftrl
                         conversion
``ads``    click         click (negatives kept at    ads       ftrl
                         0.25, corrected)
=========  ============  ==========================  ========  ==========
"""

from __future__ import annotations

from streamlearn.project import (
    Count,
    DecayedRate,
    Events,
    Feature,
    Head,
    LastEventTime,
    LatestContext,
    Model,
    Project,
    SecondsSince,
)

ENGAGEMENTS = ["click", "like", "share", "conversion"]
IMPRESSION = ["impression"]
OWNER = "ranking"
#: Crosses of both models.
CROSSES = [("user_id", "item_category")]

project = Project(
    name="feed_ads",
    description="A feed and an ads slot, ranked by two models learned online.",
    events=Events(impressions=IMPRESSION, engagements=ENGAGEMENTS, negatives=["hide"]),
    surfaces=["feed", "ads"],
    features=[
        Feature(
            "user_impressions",
            "user",
            Count(IMPRESSION),
            "Impressions shown to the user, all time.",
            OWNER,
        ),
        Feature(
            "user_engagements",
            "user",
            Count(ENGAGEMENTS),
            "Clicks, likes, shares, conversions by the user.",
            OWNER,
        ),
        Feature("user_hides", "user", Count(["hide"]), "Items the user hid.", OWNER),
        Feature(
            "user_ctr",
            "user",
            DecayedRate(ENGAGEMENTS, IMPRESSION),
            "Engagements per impression, exponentially decayed (half-life 10 min), smoothed.",
            OWNER,
        ),
        Feature(
            "user_last_event_ts",
            "user",
            LastEventTime(),
            "Event time of the user's latest event.",
            OWNER,
            served=False,
        ),
        Feature(
            "user_recency_s",
            "user",
            SecondsSince("user_last_event_ts"),
            "Seconds since the user's previous event.",
            OWNER,
        ),
        Feature(
            "item_impressions",
            "item",
            Count(IMPRESSION),
            "Times the item was shown, all time.",
            OWNER,
        ),
        Feature(
            "item_engagements", "item", Count(ENGAGEMENTS), "Engagements with the item.", OWNER
        ),
        Feature(
            "item_ctr",
            "item",
            DecayedRate(ENGAGEMENTS, IMPRESSION),
            "Engagements per impression of the item, decayed (half-life 10 min), smoothed.",
            OWNER,
        ),
        Feature(
            "item_category",
            "item",
            LatestContext("category"),
            "Category, from the event context `category`.",
            OWNER,
        ),
        Feature(
            "item_last_event_ts",
            "item",
            LastEventTime(),
            "Event time of the item's latest event.",
            OWNER,
            served=False,
        ),
        Feature(
            "item_recency_s",
            "item",
            SecondsSince("item_last_event_ts"),
            "Seconds since the item's previous event.",
            OWNER,
        ),
    ],
    heads=[
        # Any engagement is a positive.
        Head("engagement", positives=ENGAGEMENTS),
        # A click, with negatives kept at 0.25 and the predictions corrected back.
        Head("click", positives=["click"], negative_rate=0.25),
    ],
    models=[
        Model(
            "feed",
            head="engagement",
            surfaces=["feed"],
            crosses=CROSSES,
            description="Ranks the feed: probability that a shown item is engaged with.",
        ),
        Model(
            "ads",
            head="click",
            surfaces=["ads"],
            crosses=CROSSES,
            description="Ranks the ads slot: calibrated click probability (negatives downsampled).",
        ),
    ],
)
