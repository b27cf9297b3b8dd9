"""Grafana dashboards as code (DESIGN.md: dashboards/)."""
