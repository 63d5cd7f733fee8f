"""Row loads (`schema.rows`): checked against their schema table's columns and written through
the row store; a refused one is dead-lettered in the row-load shape."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime

from app.domain.deadletters import RecordTooLarge, Unstorable, row_load_dead_letter
from app.domain.rows import RowLoad
from app.domain.schema import ColumnTypeError, check_row_values
from app.kafka.publisher import Publisher
from app.kafka.records import RawRecord
from app.metrics import Metrics, reason_code
from app.registry.catalogs import TableCatalog
from app.state.rows import RowStore
from app.topics import Topics


class RowLoads:
    def __init__(self, topics: Topics, tables: TableCatalog, row_store: RowStore, publisher: Publisher,
                 metrics: Metrics, clock: Callable[[], datetime]) -> None:
        self.topics = topics
        self.tables = tables
        self.row_store = row_store
        self.publisher = publisher
        self.metrics = metrics
        self.clock = clock
        self.counters: Counter[str] = Counter()

    async def load(self, load: RowLoad, origin: RawRecord) -> None:
        table = self.tables.table(load.table)
        try:
            if table is None:
                raise ColumnTypeError(f"unknown schema table {load.table!r}")
            values = check_row_values(table, load.attributes) if load.attributes is not None else None
            await self.row_store.write(load.table, load.customer_id, values)
        except (ColumnTypeError, Unstorable, RecordTooLarge) as exc:
            self.counters["deadlettered"] += 1
            self.metrics.dead_letters.labels(self.topics.deadletter, reason_code(str(exc))).inc()
            await self.publisher.send(self.topics.deadletter, load.customer_id, row_load_dead_letter(
                str(exc), load.table, load.customer_id, load.attributes, self.clock().isoformat(),
                {"topic": origin.topic, "partition": origin.partition, "offset": origin.offset}))
