"""Resources of the offline judge."""
