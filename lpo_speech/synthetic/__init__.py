"""data package of lpo-speech."""
