"""Learner implementations; create them by name with :func:`models.zoo.create`."""
