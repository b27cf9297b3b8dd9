"""OPC UA collection: subscription and polling sources (the only users of asyncua in the collector)."""
