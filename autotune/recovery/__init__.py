"""Recovery: the supervisor that drives any `Trainable`, the policy and its ladders.

`supervise` (start or continue a run), `Supervisor` (the loop), `decide` (the pure
policy), `RecoveryConfig` (its knobs), `SupervisorConfig` (on/off/watch, the budget), and
`runs` for our ARC trainer.
"""
