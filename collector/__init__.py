"""OPC UA and Modbus sources feeding ReadingBatches to the hub (DESIGN.md: collector/)."""
