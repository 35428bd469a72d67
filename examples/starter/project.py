"""A streamlearn project: the events, features and models of one team, in plain Python.

`streamlearn init DIR` wrote this file and a sample log (`events.csv`). Run it:

    streamlearn up --project DIR --log DIR/events.csv --duration 60

Then make it yours: declare your event types, surfaces, entities and fields, the
features to keep, what a model predicts (a head) and the models. Every command takes
`--project DIR` and builds everything from this file: the event contract, the topics,
the feature processor, the joiner's labels, one trainer per model, serving.
A declaration that does not hold together stops the command with one line that says
which one and what is wrong.
"""

from __future__ import annotations

from streamlearn.project import (
    Count,
    DecayedRate,
    Events,
    Feature,
    Head,
    LastEventTime,
    Model,
    Project,
    SecondsSince,
    WindowedCount,
)

project = Project(
    name="starter",
    description="Items shown on a home page, and the clicks they get.",
    # Event types by role: impressions are what models rank and learn from; engagements
    # are what a head may count as a positive; negatives are explicit negative feedback.
    # An event whose type is not declared here is dead-lettered with the declared list.
    events=Events(impressions=["impression"], engagements=["click"], negatives=["hide"]),
    # Where items are shown. Requests and events name one of these.
    surfaces=["home"],
    # Entities besides `user` and `item` (keyed by `user_id` and `item_id`): any string
    # field of the events, e.g. Entity("query", key="query") with Field("query", "str").
    entities=[],
    # Extra typed fields of the events, e.g. Field("price", "float").
    fields=[],
    features=[
        Feature("user_clicks", "user", Count(["click"]), "Clicks by the user, all time."),
        Feature(
            "user_impressions_1h",
            "user",
            WindowedCount(["impression"], window_s=3600),
            "Items shown to the user in the last hour.",
        ),
        Feature(
            "user_last_event_ts",
            "user",
            LastEventTime(),
            "Time of the user's latest event.",
            served=False,  # kept to derive user_recency_s, not a model input
        ),
        Feature(
            "user_recency_s",
            "user",
            SecondsSince("user_last_event_ts"),
            "Seconds since the user's previous event (at request time).",
        ),
        Feature(
            "item_ctr",
            "item",
            DecayedRate(["click"], ["impression"], half_life_s=1800),
            "Clicks per impression of the item, decayed (half-life 30 min), smoothed.",
        ),
    ],
    # What a model predicts: which engagements are positives, and how long after an
    # impression one counts.
    heads=[Head("click", positives=["click"], window_s=30.0)],
    models=[
        Model(
            "home",
            head="click",
            surfaces=["home"],
            # inputs by name: features, entity keys, "surface", or ctx_<key> for a value
            # of the request's context; leave out `features` to take them all
            features=[
                "user_id",
                "item_id",
                "user_clicks",
                "user_impressions_1h",
                "user_recency_s",
                "item_ctr",
            ],
            crosses=[("user_id", "item_id")],
            learner="ftrl",
            description="Ranks the home page by click probability.",
        )
    ],
)
