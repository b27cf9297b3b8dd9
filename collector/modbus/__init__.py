"""Modbus collection, TCP and RTU: read plan, vectorized decode, the plan executor both
transports share, ModbusSource (one TCP device) and ModbusBusSource (one RTU serial bus).
The only user of pymodbus in the collector."""
