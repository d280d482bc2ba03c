"""`towerssl` command line: one subcommand per module, each exposing add_arguments(parser) and run(args)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from towerssl.errors import UsageError

# name -> (module, one-line help). Modules are imported only when their command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("towerssl.etl.generate", "write synthetic raw data (the embedded default dataset)"),
    "etl": ("towerssl.etl.job", "raw logs -> validated, encoded Delta tables"),
    "stats": ("towerssl.stats.job", "item popularity and the feature mutual-information matrix"),
    "train": ("towerssl.trainer.train", "train the two towers (logQ-corrected in-batch softmax + SSL)"),
    "evaluate": ("towerssl.trainer.evaluate_run", "Recall/NDCG@K by popularity slice vs a popularity baseline"),
    "demo": ("towerssl.demo", "the whole pipeline on the synthetic data (or MovieLens) with a report"),
    "export": ("towerssl.trainer.export", "item embeddings (Delta + FAISS), TorchScript user and item towers, item vocabulary, model card"),
    "embed-items": ("towerssl.trainer.embed_items", "embed new items with an exported run (training vocabulary, item tower) into Delta + FAISS"),
    "experiment": ("towerssl.experiment.runner", "a grid of variants x seeds over datasets and splits, tuned on valid, with a results table"),
}


def _parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="towerssl", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # only the chosen command's module is imported
            importlib.import_module(module).add_arguments(command_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("py4j", "petastorm"):  # their per-connection and per-dataset INFO lines drown the job's own
        logging.getLogger(chatty).setLevel(logging.WARNING)
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except (UsageError, FileNotFoundError) as error:
        print(f"towerssl {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
