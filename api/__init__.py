"""FastAPI service: data, alarm handling, bureau overview (DESIGN.md: api/)."""
