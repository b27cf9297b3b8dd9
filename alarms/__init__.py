"""Alarm lifecycle (ISA-18.2) and notification (DESIGN.md: alarms/)."""
