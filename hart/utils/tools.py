"""Text conditioning: prompts -> the Qwen2 hidden states HART is conditioned on (`encode_prompts`)."""
from __future__ import annotations

import torch

__all__ = ["encode_prompts"]


@torch.no_grad()
def encode_prompts(prompts: list[str], text_model, text_tokenizer, text_tokenizer_max_length: int,
                   system_prompt: str | None = None, use_llm_system_prompt: bool = True
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Encode B prompts with the text LLM, as upstream.

    Each prompt is tokenised alone, padded to `text_tokenizer_max_length` (T, = the transformer's
    context_token) and truncated; mask = token != pad; position ids = cumsum(mask) - 1. With the
    system prompt, its tokens (unpadded) are prepended for the LLM forward only (attention mask
    [ones | mask], default LLM positions) and the last T final-norm hidden states are kept.

    Returns (tokens (B, T) int64, mask (B, T) bool, position ids (B, T) int64, hidden (B, T, hidden) float32).
    """
    device = next(text_model.parameters()).device
    tokens = torch.cat([
        text_tokenizer(p, max_length=text_tokenizer_max_length, padding="max_length", truncation=True,
                       return_tensors="pt").input_ids for p in prompts]).to(device)  # (B, T)
    mask = tokens != text_tokenizer.pad_token_id
    position_ids = mask.long().cumsum(dim=1) - 1
    input_ids, attention_mask = tokens, mask.long()
    if use_llm_system_prompt:
        sys_ids = text_tokenizer(system_prompt, max_length=text_tokenizer_max_length, padding="longest",
                                 truncation=True, return_tensors="pt").input_ids.to(device)
        sys_ids = sys_ids.repeat(len(prompts), 1)  # (B, n_sys)
        input_ids = torch.cat([sys_ids, tokens], dim=1)
        attention_mask = torch.cat([torch.ones_like(sys_ids), attention_mask], dim=1)
    # the last layer's hidden states after the final norm (= upstream's hidden_states[-1])
    hidden = text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    context = hidden[:, -text_tokenizer_max_length:].float()  # (B, T, hidden); padding slots included
    return tokens, mask, position_ids, context
