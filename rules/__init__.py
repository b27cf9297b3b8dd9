"""Vectorized rule engine: limits, data quality and interlock conditions (DESIGN.md: rules/)."""
