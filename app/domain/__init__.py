"""Pure domain logic: models, expressions, matching, cooldown, priority. No I/O, no faust."""
