"""Data: the engagement-log simulator, the Polars pipeline, streaming datasets and the DataModule."""
