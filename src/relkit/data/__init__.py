"""Reading, importing and splitting data."""
