"""Instruction-following agents (note 004): multi-task demonstrations with instructions (BabyAI bot,
Meta-World scripted policies), a causal transformer policy over a window of observations plus instruction
tokens, data-parallel training over every local device, and per-task evaluation."""
