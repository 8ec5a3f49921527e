"""CLI subcommands: one module per `lpo-speech` command (see lpo_speech.cli)."""
