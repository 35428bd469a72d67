"""streamlearn: streamlearn."""
