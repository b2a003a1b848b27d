"""data_utils package."""
