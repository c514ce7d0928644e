"""Modal screens: confirmation, forms, choices, help."""
