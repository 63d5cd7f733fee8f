"""`update_attribute`: expressions evaluated, checked against the table's columns, written to the customer's row."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, ClassVar

from app.actions.performer import Performer
from app.domain.deadletters import RecordTooLarge, Unstorable
from app.domain.expressions import TRIGGER_SCOPE_NAMES, Budget, Expression, parse_expression
from app.domain.models import ActionCommand, Source
from app.domain.schema import ColumnTypeError, check_row_values
from app.errors import ActionFailed, ExpressionFailed, InvalidExpression


@lru_cache(maxsize=4096)
def _expression(text: str) -> Expression:
    # The command carries the attribute texts (the definition may have changed since the
    # firing); parsed once per distinct text.
    return parse_expression(text, TRIGGER_SCOPE_NAMES)


class UpdateAttribute(Performer):
    action_type: ClassVar[str] = "update_attribute"

    async def perform(self, command: ActionCommand) -> None:
        table, values, depth = self._attribute_values(command)
        try:
            await self.services.row_store.write(table, command.customer_id, values, depth=depth,
                                                firing_id=command.firing_id)
        except (Unstorable, RecordTooLarge) as exc:  # nothing was written
            raise ActionFailed(str(exc)) from None

    def _attribute_values(self, command: ActionCommand) -> tuple[str, dict[str, Any], int]:
        table_name = str(command.action.get("table", "customers"))
        table = self.services.catalogs.tables.table(table_name)
        if table is None:
            raise ActionFailed(f"unknown schema table {table_name!r}")
        depth = self._depth(command)
        scope = self.scope(command)
        try:
            budget = Budget()  # one for all of a command's attributes, as for an event's conditions
            values = {name: _expression(text).evaluate(scope, budget)
                      for name, text in dict(command.action["attributes"]).items()}
            return table_name, check_row_values(table, values), depth
        except (InvalidExpression, ExpressionFailed, ColumnTypeError) as exc:
            raise ActionFailed(str(exc)) from None

    def _depth(self, command: ActionCommand) -> int:
        """A change this action makes is itself a schema_table event; the chain is counted so
        a trigger that updates what it listens to stops instead of looping forever."""
        caused_by_change = command.event.get("source") == Source.SCHEMA_TABLE.value
        previous = command.event.get("depth")
        depth = (max(previous, 0) if isinstance(previous, int) and not isinstance(previous, bool)
                 and caused_by_change else 0) + 1
        max_depth = self.services.settings.max_update_depth
        if depth > max_depth:
            raise ActionFailed(f"update chain stopped at depth {depth} (TRIGGERS_MAX_UPDATE_DEPTH={max_depth})")
        return depth
