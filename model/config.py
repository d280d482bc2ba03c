"""Model hyperparameters in one dataclass, so the trainer builds towers, losses and augmentations from one config."""

from __future__ import annotations

from dataclasses import dataclass, field

from towerssl.config import ConfigError, check_types

# SSL augmentations named as in Yao et al. (CIKM 2021) where the paper has them: "rfm" is its random feature
# masking (a random half of the fields masked in one view, the complementary half in the other) and "cfm" its
# correlated feature masking. "independent-mask" (each field masked on its own coin) is not in the paper.
AUGMENTATIONS = ("none", "independent-mask", "dropout", "rfm", "cfm")
# Earlier names, still accepted so that old configs and recorded runs keep working: old name -> name.
AUGMENTATION_ALIASES = {"mask": "independent-mask", "complementary": "rfm"}
MI_RANKINGS = ("nmi", "mi")
FREQUENCY_SOURCES = ("table", "streaming")


@dataclass
class ModelConfig:
    """Tower sizes, loss settings and the SSL augmentation; see docs/model.md for what each one does."""

    embedding_dim: int = 32  # per field
    hidden_dims: tuple[int, ...] = (256,)  # MLP hidden layers (Linear -> LayerNorm -> ReLU each)
    output_dim: int = 64
    layer_norm: bool = True  # LayerNorm in the MLP; never BatchNorm (masked SSL views would skew its running stats)
    temperature: float = 0.1  # chosen on validation (docs/experiments.md, Amazon)
    logq: bool = True  # subtract log p_j from every logit
    frequency: str = "table"  # where p_j comes from: "table" (Spark item_stats) | "streaming" (Yi et al. estimator)
    streaming_buckets: int = 1 << 20
    streaming_hashes: int = 2
    streaming_alpha: float = 0.01  # EMA rate of the average gap
    id_dropout: float = 0.3  # chosen on validation (docs/experiments.md, Amazon); share of clicked items whose id is masked in the main task (DropoutNet)
    mixed_negatives: int = 0  # extra negatives sampled uniformly from the corpus per batch, corrected by log(1/N)
    distinct_items: bool = False  # one main-loss column per distinct clicked item, corrected by log(1 - (1 - p)^n)
    alpha: float = 1.0  # weight of the SSL loss; 0 turns SSL off
    ssl_batch_size: int = 1024  # m, items sampled uniformly per step for the SSL loss
    augmentation: str = "cfm"  # none | independent-mask | dropout | rfm (the paper's random feature masking) | cfm
    mask_rate: float = 0.1  # "independent-mask": per-field masking probability ...
    mask_rates: dict[str, float] = field(default_factory=dict)  # ... overridden per field name
    dropout_rate: float = 0.5  # share of multi-valued values dropped
    dropout_with_masking: bool = True  # also drop multi-valued values under independent-mask / rfm / cfm
    mi_ranking: str = "nmi"  # CFM partners by normalized MI ("nmi") or raw MI ("mi")

    @property
    def scheme(self) -> str:
        """The augmentation by its current name; the config keeps the name it was given, so a recorded run's
        config.json still equals the config that made it."""
        return AUGMENTATION_ALIASES.get(self.augmentation, self.augmentation)

    def __post_init__(self) -> None:
        check_types(self, "train.model")  # YAML's lists become tuples
        checks = [
            (self.scheme in AUGMENTATIONS, f"augmentation must be one of {AUGMENTATIONS} (or an old name: {', '.join(AUGMENTATION_ALIASES)}), got {self.augmentation!r}"),
            (self.mi_ranking in MI_RANKINGS, f"mi_ranking must be one of {MI_RANKINGS}, got {self.mi_ranking!r}"),
            (self.frequency in FREQUENCY_SOURCES, f"frequency must be one of {FREQUENCY_SOURCES}, got {self.frequency!r}"),
            (self.temperature > 0, f"temperature must be > 0, got {self.temperature}"),
            (self.alpha >= 0, f"alpha must be >= 0, got {self.alpha}"),
            (min(self.embedding_dim, self.output_dim, self.ssl_batch_size) >= 1, "embedding_dim, output_dim and ssl_batch_size must be >= 1"),
            (all(d >= 1 for d in self.hidden_dims), f"hidden_dims must be positive, got {self.hidden_dims}"),
            (self.mixed_negatives >= 0, f"mixed_negatives must be >= 0, got {self.mixed_negatives}"),
            (0 <= self.id_dropout <= 1, f"id_dropout must be in [0, 1], got {self.id_dropout}"),
            (0 <= self.dropout_rate < 1, f"dropout_rate must be in [0, 1), got {self.dropout_rate}"),
            (all(0 <= r <= 1 for r in [self.mask_rate, *self.mask_rates.values()]), "mask rates must be in [0, 1]"),
            (0 < self.streaming_alpha <= 1, f"streaming_alpha must be in (0, 1], got {self.streaming_alpha}"),
            (self.streaming_buckets >= 1 and self.streaming_hashes >= 1, "streaming_buckets and streaming_hashes must be >= 1"),
        ]
        errors = [message for ok, message in checks if not ok]
        if errors:
            raise ConfigError("train.model: " + "; ".join(errors))
