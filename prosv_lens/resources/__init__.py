"""Data written for the project and shipped with the package (instructions, concepts, judge bank, utility set)."""
