"""Datasets: the synthetic shapes generator, readers of real formats, and the Parquet schemas."""
