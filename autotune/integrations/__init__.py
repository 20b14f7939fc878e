"""Recovery inside the frameworks people train with: Lightning and the Hugging Face Trainer.

`autotune.integrations.lightning.RecoveryCallback` (extra `autotune[lightning]`) and
`autotune.integrations.transformers.RecoveryCallback` (extra `autotune[transformers]`)
adapt a framework's loop to the supervisor (`autotune.integrations.session`): the same
detectors, policy, run directory and learning-rate check as `autotune train`. Nothing is
imported here, so the core package works without either framework.
"""
