"""What the API and the workers share: the settings, the job store (its tables, migrations and
transitions), the broker contract and the log format. Imports neither FastAPI, nor Celery, nor torch."""
