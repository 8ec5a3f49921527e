"""asr package of lpo-speech."""
