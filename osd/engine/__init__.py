"""The domain: validation, placement, capacity, state machines, jobs."""
