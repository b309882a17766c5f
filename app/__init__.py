"""The SEC web service: FastAPI app, settings, database models, API routers and serving."""
