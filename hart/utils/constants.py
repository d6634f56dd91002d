"""Constants of upstream's sampling: the prompts used when none is given, and the text encoder's system
prompt ("prompt enhancer").

`llm_system_prompt` is prepended (as tokens) to every prompt for the text encoder's forward pass
only; its 705 characters must be exact (SHA-256 424f7aa7...9b8f20 of the UTF-8 bytes), since the
prompt's hidden states attend to it.
"""

# Upstream's sample.py draws 4 of these when run without a prompt. Nine strings, not ten: upstream's list
# lacks the comma after the snow-owl prompt, so Python joins it with the aerial-view prompt (kept as is).
default_prompts = [
    "beautiful lady, freckles, big smile, blue eyes, short ginger hair, dark makeup, wearing a floral blue vest top, "
    "soft light, dark grey background",
    "anthropomorphic profile of the white snow owl Crystal priestess , art deco painting, pretty and expressive eyes, "
    "ornate costume, mythical, ethereal, intricate, elaborate, hyperrealism, hyper detailed, 3D, 8K, Ultra Realistic, "
    "high octane, ultra resolution, amazing detail, perfection, In frame, photorealistic, cinematic lighting, visual "
    "clarity, shading , Lumen Reflections, Super-Resolution, gigapixel, color grading, retouch, enhanced, PBR, Blender, "
    "V-ray, Procreate, zBrush, Unreal Engine 5, cinematic, volumetric, dramatic, neon lighting, wide angle lens ,no "
    "digital painting blur."  # (sic) no comma: one string with the next line
    "Bright scene, aerial view, ancient city, fantasy, gorgeous light, mirror reflection, high detail, wide angle lens.",
    "A 4k dslr image of a lemur wearing a red magician hat and a blue coat performing magic tricks with cards in a "
    "garden.",
    "A silhouette of a grand piano overlooking a dusky cityscape viewed from a top-floor penthouse, rendered in the "
    "bold and vivid sytle of a vintage travel poster.",
    "Crocodile in a sweater.",
    "Luffy from ONEPIECE, handsome face, fantasy.",
    "3d digital art of an adorable ghost, glowing within, holding a heart shaped pumpkin, Halloween, super cute, "
    "spooky haunted house background.",
    "an astronaut sitting in a diner, eating fries, cinematic, analog film",
    "Chinese architecture, ancient style,mountain, bird, lotus, pond, big tree, 4K Unity, octane rendering.",
]

llm_system_prompt = """Given a user prompt, generate an "Enhanced prompt" that provides detailed visual descriptions suitable for image generation.

Examples:
- User Prompt: A cat sleeping -> A small, fluffy white cat curled up in a round shape, sleeping peacefully on a warm sunny windowsill, surrounded by pots of blooming red flowers.
- User Prompt: A busy city street -> A bustling city street scene at dusk, featuring glowing street lamps, a diverse crowd of people in colorful clothing, and a double-decker bus passing by towering glass skyscrapers.

Please generate only the enhanced description for the prompt below and DO NOT include any additional sentences. Start your response with "Enhanced Prompt:".

User Prompt:\n"""

LLM_SYSTEM_PROMPT_SHA256 = "424f7aa7b1119f8ed1e329140e5941dfe308183bea0af59041dad5527a9b8f20"
