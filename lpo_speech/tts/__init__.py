"""tts package of lpo-speech."""
