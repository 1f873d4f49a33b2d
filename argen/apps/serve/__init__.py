"""`argen serve`: an HTTP server that batches the requests of many clients (needs the serve extra:
`pip install -e .[serve]`). `engine` (models, request checks, one batch) and `scheduler` (the queue and the
batching thread) need only argen; `http` is the FastAPI app and the uvicorn runner."""
