"""`lpo-speech` command line: one subcommand per stage.

Each command lives in its own module with `HELP`, `add_arguments(parser)` and `run(args) -> int`;
command modules import heavy libraries inside `run`, so listing commands stays fast, and only the
module of the command asked for is imported to run it. A `UserError` anywhere becomes one line on stderr and exit status 2;
so does a command-line mistake (argparse's usage block is replaced by one line naming the flag and the
command's `--help`), and, as a last resort, a library error about a named file (an `OSError` with a
file name). Anything else is a bug and keeps its traceback. Under torchrun, a failure in any process
reaches the user as that one line from rank 0, naming the rank (lpo_speech.distributed).
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
        line = f"error: {message} (see `{self.prog} --help`)"
        _launcher_error_file(line)
        # The same command line reaches every process of a launch: rank 0 says it once.
        self.exit(2, f"{line}\n" if int(os.environ.get("RANK", "0")) == 0 else None)


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
    """Show the one line of a user error and tell a torchrun launcher about it; exit status 2. Under a
    launcher the line reaches the user once, from rank 0, naming the rank when another rank failed,
    and the other processes stop (lpo_speech.distributed.report_failure)."""
    from lpo_speech.distributed import report_failure

    _launcher_error_file(line)
    report_failure(line)
    return 2


def _unexpected(e: BaseException) -> bool:
    """An unexpected exception under a launcher. True: it is the echo of another process's failure (a
    collective that lost its peer), to end quietly with status 2. Otherwise a bug: in a process other
    than rank 0, rank 0 shows one line naming the rank, and the traceback prints here as well."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    from lpo_speech.distributed import failed_elsewhere, report_failure
    from lpo_speech.errors import clip

    if failed_elsewhere():
        return True
    if int(os.environ.get("RANK", "0")) != 0:
        report_failure(f"error: {type(e).__name__}: {clip(str(e))} (a bug: the failed process's traceback "
                       "follows)")
        return failed_elsewhere()
    return False


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
            if _unexpected(e):
                return 2
            raise
        return _fail(f"error: {line}")
    except Exception as e:
        if _unexpected(e):
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
