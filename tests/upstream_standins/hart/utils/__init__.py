"""Stand-in for upstream's `hart.utils`: prompt encoding with a Hugging Face text model, padded to T tokens."""
import torch

default_prompts = ["a red heart", "an owl in the snow", "a city at night"]
llm_system_prompt = "Describe the image: "


def encode_prompts(prompts, text_model, text_tokenizer, text_tokenizer_max_length, system_prompt=None,
                   use_system_prompt=False):
    """-> (token ids, mask (B, T) bool, position ids (B, T), last hidden states (B, T, hidden) float32)."""
    texts = [(system_prompt or "") + p if use_system_prompt else p for p in prompts]
    tokens = text_tokenizer(texts, max_length=text_tokenizer_max_length, padding="max_length", truncation=True,
                            return_tensors="pt")
    ids, mask = tokens.input_ids.to(text_model.device), tokens.attention_mask.to(text_model.device)
    hidden = text_model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
    return ids, mask.bool(), mask.cumsum(-1) - 1, hidden
