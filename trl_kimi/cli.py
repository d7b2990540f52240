"""
The `trl-kimi` command: `train`, `long2short`, `eval` and `verify`, each a module of `trl_kimi.scripts` imported only
when its subcommand runs, so that `trl-kimi --help` answers without importing torch.

Subcommands parse their flags with TRL's `TrlParser`, as `trl grpo` does: every dataclass field is a flag with its
help (`trl-kimi train --help` lists them all), and `--config run.yaml` sets any of them from a YAML file (an `env:`
mapping there sets environment variables); flags given on the command line win over the file.

```bash
trl-kimi train --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name openai/gsm8k --dataset_config main \\
    --output_dir Qwen2.5-0.5B-Kimi --tau 0.1 --num_generations 8 --reward math length_penalty
trl-kimi eval --model_name_or_path Qwen2.5-0.5B-Kimi --dataset_name HuggingFaceH4/MATH-500 \\
    --num_samples 8 --k 1 8 --output_dir eval-math500 --push_results
trl-kimi verify --input_file eval-math500/samples.jsonl --verifier math
trl-kimi examples  # where the example scripts and accelerate configs are installed
```
"""

import importlib
import sys
from pathlib import Path


# name -> (module of trl_kimi.scripts with a `main(argv, prog) -> int`, one-line description)
COMMANDS = {
    "train": ("trl_kimi.scripts.train", "Kimi k1.5 RL (online mirror descent) of a model on a dataset."),
    "long2short": ("trl_kimi.scripts.long2short", "Long2short RL: shorten a long-CoT model's answers (Kimi §2.4)."),
    "eval": ("trl_kimi.scripts.evaluate", "avg@n, pass@k and completion lengths on MATH-500, GSM8K, AIME, ..."),
    "verify": ("trl_kimi.scripts.verify", "Score a JSON Lines file of answers with the math or code verifier."),
    "curate": ("trl_kimi.scripts.curate", "Curate an RL prompt set: formats, duplicates, guessable, pass rates."),
}

USAGE = "usage: trl-kimi {" + ",".join([*COMMANDS, "examples"]) + "} [--config CONFIG.yaml] [--<field> VALUE ...]"


def examples_dir() -> Path:
    """The example scripts and `accelerate_configs/`: shipped in the wheel as `trl_kimi.examples`, or the
    repository's `examples/` in a source checkout.

    ```python
    >>> (examples_dir() / "accelerate_configs" / "fsdp2.yaml").is_file()
    True

    ```
    """
    installed = Path(__file__).resolve().parent / "examples"  # in the wheel: trl_kimi/examples
    return installed if installed.is_dir() else Path(__file__).resolve().parents[1] / "examples"


def _help() -> str:
    lines = [USAGE, "", "The Kimi k1.5 recipe on TRL, from the command line.", "", "commands:"]
    lines += [f"  {name:<11} {description}" for name, (_, description) in COMMANDS.items()]
    lines += [f"  {'examples':<11} Print where the example scripts and accelerate configs are."]
    lines += ["", "`trl-kimi <command> --help` lists every flag of a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run `trl-kimi <command> ...`; returns the exit status (0 success, 1 bad input, 2 bad usage)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_help())
        return 0
    if argv[0] == "--version":
        from . import __version__

        print(f"trl-kimi {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name == "examples":
        print(examples_dir())
        return 0
    if name not in COMMANDS:
        print(
            f"{USAGE}\ntrl-kimi: error: unknown command {name!r}; choose one of {', '.join(COMMANDS)}.",
            file=sys.stderr,
        )
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return module.main(rest, prog=f"trl-kimi {name}") or 0
    except (ValueError, FileNotFoundError, ImportError) as error:
        # Bad input (unknown model, missing column, n < 1, ...): the message says what and how to fix; no traceback.
        print(f"trl-kimi {name}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
