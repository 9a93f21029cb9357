"""`kind: file` (local jsonl, json, parquet or csv) and `kind: hub` (a Hugging Face dataset name),
both read with `datasets`, with a field mapping from the data's columns to an item.

    source:
      kind: file
      path: gsm8k_test.jsonl            # relative to the suite file
      fields:
        prompt: question                # required: the question the model sees
        answer: {field: answer, pattern: "####\\s*(.+?)\\s*$"}   # required: what the scorer checks
        target: answer                  # optional: a reference solution (SFT target, SPoT's oracle)
        id: id                          # optional: a stable id column (default: a hash of the prompt)
      meta: [choices]                   # optional: columns passed to the scorer in item.meta

A field is a column name, or {field: COLUMN, pattern: REGEX} keeping the regex's first group
(GSM8K's answer after "####"). `kind: hub` takes `dataset`, optional `config` and `split`
(default test); it works where the datasets cache or the network has the dataset.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from plasticity_bench.harness.core.errors import BenchError
from plasticity_bench.harness.core.items import Item
from plasticity_bench.tasks.sources import SOURCES, Source, dedupe, item_id

FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
ITEM_FIELDS = ("prompt", "answer", "target", "id")


class MappedSource(Source):
    """Rows of a `datasets` table turned into items through `fields` (and `meta`)."""

    requires = ("datasets",)  # it parses the rows

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.field_mapping()  # a bad mapping is an error when the suite is read, not when data is
        if not isinstance(self.options.get("meta", []), list):
            raise BenchError(f"{self.where}: meta must list column names")

    def rows(self) -> Any:
        raise NotImplementedError

    def provided_meta(self) -> frozenset[str]:
        return frozenset(str(column) for column in self.options.get("meta", []))

    def load(self, name: str, split: str, family: str, seed: int) -> list[Item]:
        fields = self.field_mapping()
        table = self.rows()
        columns = set(table.column_names)
        for key, (column, _) in fields.items():
            if column not in columns:
                raise BenchError(
                    f"{self.where}: fields.{key} names column {column!r}, which the data lacks; "
                    f"its columns: {', '.join(sorted(columns))}"
                )
        meta_columns = list(self.options.get("meta", []))
        for column in meta_columns:
            if column not in columns:
                raise BenchError(
                    f"{self.where}: meta names column {column!r}, which the data lacks; "
                    f"its columns: {', '.join(sorted(columns))}"
                )
        items = []
        for index, row in enumerate(table):
            values = {key: self.extract(row, key, column, pattern, index) for key, (column, pattern) in fields.items()}
            prompt, answer = values["prompt"], values["answer"]
            key = values.get("id") or prompt
            meta = {column: _plain(row[column]) for column in meta_columns}
            items.append(
                Item(item_id(name, split, key), family, name, split, prompt, values.get("target", answer), answer, meta)
            )
        return dedupe(items, self.where)

    def field_mapping(self) -> dict[str, tuple[str, str | None]]:
        raw = self.options.get("fields")
        if not isinstance(raw, dict):
            raise BenchError(
                f"{self.where}: a {self.name} source needs a field mapping `fields: {{prompt: COLUMN, answer: COLUMN}}`"
            )
        unknown = sorted(set(raw) - set(ITEM_FIELDS))
        if unknown:
            raise BenchError(f"{self.where}: unknown field '{unknown[0]}' in fields; known: {', '.join(ITEM_FIELDS)}")
        for needed in ("prompt", "answer"):
            if needed not in raw:
                raise BenchError(f"{self.where}: the field mapping lacks '{needed}' (which column holds the {needed}?)")
        mapping: dict[str, tuple[str, str | None]] = {}
        for key, spec in raw.items():
            if isinstance(spec, str):
                mapping[key] = (spec, None)
            elif isinstance(spec, dict) and isinstance(spec.get("field"), str) and set(spec) <= {"field", "pattern"}:
                pattern = spec.get("pattern")
                if pattern is not None:
                    try:
                        re.compile(pattern)
                    except re.error as error:
                        raise BenchError(f"{self.where}: fields.{key}.pattern is not a valid regex ({error})") from None
                mapping[key] = (spec["field"], pattern)
            else:
                raise BenchError(
                    f"{self.where}: fields.{key} must be a column name or {{field: COLUMN, pattern: REGEX}}"
                )
        return mapping

    def extract(self, row: dict[str, Any], key: str, column: str, pattern: str | None, index: int) -> str:
        value = row[column]
        # A missing or blank value is an error, not an item: str(None) would become the answer "None",
        # and an empty question or answer scores every checkpoint against nothing.
        if value is None:
            raise BenchError(
                f"{self.where}: row {index}: its {column!r} value (fields.{key}) is missing (null); "
                f"every row needs a {key}: fill it in or delete the row"
            )
        text = (
            value
            if isinstance(value, str)
            else json.dumps(_plain(value))
            if isinstance(value, (list, dict))
            else str(value)
        )
        if pattern is not None:
            match = re.search(pattern, text, flags=re.MULTILINE | re.DOTALL)
            if not match:
                raise BenchError(
                    f"{self.where}: row {index}: fields.{key}.pattern does not match its {column!r} value {text[:60]!r}"
                )
            text = (match.group(1) if match.groups() else match.group(0)) or ""  # an optional group may match nothing
        if not text.strip():
            how = (
                f"fields.{key}.pattern keeps nothing of its {column!r} value"
                if pattern
                else f"its {column!r} value is empty"
            )
            raise BenchError(
                f"{self.where}: row {index}: {how} (fields.{key}); "
                f"every row needs a {key}: fill it in or delete the row"
            )
        return text


@SOURCES.register("file", "a local jsonl, json, parquet or csv file with a field mapping")
class LocalFile(MappedSource):
    required = ("path", "fields")
    optional = ("meta",)

    def rows(self) -> Any:
        path = self.path_option("path")
        kind = FORMATS.get(path.suffix.lower())
        if kind is None:
            raise BenchError(f"{self.where}: {path} is not a data file this reads ({', '.join(FORMATS)})")
        return load_table(kind, path, self.where)

    def data_files(self) -> list[Path]:
        return [self.path_option("path")]


@SOURCES.register("hub", "a Hugging Face dataset by name (from the datasets cache or the network)")
class HubDataset(MappedSource):
    required = ("dataset", "fields")
    optional = ("config", "split", "meta")

    def rows(self) -> Any:
        import datasets

        datasets.disable_progress_bars()
        name, config, split = self.options["dataset"], self.options.get("config"), self.options.get("split", "test")
        try:
            return datasets.load_dataset(name, config, split=split)
        except Exception as error:  # offline and not cached, no such dataset, no such split: one line, with the way out
            first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            raise BenchError(
                f"{self.where}: hub dataset {name!r} ({config or 'default'} config, {split} split) "
                f"is not available here ({first}); download it where there is network, or point the suite at a "
                "local copy with "
                f"`source: {{kind: file, path: FILE, fields: ...}}`"
            ) from None

    def data_files(self) -> list[Path]:
        """The dataset's Arrow files in the datasets cache (what `load` reads); loading it is what finds them."""
        return sorted(Path(entry["filename"]) for entry in self.rows().cache_files)


def load_table(kind: str, path: Path, where: str) -> Any:
    import datasets

    datasets.disable_progress_bars()  # the harness's own bars say what is happening
    if path.stat().st_size == 0 or (kind == "json" and path.suffix == ".jsonl" and not path.read_text().strip()):
        raise BenchError(f"{where}: the set has no items ({path} is empty)")
    try:
        return datasets.load_dataset(kind, data_files=str(path), split="train")
    except Exception as error:
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise BenchError(f"{where}: cannot read {path} as {kind} ({first})") from None


def _plain(value: Any) -> Any:
    """JSON-able copy of a datasets value (item meta is stored as JSON)."""
    return json.loads(json.dumps(value, default=str))
