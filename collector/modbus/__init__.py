"""Modbus TCP collection: read plan, vectorized decode, source (the only user of pymodbus)."""
