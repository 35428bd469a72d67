"""The built-in example project: a feed and an ads slot, driven by the simulator."""
