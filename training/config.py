"""The training configuration (`config/training.yaml`): label definition, split, LightGBM
parameters, evaluation costs, promotion tolerances and where the boosting runs (`compute`: this
process or a Dask cluster), validated into one frozen object.

Every section has defaults suited to the simulated platform; a data scientist bringing another
event log overrides the label definition (which events are scored, which events are labels and
what makes one positive) and usually the maturity. `load_training_config` names the entry at
fault when a file does not validate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from features.spec import parse_duration
from training.errors import InvalidTrainingConfig

Scalar = str | int | float | bool
Filter = dict[str, Scalar | list[Scalar]]

# Parameters the code owns: the objective, determinism and logging are not a matter of taste.
RESERVED = frozenset(
    {"objective", "deterministic", "force_row_wise", "force_col_wise", "verbosity", "verbose"}
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _duration(value: str) -> str:
    parse_duration(value)
    return value


class AccountRule(_Strict):
    """A positive label on the entity within `within` after the event marks the event too."""

    where: Filter = {"source": "review"}
    within: str = "5d"

    @field_validator("within")
    @classmethod
    def _within(cls, value: str) -> str:
        return _duration(value)

    @property
    def within_ms(self) -> int:
        return parse_duration(self.within)


class LabelConfig(_Strict):
    scored: Filter = {"type": "payment"}
    event_type: str = "label"
    target_field: str = "target_event_id"
    field: str | None = "label"
    positive: list[Scalar] = ["fraud"]
    maturity: str = "5d"
    entity: str | None = "account_id"
    account_rule: AccountRule | None = AccountRule()

    @field_validator("maturity")
    @classmethod
    def _maturity(cls, value: str) -> str:
        return _duration(value)

    @property
    def maturity_ms(self) -> int:
        return parse_duration(self.maturity)

    @model_validator(mode="after")
    def _consistent(self) -> LabelConfig:
        if not self.scored:
            raise ValueError("scored needs at least one field filter, e.g. {type: payment}")
        if self.field is not None and not self.positive:
            raise ValueError("positive needs at least one value when field is set")
        if self.account_rule is not None:
            if self.entity is None:
                raise ValueError("account_rule needs an entity (the field naming the account)")
            if self.account_rule.within_ms > self.maturity_ms:
                raise ValueError(
                    "account_rule.within must not exceed the maturity: a label counts only if "
                    "it arrives within the maturity"
                )
        return self


class SplitConfig(_Strict):
    train: Annotated[float, Field(gt=0, lt=1)] = 0.6
    validation: Annotated[float, Field(gt=0, lt=1)] = 0.2
    test: Annotated[float, Field(gt=0, lt=1)] = 0.2
    drop_known_compromised: bool = True

    @model_validator(mode="after")
    def _sum(self) -> SplitConfig:
        if abs(self.train + self.validation + self.test - 1.0) > 1e-9:
            raise ValueError("train + validation + test must sum to 1")
        return self


class ModelConfig(_Strict):
    num_boost_round: Annotated[int, Field(ge=1)] = 1000
    early_stopping_rounds: Annotated[int, Field(ge=1)] = 50
    early_stopping_metric: Literal["binary_logloss", "average_precision", "auc"] = "binary_logloss"
    params: dict[str, Scalar] = {}

    @field_validator("params")
    @classmethod
    def _not_reserved(cls, value: dict[str, Scalar]) -> dict[str, Scalar]:
        taken = sorted(RESERVED & set(value))
        if taken:
            raise ValueError(f"'{taken[0]}' is set by the training code, remove it")
        return value


class EvaluationConfig(_Strict):
    top_k_per_day: Annotated[int, Field(ge=1)] = 10
    amount_field: str | None = "amount"
    review_cost: Annotated[float, Field(ge=0)] = 5.0
    thresholds: list[float] = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9]
    calibration_bins: Annotated[int, Field(ge=2, le=50)] = 10
    shap_sample: Annotated[int, Field(ge=10)] = 2000
    baseline: bool = True

    @field_validator("thresholds")
    @classmethod
    def _probabilities(cls, value: list[float]) -> list[float]:
        if not value or any(not 0 < t < 1 for t in value):
            raise ValueError("thresholds must be a non-empty list of probabilities in (0, 1)")
        return sorted(set(value))


class PromotionConfig(_Strict):
    tolerance_ap: Annotated[float, Field(ge=0, le=1)] = 0.02
    tolerance_recall_at_1pct_fpr: Annotated[float, Field(ge=0, le=1)] = 0.05


class ComputeConfig(_Strict):
    """Where the boosting runs: in this process, or on a Dask cluster (`training.distributed`):
    the one at `scheduler`, or a LocalCluster of `workers` processes started for the training."""

    engine: Literal["local", "dask"] = "local"
    scheduler: str | None = None
    workers: Annotated[int, Field(ge=1, le=256)] = 2
    partition_rows: Annotated[int, Field(ge=1_000)] = 250_000
    table_dir: str | None = None

    @field_validator("scheduler")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value:
            raise ValueError(f"'{value}' is not a scheduler address, e.g. tcp://10.0.0.5:8786")
        return value


class TrainingConfig(_Strict):
    model_name: str | None = None
    experiment: str | None = None
    labels: LabelConfig = LabelConfig()
    split: SplitConfig = SplitConfig()
    model: ModelConfig = ModelConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    promotion: PromotionConfig = PromotionConfig()
    compute: ComputeConfig = ComputeConfig()

    @model_validator(mode="after")
    def _dask_stops_on_logloss(self) -> TrainingConfig:
        # The Dask path picks the best round from the validation loss summed partition by
        # partition (`training.distributed`); AUC and AP do not add up over partitions.
        if self.compute.engine == "dask" and self.model.early_stopping_metric != "binary_logloss":
            raise ValueError(
                "model.early_stopping_metric must be binary_logloss with compute.engine dask "
                f"(got {self.model.early_stopping_metric})"
            )
        return self


def load_training_config(path: str | Path) -> TrainingConfig:
    """Read and validate a training config; `InvalidTrainingConfig` names the entry at fault."""
    return _load(Path(path), ())


def _load(path: Path, extending: tuple[Path, ...]) -> TrainingConfig:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InvalidTrainingConfig(
            f"training config {path} cannot be read: {exc.strerror}"
        ) from exc
    except yaml.YAMLError as exc:
        raise InvalidTrainingConfig(f"training config {path} is not valid YAML: {exc}") from exc
    raw = raw or {}
    if isinstance(raw, dict) and "extends" in raw:
        # `extends: other.yaml` (relative to this file): that config, with this one's keys
        # over it, section by section (a key inside a section replaces the base's whole).
        named = raw.pop("extends")
        if not isinstance(named, str) or not named:
            raise InvalidTrainingConfig(f"training config {path}: extends: name a config file")
        base_path = (path.parent / named).resolve()
        seen = (*extending, path.resolve())
        if base_path in seen:
            chain = " -> ".join(str(p) for p in (*seen, base_path))
            raise InvalidTrainingConfig(f"training config {path}: extends form a cycle ({chain})")
        base = _load(base_path, seen).model_dump(mode="python", exclude_unset=True)
        raw = {
            key: {**base[key], **value}
            if isinstance(value, dict) and isinstance(base.get(key), dict)
            else value
            for key, value in {**base, **raw}.items()
            if not (value is None and key in base)  # an empty section keeps the base's
        } | {key: base[key] for key, value in raw.items() if value is None and key in base}
    return parse_training_config(raw, str(path))


def parse_training_config(raw: Any, source: str = "training config") -> TrainingConfig:
    if not isinstance(raw, dict):
        raise InvalidTrainingConfig(f"{source}: expected a mapping of sections")
    try:
        return TrainingConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        entry = ".".join(str(p) for p in err["loc"]) or "(top level)"
        message = str(err["msg"]).removeprefix("Value error, ")
        raise InvalidTrainingConfig(f"{source}: {entry}: {message}") from None
