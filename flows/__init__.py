"""Prefect flows, tasks, deployments and the ``differ`` CLI (a thin layer over the stage packages)."""
