"""The chaos soak: a real stack on namespace hosts, a seeded nemesis, a history checker."""
