"""The core: the registry (records, live state, the change index) and the lookup every front asks."""
