"""What the commands read (texts from arguments, text files, JSONL) and write (JSON, rich tables)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer


def read_records(path: str, fields: tuple[str, ...] = ("text",)) -> list[dict[str, str]]:
    """Rows of a file ('-' for stdin): JSONL objects holding `fields`, or, when the first line is not a
    JSON object and one field is asked for, one plain-text row a line. Blank lines are skipped."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise typer.BadParameter(f"cannot read {path!r}: {getattr(err, 'strerror', None) or err}.") from None
    lines = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines or not lines[0][1].lstrip().startswith("{"):
        if len(fields) > 1:
            raise typer.BadParameter(f"{path} must be JSONL: one object with {' and '.join(map(repr, fields))} a line.")
        return [{fields[0]: line} for _, line in lines]
    records = []
    for number, line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise typer.BadParameter(f"{path}:{number} is not valid JSON ({err.msg}).") from None
        missing = [field for field in fields if not isinstance(record, dict) or not isinstance(record.get(field), str)]
        if missing:
            raise typer.BadParameter(f"{path}:{number} needs a string field {missing[0]!r}.")
        records.append({field: record[field] for field in fields})
    return records


def gather_texts(texts: list[str] | None, file: str | None, what: str = "texts") -> list[str]:
    """Texts given as arguments followed by those of --file; none at all is a usage error."""
    gathered = list(texts or []) + ([record["text"] for record in read_records(file)] if file else [])
    if not gathered:
        raise typer.BadParameter(f"No {what} given: pass them as arguments, or --file FILE with one text a line "
                                 f"(or JSONL objects with a \"text\" field).", param_hint=what.upper())
    return gathered


def emit_json(value: Any, indent: int | None = 2) -> None:
    """One JSON document on stdout."""
    typer.echo(json.dumps(value, ensure_ascii=False, indent=indent))


def shorten(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def print_table(columns: list[str], rows: list[list[Any]], title: str | None = None, sections: list[int] = (),
                show_header: bool = True) -> None:
    """A rich table on stdout; floats to 4 decimals; a rule after each row index in `sections`."""
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns, title=title, title_justify="left", show_header=show_header)
    for index, row in enumerate(rows):
        cells = [f"{cell:.4f}" if isinstance(cell, float) else str(cell) for cell in row]
        table.add_row(*cells, end_section=index in sections)
    Console().print(table)


def print_fields(fields: dict[str, Any], title: str | None = None) -> None:
    """A two-column key/value table (nested dicts and lists rendered inline)."""
    def show(value: Any) -> str:
        if isinstance(value, dict):
            return ", ".join(f"{key}: {item}" for key, item in value.items()) or "-"
        if isinstance(value, (list, tuple)):
            return ", ".join(map(str, value)) or "-"
        return "-" if value is None else str(value)

    print_table(["field", "value"], [[key, show(value)] for key, value in fields.items()], title=title, show_header=False)
