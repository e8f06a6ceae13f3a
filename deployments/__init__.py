"""Ops code: create storyloom's work pools, limits, deployments and alerts on a Prefect server."""
