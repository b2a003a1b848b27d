"""The GLM network."""

from model.config import GLMConfig
from model.glm import GLMModel, glm_lm_loss, param_groups_for_weight_decay

__all__ = ["GLMConfig", "GLMModel", "glm_lm_loss", "param_groups_for_weight_decay"]
