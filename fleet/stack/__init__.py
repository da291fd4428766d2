"""The local stack: Kafka (KRaft, from pinned jars), the MLflow tracking server and the database.

`fleet up` / `fleet down` / `fleet status` drive it through `fleet.stack.launcher`; tests use the
same library calls from a session fixture, so the integration tests run on exactly what users run.
"""
