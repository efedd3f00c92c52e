"""File and key names of the Hugging Face PEFT layout, in one place.

A revision stored by MinT loads with `peft.PeftModel.from_pretrained` unchanged.
"""

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MANIFEST = "manifest.json"
