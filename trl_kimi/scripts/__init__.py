"""The subcommands of `trl-kimi` (see `trl_kimi.cli`), one module each, imported when run."""
