"""Decoder models (dense and MoE) and their Hugging Face weight layout.

    from forge_ray.models import build_model
    model = build_model(config.model.model_copy(update={"vocab_size": 4096}), seed=0)
    # an MoE model is handed its MoE layer, e.g. DeepSpeed-MoE's as training uses it:
    #   build_model(cfg, moe_layer=forge_ray.train.deepspeed_adapter.moe_layer)
    out = model(input_ids, position_ids)   # .logits, .aux_loss, .expert_counts
"""

from forge_ray.models.decoder import Decoder, DecoderOutput, MoELayerFactory, build_model

__all__ = ["Decoder", "DecoderOutput", "MoELayerFactory", "build_model"]
