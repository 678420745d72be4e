"""Reports and engagement exports for analysts: roll-ups, report pages, charts and exports."""
