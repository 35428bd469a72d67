"""streamlearn: serving."""
