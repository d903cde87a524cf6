"""Protocol adapters over the core's lookup: each parses its protocol and encodes the answers."""
