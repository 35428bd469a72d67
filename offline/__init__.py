"""streamlearn: offline."""
