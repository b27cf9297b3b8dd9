"""Plant simulators over real OPC UA and Modbus, scenarios and replay (DESIGN.md: simulators/)."""
