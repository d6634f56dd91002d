"""Constants of upstream's sampling: the text encoder's system prompt ("prompt enhancer").

`llm_system_prompt` is prepended (as tokens) to every prompt for the text encoder's forward pass
only; its 705 characters must be exact (SHA-256 424f7aa7...9b8f20 of the UTF-8 bytes), since the
prompt's hidden states attend to it.
"""

llm_system_prompt = """Given a user prompt, generate an "Enhanced prompt" that provides detailed visual descriptions suitable for image generation.

Examples:
- User Prompt: A cat sleeping -> A small, fluffy white cat curled up in a round shape, sleeping peacefully on a warm sunny windowsill, surrounded by pots of blooming red flowers.
- User Prompt: A busy city street -> A bustling city street scene at dusk, featuring glowing street lamps, a diverse crowd of people in colorful clothing, and a double-decker bus passing by towering glass skyscrapers.

Please generate only the enhanced description for the prompt below and DO NOT include any additional sentences. Start your response with "Enhanced Prompt:".

User Prompt:\n"""

LLM_SYSTEM_PROMPT_SHA256 = "424f7aa7b1119f8ed1e329140e5941dfe308183bea0af59041dad5527a9b8f20"
