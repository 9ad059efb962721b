"""What several commands share: the kernel options (vmtest/kernel_choice.py) and
numbers."""

from __future__ import annotations

import argparse
from typing import Any

from vmtest import kernel_choice
from vmtest.errors import ConfigError

Sub = argparse._SubParsersAction  # the type argparse gives add_subparsers()


def add_accel_arg(p: argparse.ArgumentParser) -> None:
    kernel_choice.add_arguments(p, ("accel",))


def add_kernel_args(p: argparse.ArgumentParser,
                    names: tuple[str, ...] = kernel_choice.KERNEL) -> None:
    kernel_choice.add_arguments(p, names)


def kernel_choice_of(args: argparse.Namespace) -> kernel_choice.KernelChoice:
    """The kernel the options name (vmtest/kernel_choice.py has the one rule)."""
    return kernel_choice.KernelChoice.from_options(lambda name: getattr(args, name, None))


def number(text: str, option: str, kind: type[int] | type[float]) -> Any:
    """--OPTION's value of `kind` (ints from 1, floats from 0): ConfigError else."""
    what = "a whole number" if kind is int else "a number"
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(f"{option} {text!r} is not {what}",
                          hint=f"{option} auto, or {what}") from None
    if value < 0 or (kind is int and value < 1):
        raise ConfigError(f"{option} {text!r} is out of range")
    return value
