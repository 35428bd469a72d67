"""The project ``streamlearn init`` writes: a starting point that runs as it is."""
