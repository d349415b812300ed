"""The worker: Celery app, the thin task and the pipeline of one job (DESIGN.md section 1)."""
