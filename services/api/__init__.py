"""FastAPI gateway: REST + WebSocket over the store, Redis and the Celery queues."""
