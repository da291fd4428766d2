-- MLflow keeps its registry in its own database next to fleet's.
CREATE DATABASE mlflow OWNER fleet;
