"""Helpers shared by the command-line tests: run a command, read its JSON and CSV."""

from __future__ import annotations

import csv
import io
import json

from lora_theory.cli import main


def run(capsys, *arguments: str) -> tuple[int, str, str]:
    """Run ``lora-theory ARGUMENTS`` in process; return the exit status, stdout and stderr."""
    status = main(list(arguments))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def reject_constant(token: str):
    raise AssertionError(f"JSON output contains the non-standard constant {token}")


def load_json(text: str) -> dict:
    """Parse strict JSON: NaN and Infinity fail the test."""
    return json.loads(text, parse_constant=reject_constant)


def split_csv(text: str) -> tuple[list[str], list[dict[str, str]]]:
    """Return the comment lines (without '# ') and the CSV rows after them."""
    lines = text.splitlines()
    comments = [line[2:] for line in lines if line.startswith("# ")]
    body = "\n".join(line for line in lines if not line.startswith("#"))
    return comments, list(csv.DictReader(io.StringIO(body)))
