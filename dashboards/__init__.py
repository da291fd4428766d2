"""The fleet dashboard: a FastAPI app (JSON API under `/api/v1` plus server-rendered pages).

Start it with `fleet dashboard` (see `dashboards.cli`); build it in code with
`dashboards.app.create_app(settings)`.
"""
