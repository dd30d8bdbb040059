"""Stage-1 generative and stage-2 contrastive losses."""

from lbr.losses.cached import CachedStage2Loss
from lbr.losses.contrastive import InfoNCELoss, Stage2Loss
from lbr.losses.generative import Stage1Loss, knowledge_loss

__all__ = ["CachedStage2Loss", "InfoNCELoss", "Stage1Loss", "Stage2Loss", "knowledge_loss"]
