"""The HTTP API served by the daemon (FastAPI on uvicorn).

Start at ``app.create_app``; ``server.ApiServer`` runs it in a thread of the
daemon. This file stays empty of imports so that the CLI can use
``api.shapes`` without loading FastAPI.
"""
