"""`lpo-speech` command line: one subcommand per stage.

Each command lives in its own module with `HELP`, `add_arguments(parser)` and `run(args) -> int`;
command modules import heavy libraries inside `run`, so listing commands stays fast, and only the
module of the command asked for is imported to run it. A `UserError` anywhere becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from lpo_speech.errors import UserError

# name -> module; keep sorted by pipeline order.
COMMANDS: dict[str, str] = {
    "demo": "lpo_speech.commands.demo",
    "make-asr-data": "lpo_speech.commands.make_asr_data",
    "make-tts-data": "lpo_speech.commands.make_tts_data",
    "init-codec-lm": "lpo_speech.commands.init_codec_lm",
    "train-style-classifier": "lpo_speech.commands.train_style_classifier",
    "import-whisper-ct2": "lpo_speech.commands.import_whisper_ct2",
    "import-tts-lm": "lpo_speech.commands.import_tts_lm",
    "build-pairs": "lpo_speech.commands.build_pairs",
    "ref-logps": "lpo_speech.commands.ref_logps",
    "train": "lpo_speech.commands.train",
    "merge": "lpo_speech.commands.merge",
    "eval": "lpo_speech.commands.eval",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lpo-speech", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else argv
    # Only import the module of the command asked for (plus cheap help for the rest).
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, modname in COMMANDS.items():
        if name == wanted or wanted not in COMMANDS:  # bare `--help` lists every command's line
            mod = importlib.import_module(modname)
            p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
        else:
            sub.add_parser(name)
    # `key=value` overrides may follow flags (`train r.yaml --resume train.lr=1e-6`): collect strays.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args._run(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
