"""Hugging Face datasets: a hub id (pinned by ``revision``) or a local folder.

A local folder may be a ``save_to_disk`` folder or anything ``load_dataset`` reads (parquet files,
an imagefolder). Label names come from a ``ClassLabel`` column, or from the distinct values of a
string label column. Per-sample metadata is the row's other scalar columns (or those named in
``metadata_columns``). Image-association data (WinoGAViL) has, per row, a cue, a list of candidate
images with their names, and the names of the candidates that go with the cue.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from pydantic import Field
from torch.utils.data import Dataset

from evalbench.errors import EvalbenchError, MissingSplitError
from evalbench.hub import is_offline_error
from evalbench.sources.base import Association, MatchItem, SourceConfig, SplitData, check_item, data_fingerprint


class HFConfig(SourceConfig):
    path: str
    revision: str | None = None
    name: str | None = None
    image_column: str = "image"
    label_column: str | None = "label"
    caption_column: str | None = None  # retrieval: a list of captions per image
    id_column: str | None = None
    # Matching tasks: the candidates are the list in ``caption_column`` or one column each in
    # ``caption_columns``; ``label_column`` holds the index of the correct one, and with
    # ``label_column: null`` the first candidate is the correct one. ``image_columns`` names
    # the two images of a Winoground group (image j matches caption j).
    image_columns: list[str] | None = Field(default=None, min_length=2, max_length=2)
    caption_columns: list[str] | None = Field(default=None, min_length=2)
    subset_column: str | None = None
    # Per-sample metadata: these columns; default every column of plain values (strings,
    # numbers) other than the image, label, caption and id columns.
    metadata_columns: list[str] | None = None
    # Image association (type: association): per row a text cue, a list of candidate images in
    # image_column, their names in candidates_column, and the names that go with the cue.
    cue_column: str | None = None
    candidates_column: str | None = None
    answers_column: str | None = None


class HFImages(Dataset):
    def __init__(self, table, image_column: str, labels: list[int]):
        self.table = table.select_columns([image_column])
        self.image_column = image_column
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.table[i][self.image_column].convert("RGB"), self.labels[i]


class HFItemImages(Dataset):
    """The images of matching items: row ``i // k``, column ``columns[i % k]``."""

    def __init__(self, table, columns: list[str]):
        self.table = table.select_columns(columns)
        self.columns = columns

    def __len__(self) -> int:
        return len(self.table) * len(self.columns)

    def __getitem__(self, i: int):
        row, j = divmod(i, len(self.columns))
        return self.table[row][self.columns[j]].convert("RGB"), 0


class HFImageLists(Dataset):
    """Images of a column holding a list of images per row, flattened: item i is image
    ``positions[i] = (row, j)``."""

    def __init__(self, table, image_column: str, positions: list[tuple[int, int]]):
        self.table = table.select_columns([image_column])
        self.image_column = image_column
        self.positions = positions
        self.labels = [0] * len(positions)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int):
        row, j = self.positions[i]
        return self.table[row][self.image_column][j].convert("RGB"), 0


_SCRIPT_ERROR = re.compile(r"Dataset scripts are no longer supported, but found (\S+)")


def _loading_script(error: BaseException) -> str | None:
    """The script's file name when ``datasets`` refused a hub dataset for being a loading
    script (datasets >= 4 raises a bare RuntimeError saying so), else None."""
    found = _SCRIPT_ERROR.search(str(error)) if isinstance(error, RuntimeError) else None
    return found.group(1) if found else None


class HFSource:
    Config = HFConfig

    def __init__(self, config: HFConfig, task_dir: Path, cache_dir: Path):
        self.config = config
        self.resolved = ""  # for hub data: the folder datasets resolved it to (see _load)
        local = task_dir / config.path
        self.local = local.resolve() if local.exists() else None
        if self.local is None and (config.path.startswith((".", "/")) or config.path.count("/") > 1):
            raise EvalbenchError(f"dataset.path: folder not found: {local.resolve()}")

    def _load(self, split: str):
        import datasets

        cfg = self.config
        try:
            if self.local is not None and (self.local / "dataset_dict.json").is_file():
                ds = datasets.load_from_disk(str(self.local))
                if split not in ds:
                    raise MissingSplitError(split, list(ds), str(self.local))
                return ds[split]
            if self.local is not None and (self.local / "state.json").is_file():
                return datasets.load_from_disk(str(self.local))
            where = str(self.local) if self.local is not None else cfg.path
            table = datasets.load_dataset(where, cfg.name, split=split, revision=cfg.revision)
            if self.local is None and table.cache_files:
                # datasets stores a hub dataset under <name>/<config id>/<version>/<hash>, where
                # the config id and hash follow the files it resolved (their commit and etags):
                # that folder changes when data is pushed to the branch a task names, and is the
                # same for every split, so the test split keeps one cache key across modes.
                self.resolved = "/".join(Path(table.cache_files[0]["filename"]).parent.parts[-4:])
            return table
        except MissingSplitError:
            raise
        except ValueError as e:
            if "split" in str(e).lower():
                raise MissingSplitError(split, self._split_names(str(e)), cfg.path) from None
            raise
        except Exception as e:  # noqa: BLE001
            script = _loading_script(e)
            if script:
                at = f" at revision {cfg.revision}" if cfg.revision else ""
                raise EvalbenchError(
                    f"dataset.path: {cfg.path}{at} is a loading-script dataset ({script}), which datasets "
                    f"{datasets.__version__} cannot build (datasets 4 dropped loading scripts); build a local copy "
                    "with datasets<4 (save_to_disk) and point dataset.path at it, as the task file's comments say"
                ) from None
            if is_offline_error(e):
                raise EvalbenchError(
                    f"dataset.path: {cfg.path} is not in the local Hugging Face cache and the hub cannot be "
                    "reached (offline). Run once with network access, or point dataset.path to a local copy."
                ) from None
            raise

    def _split_names(self, message: str) -> list[str]:
        """The dataset's split names: from datasets' own "Unknown split" message when it lists
        them (no second round trip to the hub), else asked of datasets; [] if neither works."""
        listed = re.search(r"one of (\[.*?\])", message)
        if listed:
            try:
                return [str(s) for s in ast.literal_eval(listed.group(1))]
            except (ValueError, SyntaxError):
                pass
        import datasets

        where = str(self.local) if self.local is not None else self.config.path
        try:
            return list(datasets.get_dataset_split_names(where, self.config.name, revision=self.config.revision))
        except Exception:  # noqa: BLE001 - only a hint for the message; offline, say nothing
            return []

    def load_split(self, split: str) -> SplitData:
        table = self._load(split)
        cfg = self.config
        label_column = None if cfg.caption_column else cfg.label_column
        for column in (cfg.image_column, label_column if not cfg.cue_column else None, cfg.caption_column,
                       cfg.id_column, cfg.cue_column):
            if column and column not in table.column_names:
                raise EvalbenchError(
                    f"dataset: column '{column}' not in {cfg.path} (columns: {', '.join(table.column_names)})"
                )
        ids = [str(v) for v in table[cfg.id_column]] if cfg.id_column else None
        if cfg.cue_column:
            return self._associations(table, ids)
        metadata = self._metadata(table)
        if cfg.caption_column:
            captions = [[c] if isinstance(c, str) else list(c) for c in table[cfg.caption_column]]
            labels = [0] * len(captions)
            return SplitData(HFImages(table, cfg.image_column, labels), labels, None, ids, captions, metadata)
        if label_column is None:
            raise EvalbenchError("dataset.label_column: required for classification data")
        feature = table.features[cfg.label_column]
        raw = table[cfg.label_column]
        inner = getattr(feature, "feature", None)  # a list of ClassLabel: multi-label data
        if hasattr(feature, "names"):
            names, labels = list(feature.names), [int(v) for v in raw]
        elif hasattr(inner, "names"):
            names, labels = list(inner.names), [[int(x) for x in v] for v in raw]
        elif raw and isinstance(raw[0], str):
            names = sorted(set(raw))
            index = {n: i for i, n in enumerate(names)}
            labels = [index[v] for v in raw]
        else:
            names, labels = None, [int(v) for v in raw]
        return SplitData(HFImages(table, cfg.image_column, labels), labels, names, ids, metadata=metadata)

    def _metadata(self, table) -> list[dict] | None:
        """The metadata columns of every row (read from the arrow table, no image is decoded)."""
        cfg = self.config
        if cfg.metadata_columns is not None:
            columns = cfg.metadata_columns
            missing = [c for c in columns if c not in table.column_names]
            if missing:
                raise EvalbenchError(
                    f"dataset.metadata_columns: column '{missing[0]}' not in {cfg.path} "
                    f"(columns: {', '.join(table.column_names)})"
                )
        else:
            taken = {cfg.image_column, cfg.label_column, cfg.caption_column, cfg.id_column}
            columns = [c for c, f in table.features.items()
                       if c not in taken and type(f).__name__ in ("Value", "ClassLabel")]
        if not columns:
            return None
        return table.select_columns(columns).to_pandas().to_dict("records")

    def _associations(self, table, ids: list[str] | None) -> SplitData:
        """Association rows flattened: one dataset item per candidate image, and per row an
        Association whose answers are the candidates named in answers_column."""
        cfg = self.config
        for key in ("candidates_column", "answers_column"):
            column = getattr(cfg, key)
            if column is None:
                raise EvalbenchError(f"dataset.{key}: required with cue_column")
            if column not in table.column_names:
                raise EvalbenchError(f"dataset.{key}: column '{column}' not in {cfg.path}")
        positions, associations = [], []
        for row, (cue, candidates, answers) in enumerate(
            zip(table[cfg.cue_column], table[cfg.candidates_column], table[cfg.answers_column])
        ):
            unknown = [a for a in answers if a not in candidates]
            if unknown:
                raise EvalbenchError(
                    f"dataset.{cfg.answers_column}: row {row} names '{unknown[0]}', not one of its candidates"
                )
            start = len(positions)
            positions += [(row, j) for j in range(len(candidates))]
            answer_set = set(answers)
            associations.append(Association(
                str(cue), tuple(range(start, len(positions))),
                tuple(j for j, c in enumerate(candidates) if c in answer_set),
            ))
        labels = [0] * len(positions)
        if ids is not None:
            ids = [f"{ids[row]}/{j}" for row, j in positions]
        return SplitData(HFImageLists(table, cfg.image_column, positions), labels, None, ids,
                         associations=associations)

    def load_matching(self, split: str) -> SplitData:
        """Matching items, one per row, from the columns the config names; EvalbenchError
        naming the dataset, row and field of the first malformed item."""
        table = self._load(split)
        cfg = self.config
        image_columns = cfg.image_columns or [cfg.image_column]
        if cfg.caption_columns is None and cfg.caption_column is None:
            raise EvalbenchError("dataset.caption_columns: matching data needs caption_columns or caption_column")
        group = len(image_columns) == 2
        label_column = None if group else cfg.label_column  # in a group, image j matches caption j
        wanted = [*image_columns, *(cfg.caption_columns or [cfg.caption_column]), label_column,
                  cfg.subset_column, cfg.id_column]
        for column in wanted:
            if column and column not in table.column_names:
                hint = " (label_column: null if the first candidate is the correct one)" if column == label_column else ""
                raise EvalbenchError(
                    f"dataset: column '{column}' not in {cfg.path} (columns: {', '.join(table.column_names)}){hint}"
                )
        if cfg.caption_columns:
            captions = list(zip(*(table[c] for c in cfg.caption_columns)))
        else:
            captions = [[c] if isinstance(c, str) else c for c in table[cfg.caption_column]]
        labels = table[label_column] if label_column else [0] * len(captions)
        subsets = table[cfg.subset_column] if cfg.subset_column else [None] * len(captions)
        k = len(image_columns)
        items = []
        for row, (caps, label, subset) in enumerate(zip(captions, labels, subsets)):
            check_item(image_columns, list(caps) if caps is not None else None, label, f"{cfg.path}: row {row}")
            images = tuple(range(row * k, row * k + k))
            items.append(MatchItem(images, tuple(caps), None if group else int(label),
                                   None if subset is None else str(subset)))
        ids = None
        if cfg.id_column:
            ids = [f"{v}/{j}" for v in table[cfg.id_column] for j in range(k)]
        return SplitData(HFItemImages(table, image_columns), [0] * (len(items) * k), None, ids, items=items)

    def fingerprint(self) -> str:
        """Hub data also hashes the folder ``datasets`` resolved it to, so a branch such as
        ``main`` that moves never meets features cached from its old data."""
        cfg = self.config
        return data_fingerprint(f"{cfg.path}@{cfg.revision}:{cfg.name}:{self.resolved}", self.local)

    def classnames(self) -> list[str] | None:
        return None

    def templates(self) -> list[str] | None:
        return None
