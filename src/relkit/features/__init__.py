"""Features shared by baselines, the student and the service."""
