"""Everything under an output URL: its layout, atomic writes, the Parquet shards and
their metadata, the completion markers. Imports nothing else of the pipeline."""
