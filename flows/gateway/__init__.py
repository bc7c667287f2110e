"""The OpenAI-compatible gateway: apps call pipelines the way they call any LLM service.

    openai_wire.py  the Chat Completions request, response, stream chunks and errors
    mapping.py      which pipeline a `model` runs, and a chat request as the pipeline's inputs
    tenants.py      API keys (stored hashed) -> namespace, budget and rate limit
    metrics.py      Prometheus metrics
    app.py          the ASGI application (Starlette): routes, access log, lifespan
    server.py       `frugal gateway`: uvicorn, workers, bind rules

Each request runs its pipeline *inline* (no Prefect flow run per request): a cache hit
costs about what Redis costs. Flow runs are for triggered and scheduled work.
"""
