"""judges package of lpo-speech."""
