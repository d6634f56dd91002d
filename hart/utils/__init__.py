"""Upstream's `hart.utils`: the text encoding (`tools.encode_prompts`) and constants (`constants.llm_system_prompt`)."""
