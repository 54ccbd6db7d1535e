"""What this kernel offers: tracefs, feature probes, and the hook plan built from them."""
