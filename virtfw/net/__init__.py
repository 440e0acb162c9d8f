"""Virtual networks: XML model, definitions store, bridge, policy, lifecycle."""
