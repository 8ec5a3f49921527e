"""`lpo-speech` command line: one subcommand per stage.

Each command lives in its own module with `HELP`, `add_arguments(parser)` and `run(args) -> int`;
command modules import heavy libraries inside `run`, so listing commands stays fast, and only the
module of the command asked for is imported to run it. A `UserError` anywhere becomes one line on stderr and exit status 2;
so does a command-line mistake (argparse's usage block is replaced by one line naming the flag and the
command's `--help`), and, as a last resort, a library error about a named file (an `OSError` with a
file name). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from typing import NoReturn

from lpo_speech.errors import UserError

# name -> module; keep sorted by pipeline order.
COMMANDS: dict[str, str] = {
    "demo": "lpo_speech.commands.demo",
    "make-asr-data": "lpo_speech.commands.make_asr_data",
    "make-tts-data": "lpo_speech.commands.make_tts_data",
    "init-codec-lm": "lpo_speech.commands.init_codec_lm",
    "train-style-classifier": "lpo_speech.commands.train_style_classifier",
    "import-whisper-ct2": "lpo_speech.commands.import_whisper_ct2",
    "init-audio-llm": "lpo_speech.commands.init_audio_llm",
    "import-tts-lm": "lpo_speech.commands.import_tts_lm",
    "sft-pairs": "lpo_speech.commands.sft_pairs",
    "build-pairs": "lpo_speech.commands.build_pairs",
    "ref-logps": "lpo_speech.commands.ref_logps",
    "train": "lpo_speech.commands.train",
    "merge": "lpo_speech.commands.merge",
    "eval": "lpo_speech.commands.eval",
    "export": "lpo_speech.commands.export",
    "study": "lpo_speech.commands.study",
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, `error: <flag>: <what> (see `lpo-speech CMD --help`)`,
    exit status 2; `--help` is argparse's own. Subcommand parsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        where, sep, what = message.partition(": ")
        if sep and where.startswith("argument "):  # "argument --batch-size: invalid ..." -> "--batch-size: invalid ..."
            message = f"{where[len('argument '):]}: {what}"
        message = " ".join(message.split())
        _launcher_error_file(f"error: {message} (see `{self.prog} --help`)")
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _launcher_error_file(line: str) -> None:
    """Under torchrun (torch.distributed.elastic), hand our one line to the launcher: it reads the file
    named by TORCHELASTIC_ERROR_FILE and shows the line as the failed rank's `traceback :` in its
    failure summary, instead of a pointer to its documentation. (torchrun still prints that summary,
    and its own traceback, after any child exits non-zero: the launcher offers no way to silence it.)"""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    data = {"message": {"message": line, "errorCode": 2,
                        "extraInfo": {"py_callstack": line, "timestamp": str(int(time.time()))}}}
    try:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f)
    except OSError:
        pass  # the launcher's summary then says "<N/A>"; our line is on stderr anyway


def _fail(line: str) -> int:
    """Print the one line of a user error, tell a torchrun launcher about it; exit status 2. Under a
    launcher every process that meets a bad setting fails with the same line: rank 0 prints it, the
    others hand theirs to the launcher only (its summary names each failed rank's line)."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(line, file=sys.stderr, flush=True)
    _launcher_error_file(line)
    return 2


def _library_error(e: BaseException) -> str | None:
    """The one line for a well-known library error about a named file, or None (a bug: traceback)."""
    if isinstance(e, OSError) and e.filename is not None:
        what = e.strerror or type(e).__name__
        target = f" -> {e.filename2}" if getattr(e, "filename2", None) else ""
        return f"{e.filename}{target}: {what}"
    if isinstance(e, UnicodeDecodeError):
        return (f"cannot decode text as {e.encoding} (byte {e.start}: {e.reason}); "
                "every text file lpo-speech reads is UTF-8")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="lpo-speech", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else argv
    # Only import the module of the command asked for (plus cheap help for the rest).
    wanted = next((a for a in argv if not a.startswith("-")), None)
    parsers: dict[str, argparse.ArgumentParser] = {}
    for name, modname in COMMANDS.items():
        if name == wanted or wanted not in COMMANDS:  # bare `--help` lists every command's line
            mod = importlib.import_module(modname)
            p = parsers[name] = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
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
            parsers.get(args.command, parser).error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args._run(args) or 0)
    except UserError as e:
        return _fail(f"error: {e}")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (OSError, UnicodeDecodeError) as e:  # last resort: a library's error about a named file
        line = _library_error(e)
        if line is None:
            raise
        return _fail(f"error: {line}")


if __name__ == "__main__":
    sys.exit(main())
