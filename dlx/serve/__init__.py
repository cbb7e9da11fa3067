"""`dlx serve`: the HTTP app (app.py), API keys and signing (auth.py), the job queue (jobs.py),
the model registry (registry.py) and a signing client (client.py)."""
