"""The schema of a task file. Strict: an unknown key anywhere is an error."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

RETRIEVAL_METRICS = (
    "mean_recall@1",
    *(f"{d}_retrieval_recall@{k}" for d in ("image", "text") for k in (1, 5, 10)),
)
# Matching tasks (compositionality): ``acc`` for one image against candidate captions, the
# Winoground scores for 2x2 groups. See evalbench.metrics.
MATCHING_METRICS = ("acc", "text_score", "image_score", "group_score")
# Metrics of groups read from per-sample metadata (``group_by``); they need a group field.
GROUP_METRICS = ("worst_group_acc1", "worst_group_acc5")
# Image-association tasks (WinoGAViL): mean Jaccard index over cues with 5-6 / 10-12 candidates.
ASSOCIATION_METRICS = ("jaccard_score_10-12", "jaccard_score_5-6", "avg_jaccard_score")
MainMetric = Literal[
    "acc1", "acc5", "mean_per_class_recall", "map_11pt", "roc_auc", "f1_macro",
    "worst_group_acc1", "worst_group_acc5",
    "acc", "text_score", "image_score", "group_score",
    "mean_recall@1",
    "image_retrieval_recall@1", "image_retrieval_recall@5", "image_retrieval_recall@10",
    "text_retrieval_recall@1", "text_retrieval_recall@5", "text_retrieval_recall@10",
    "jaccard_score_10-12", "jaccard_score_5-6", "avg_jaccard_score",
]
# DataComp's names (tasklist.yml, from WILDS' metric fields) for the same metrics, accepted in
# ``main_metric`` so a task can be written as DataComp lists it; the record keeps the name on
# the right. acc_worst_region and acc_wg are both the lowest per-group top-1 accuracy (DataComp
# names it after FMoW's region grouping, or WILDS' generic "worst group").
METRIC_ALIASES = {
    "acc_worst_region": "worst_group_acc1",
    "acc_wg": "worst_group_acc1",
    "acc_top5_wg": "worst_group_acc5",
    "F1-macro_all": "f1_macro",
}
TaskType = Literal["classification", "multilabel", "retrieval", "matching", "association"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ValFraction(_Strict):
    """Validation data carved out of the train split: a seeded, stratified fraction."""

    fraction: float = Field(gt=0, lt=1)
    seed: int = 0


SplitName = Annotated[str, Field(min_length=1)]


class Splits(_Strict):
    test: SplitName
    train: SplitName | None = None
    val: SplitName | ValFraction | None = None

    @model_validator(mode="after")
    def _val_needs_train(self) -> "Splits":
        if isinstance(self.val, ValFraction) and self.train is None:
            raise ValueError("val as a fraction of train needs a train split")
        return self


class TaskSpec(_Strict):
    """A resolved task (after ``include:`` merging).

    ``classnames[i]`` is the name used in prompts for class i. Labels in the data are matched to
    classes by name: against ``label_names`` when given (the data's own names, same order as
    ``classnames``), else against ``classnames``. ``label_match: index`` is the explicit opt-in for
    data whose labels are bare integers in the order of ``classnames``.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    version: str
    description: str
    type: TaskType = "classification"
    license: str | None = None
    citation: str | None = None
    unavailable: str | None = None  # why no public copy can be loaded; the task is listed, not run
    dataset: dict  # validated by the source's own Config, see evalbench.sources
    splits: Splits
    classnames: list[str] | None = Field(default=None, min_length=2)
    label_names: list[str] | None = None
    label_match: Literal["name", "index"] = "name"
    class_subset: list[int] | None = Field(default=None, min_length=2)  # indices into classnames
    templates: list[str] | None = Field(default=None, min_length=1)
    main_metric: MainMetric | None = None  # default: acc1, mean_recall@1 for retrieval, acc for matching, jaccard_score_10-12 for association
    # Matching tasks only: subset name -> keys merged over ``dataset`` (e.g. another path and
    # revision), for benchmarks published as one dataset per subset. Every item of a part
    # belongs to that subset.
    subsets: dict[str, dict] | None = Field(default=None, min_length=1)
    # Per-sample metadata (see SplitData.metadata): the field whose value puts a test image in a
    # group (worst-group metrics, per-group values in the record), the groups the data must
    # contain (each needs at least one image, so a worst-group number never silently skips
    # one), and a field to read the class label from instead of the source's own label.
    group_by: str | None = None
    groups: list[str] | None = Field(default=None, min_length=1)
    label_field: str | None = None

    @field_validator("main_metric", mode="before")
    @classmethod
    def _metric_alias(cls, v):
        return METRIC_ALIASES.get(v, v) if isinstance(v, str) else v

    @field_validator("groups", mode="before")
    @classmethod
    def _groups_as_str(cls, v):
        # Group values may be written as numbers (WILDS codes regions as integers).
        return [str(g) for g in v] if isinstance(v, list) else v

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_str(cls, v):
        return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v

    @field_validator("templates")
    @classmethod
    def _templates_have_slot(cls, templates):
        for i, t in enumerate(templates or []):
            if "{c}" not in t:
                raise ValueError(f"template {i} has no {{c}}: {t!r}")
        return templates

    @model_validator(mode="after")
    def _metric_fits_type(self) -> "TaskSpec":
        retrieval = self.type == "retrieval"
        matching = self.type == "matching"
        association = self.type == "association"
        if self.main_metric is None:
            default = ("mean_recall@1" if retrieval else "acc" if matching
                       else "jaccard_score_10-12" if association else "acc1")
            object.__setattr__(self, "main_metric", default)
        if association != (self.main_metric in ASSOCIATION_METRICS):
            raise ValueError(f"main_metric: {self.main_metric} does not apply to a {self.type} task")
        if association and (self.classnames or self.templates or self.class_subset):
            raise ValueError("type: association tasks take cues and candidate images from the data, not classnames or templates")
        if self.main_metric in GROUP_METRICS and self.group_by is None:
            raise ValueError(f"main_metric: {self.main_metric} needs group_by (the metadata field of the groups)")
        if self.groups is not None and self.group_by is None:
            raise ValueError("groups: needs group_by")
        if retrieval != (self.main_metric in RETRIEVAL_METRICS):
            raise ValueError(f"main_metric: {self.main_metric} does not apply to a {self.type} task")
        if matching != (self.main_metric in MATCHING_METRICS):
            raise ValueError(f"main_metric: {self.main_metric} does not apply to a {self.type} task")
        if (retrieval or matching) and (self.classnames or self.templates or self.class_subset):
            raise ValueError(f"type: {self.type} tasks take captions from the data, not classnames or templates")
        if self.subsets is not None and not matching:
            raise ValueError("subsets: only matching tasks have subsets")
        for name in self.subsets or {}:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", str(name)):
                raise ValueError(f"subsets: {name!r} is not a valid subset name (letters, digits, _ . -)")
        multilabel = self.type == "multilabel"
        if multilabel != (self.main_metric == "map_11pt"):
            raise ValueError("main_metric: map_11pt is the metric of multilabel tasks, and only of them")
        n = len(self.class_subset or self.classnames or [])
        if self.main_metric == "roc_auc" and n not in (0, 2):
            raise ValueError(f"main_metric: roc_auc needs 2 classes, the task has {n}")
        return self

    @model_validator(mode="after")
    def _subset_in_range(self) -> "TaskSpec":
        if self.class_subset is not None:
            if self.classnames is None:
                raise ValueError("class_subset needs classnames")
            bad = [i for i in self.class_subset if not 0 <= i < len(self.classnames)]
            if bad:
                raise ValueError(f"class_subset: index {bad[0]} outside classnames (0..{len(self.classnames) - 1})")
            if len(set(self.class_subset)) != len(self.class_subset):
                raise ValueError("class_subset: repeated index")
        return self

    @model_validator(mode="after")
    def _label_names_align(self) -> "TaskSpec":
        if self.label_names is not None:
            if self.classnames is None:
                raise ValueError("label_names needs classnames")
            if len(self.label_names) != len(self.classnames):
                raise ValueError(
                    f"label_names has {len(self.label_names)} entries but classnames has {len(self.classnames)}"
                )
        return self
