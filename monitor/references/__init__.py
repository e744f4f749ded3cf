"""Reference data: loading CSV/Parquet into the columns ``detectors`` expects, and validating it."""
