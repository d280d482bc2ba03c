"""User and item towers: per-field embeddings, pooled and concatenated, then an MLP and L2 normalization."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from towerssl.fields import FeatureSpec, FieldSpec
from towerssl.indices import PAD
from towerssl.model.config import ModelConfig
from towerssl.model.features import Features, mask_rows


class FieldEmbedding(nn.Module):
    """One field's embedding table; a multi-valued field is the mean over its real (non-PAD) values.

    A multi-valued row with no real value is embedded as DEFAULT, the same as a masked field, because both
    mean "nothing known"; the PAD row stays zero and never receives a gradient.
    """

    def __init__(self, field: FieldSpec, dim: int) -> None:
        super().__init__()
        self.field = field
        if field.multi:
            self.table: nn.Embedding | nn.EmbeddingBag = nn.EmbeddingBag(field.cardinality, dim, mode="mean", padding_idx=PAD)
        else:
            self.table = nn.Embedding(field.cardinality, dim, padding_idx=PAD)
        nn.init.normal_(self.table.weight, std=dim**-0.5)
        with torch.no_grad():
            self.table.weight[PAD].zero_()

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        expected = 2 if self.field.multi else 1
        if values.dim() != expected or (self.field.multi and values.shape[1] != self.field.length):
            shape = f"[B, {self.field.length}]" if self.field.multi else "[B]"
            raise ValueError(f"field {self.field.name!r}: expected a LongTensor of shape {shape}, got {tuple(values.shape)}")
        if self.field.multi:
            values = mask_rows(self.field, values, (values == PAD).all(dim=1))
        return self.table(values)


class Tower(nn.Module):
    """Embeds the fields one owner (user or item) has and maps them to an L2-normalized [B, output_dim] vector."""

    def __init__(self, fields: tuple[FieldSpec, ...], config: ModelConfig) -> None:
        super().__init__()
        if not fields:
            raise ValueError("a tower needs at least one field")
        self.fields = fields
        self.embeddings = nn.ModuleDict({f.name: FieldEmbedding(f, config.embedding_dim) for f in fields})
        layers: list[nn.Module] = []
        width = config.embedding_dim * len(fields)
        for hidden in config.hidden_dims:
            layers += [nn.Linear(width, hidden), *([nn.LayerNorm(hidden)] if config.layer_norm else []), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, config.output_dim))
        self.mlp = nn.Sequential(*layers)

    def embed_fields(self, features: Features) -> torch.Tensor:
        """Per-field embeddings [B, fields, embedding_dim], in field order."""
        missing = [f.name for f in self.fields if f.name not in features]
        if missing:
            raise KeyError(f"tower input lacks field(s) {', '.join(missing)}; got {', '.join(sorted(features))}")
        return torch.stack([self.embeddings[f.name](features[f.name]) for f in self.fields], dim=1)

    def forward(self, features: Features) -> torch.Tensor:
        return F.normalize(self.mlp(self.embed_fields(features).flatten(1)), dim=-1)


class TwoTowers(nn.Module):
    """The user tower and the item tower; the item tower serves both the main and the SSL task."""

    def __init__(self, spec: FeatureSpec, config: ModelConfig) -> None:
        super().__init__()
        self.spec = spec
        self.user_tower = Tower(spec.user_fields, config)
        self.item_tower = Tower(spec.item_fields, config)
