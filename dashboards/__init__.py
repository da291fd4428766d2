"""fleet dashboards."""
