"""Process and network helpers shared by the component managers; not a public API."""
