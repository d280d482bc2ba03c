"""The training objective: mean(L_main) + alpha * mean(L_self) over the shared item tower.

One item-tower pass embeds the clicked items, the mixed negatives and both SSL views together: the tower
has no batch statistics (LayerNorm, not BatchNorm), so batching them changes nothing but the speed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from towerssl.fields import ITEM_ID_FIELD, FeatureSpec
from towerssl.model.augment import Augmenter, drop_field
from towerssl.model.config import ModelConfig
from towerssl.model.corpus import ItemCorpus
from towerssl.model.features import Features
from towerssl.model.frequency import StreamingFrequency
from towerssl.model.losses import main_loss, ssl_loss
from towerssl.model.towers import TwoTowers


@dataclass
class LossParts:
    """total carries the gradient; the others are detached, for logging."""

    total: torch.Tensor
    main: torch.Tensor
    ssl: torch.Tensor
    accuracy: torch.Tensor  # in-batch: the clicked item has the highest logit among the candidates


class TwoTowerSSL(nn.Module):
    """Towers, augmentation and (optionally) the streaming frequency estimator, built from one ModelConfig.

    mi / nmi: k x k matrices over the item fields in spec order (from the feature_mi table); CFM needs the one
    config.mi_ranking names.
    """

    def __init__(self, spec: FeatureSpec, config: ModelConfig, mi: np.ndarray | None = None, nmi: np.ndarray | None = None) -> None:
        super().__init__()
        self.config = config
        self.towers = TwoTowers(spec, config)
        self.item_id_field = next(f for f in spec.item_fields if f.name == ITEM_ID_FIELD)
        self.augmenter = Augmenter(spec.item_fields, config, mi=mi, nmi=nmi) if config.alpha > 0 else None
        self.frequency = (
            StreamingFrequency(config.streaming_buckets, config.streaming_hashes, config.streaming_alpha)
            if config.logq and config.frequency == "streaming"
            else None
        )

    def log_p(self, item_idx: torch.Tensor, corpus: ItemCorpus) -> torch.Tensor | None:
        """log p_j for the logQ correction: None when it is off, else from the estimator or the corpus table."""
        if not self.config.logq:
            return None
        if self.frequency is not None:
            return self.frequency.log_probability(item_idx)
        if corpus.log_p is None:
            raise ValueError("logq is on with frequency 'table' but the item corpus has no log_p (run `towerssl stats`)")
        return corpus.log_p[item_idx]

    def embed_items(self, batches: list[Features]) -> list[torch.Tensor]:
        """Item-tower embeddings of several feature batches in one pass."""
        names = batches[0].keys()
        joined = {name: torch.cat([b[name] for b in batches]) for name in names}
        sizes = [next(iter(b.values())).shape[0] for b in batches]
        return list(self.towers.item_tower(joined).split(sizes))

    def forward(self, users: Features, item_idx: torch.Tensor, corpus: ItemCorpus, generator: torch.Generator) -> LossParts:
        """Loss of one step: users [n] clicked items item_idx [n]; SSL items and negatives come from the corpus."""
        if self.frequency is not None and self.training:
            self.frequency.update(item_idx)
        clicked_features = corpus.gather(item_idx)
        if self.training and self.config.id_dropout > 0:
            clicked_features = drop_field(clicked_features, self.item_id_field, self.config.id_dropout, generator)
        item_batches = [clicked_features]
        negative_idx = corpus.sample(self.config.mixed_negatives, generator) if self.config.mixed_negatives else None
        if negative_idx is not None:
            item_batches.append(corpus.gather(negative_idx))
        ssl_idx = corpus.sample(self.config.ssl_batch_size, generator) if self.augmenter is not None else None
        if ssl_idx is not None:
            item_batches.extend(self.augmenter(corpus.gather(ssl_idx), generator))
        item_embeddings = self.embed_items(item_batches)
        clicked = item_embeddings.pop(0)
        negatives = item_embeddings.pop(0) if negative_idx is not None else None

        main, correct = main_loss(
            self.towers.user_tower(users),
            clicked,
            self.config.temperature,
            log_p=self.log_p(item_idx, corpus),
            item_ids=item_idx,
            negative_embeddings=negatives,
            negative_ids=negative_idx,
            corpus_size=corpus.size,
            distinct_items=self.config.distinct_items,
        )
        main = main.mean()
        ssl = torch.zeros((), device=main.device)
        if ssl_idx is not None:
            view_one, view_two = item_embeddings
            ssl = ssl_loss(view_one, view_two, self.config.temperature, ssl_idx)[0].mean()
        total = main + self.config.alpha * ssl
        return LossParts(total, main.detach(), ssl.detach(), correct.float().mean())
