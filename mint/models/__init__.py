"""The torch side of MinT: base models and PEFT adapters. The domain core never imports it."""
