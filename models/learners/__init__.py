"""Learner implementations; create them by name with :func:`streamlearn.models.zoo.create`."""
