"""Shadow mode's state rule: a shadow trigger keeps its per-customer state (cooldown marks,
trigger-limit and policy counts) under a state id of its own, so live triggers never see it.

Live state is kept under the trigger's id, shadow state under `shadow~<id>`; `~` cannot
appear in a trigger id, so the two can never meet. Switching a trigger's mode therefore
switches the state it reads and writes: a trigger going live finds only what its live
firings did (shadow firings never counted), a trigger going shadow finds no live state."""

from __future__ import annotations

SHADOW_PREFIX = "shadow~"

# What the dry run says a trigger of each mode performs.
PERFORMS = {False: "its action, and a record on triggers.firings",
            True: "nothing: firings go to triggers.shadow"}


def state_id(trigger_id: str, shadow: bool) -> str:
    """The id a trigger's per-customer state is kept under in its mode."""
    return f"{SHADOW_PREFIX}{trigger_id}" if shadow else trigger_id
