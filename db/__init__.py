"""Schema, engine/session setup, migrations and the queries the UI and the jobs layer need."""
