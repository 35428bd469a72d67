"""streamlearn offline: replay of topic ranges to Parquet, re-publishing, batch
(re)training with lineage, the vision path, promotion, and cached workflows/sweeps."""
