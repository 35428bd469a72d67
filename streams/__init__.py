"""streamlearn: streams."""
