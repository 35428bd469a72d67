"""streamlearn: models."""
