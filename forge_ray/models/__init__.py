"""Decoder models (dense and DeepSpeed-MoE) and their Hugging Face weight layout.

    from forge_ray.models import build_model
    model = build_model(config.model.model_copy(update={"vocab_size": 4096}), seed=0)
    out = model(input_ids, position_ids)   # .logits, .aux_loss, .expert_counts
"""

from forge_ray.models.decoder import Decoder, DecoderOutput, build_model

__all__ = ["Decoder", "DecoderOutput", "build_model"]
