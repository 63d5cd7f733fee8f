"""Every private name of faust, mode and aiokafka the engine overrides or reads, checked.

app/kafka/consumer.py, app/kafka/transport.py, app/kafka/end_offsets.py and the pipeline reach into internals
that carry no compatibility promise; pyproject pins the exact versions they were written
against. Overriding a method that was renamed, or writing an attribute nobody reads any
more, never fails by itself (a fetch would quietly wait 1.5 s again): these tests fail
instead, naming what moved, when a version is changed."""

from __future__ import annotations

import inspect
from importlib.metadata import version
from typing import Any

import aiokafka
import faust
import pytest
from aiokafka.consumer.fetcher import Fetcher
from faust.sensors import Monitor
from faust.transport.drivers import aiokafka as faust_aiokafka

from app.kafka import consumer as our_consumer
from app.kafka.transport import QuietMonitor, Transport

# The versions the overrides were written against (pyproject.toml pins exactly these).
PINNED = {"faust-streaming": "0.15.3", "mode-streaming": "0.7.1", "aiokafka": "0.14.0"}

# (class, method) -> its signature when the override was written. Annotations are part of it:
# a changed type is as much a signal as a changed parameter.
OVERRIDDEN: dict[tuple[type, str], str] = {
    (faust_aiokafka.AIOKafkaConsumerThread, "_create_worker_consumer"):
        "(self, transport: 'Transport') -> aiokafka.consumer.consumer.AIOKafkaConsumer",
    (faust_aiokafka.AIOKafkaConsumerThread, "_create_client_consumer"):
        "(self, transport: 'Transport') -> aiokafka.consumer.consumer.AIOKafkaConsumer",
    (faust_aiokafka.AIOKafkaConsumerThread, "_fetch_records"):
        "(self, consumer: aiokafka.consumer.consumer.AIOKafkaConsumer, active_partitions: "
        "Set[faust.types.tuples.TP], timeout: Optional[float] = None, max_records: Optional[int] = None)"
        " -> Mapping[faust.types.tuples.TP, List[Any]]",
    (faust_aiokafka.AIOKafkaConsumerThread, "_highwaters"):
        "(self, partitions: List[faust.types.tuples.TP]) -> Mapping[faust.types.tuples.TP, int]",
    (faust_aiokafka.Consumer, "_new_consumer_thread"): "(self) -> 'AIOKafkaConsumerThread'",
    (faust_aiokafka.Consumer, "ack"): "(self, message: faust.types.tuples.Message) -> bool",
    (faust_aiokafka.Consumer, "perform_seek"): "(self) -> None",
    (faust_aiokafka.Consumer, "seek"): "(self, partition: faust.types.tuples.TP, offset: int) -> None",
    (faust_aiokafka.Consumer, "on_partitions_revoked"):
        "(self, revoked: Set[faust.types.tuples.TP]) -> None",
    (faust_aiokafka.Consumer, "_drain_messages"): "(self, fetcher: mode.types.services.ServiceT) -> None",
    (faust_aiokafka.Consumer, "_wait_next_records"):
        "(self, timeout: float) -> Tuple[Optional[Mapping[faust.types.tuples.TP, List[Any]]], "
        "Optional[Set[faust.types.tuples.TP]]]",
    (faust_aiokafka.Consumer, "_getmany"):
        "(self, active_partitions: Optional[Set[faust.types.tuples.TP]], timeout: float)"
        " -> Mapping[faust.types.tuples.TP, List[Any]]",
    (faust_aiokafka.Consumer, "wait_empty"): "(self) -> None",
    (faust_aiokafka.Consumer, "_filter_tps_with_pending_acks"):
        "(self, topics: Optional[AbstractSet[Union[str, faust.types.tuples.TP]]] = None)"
        " -> Iterator[faust.types.tuples.TP]",
    (faust_aiokafka.Consumer, "_add_gap"):
        "(self, tp: faust.types.tuples.TP, offset_from: int, offset_to: int) -> None",
    (faust_aiokafka.Consumer, "_new_offset"): "(self, tp: faust.types.tuples.TP) -> Optional[int]",
    (faust_aiokafka.Consumer, "_to_message"):
        "(self, tp: faust.types.tuples.TP, record: Any) -> faust.types.tuples.ConsumerMessage",
    (faust_aiokafka.Consumer, "commit"):
        "(self, topics: Optional[AbstractSet[Union[str, faust.types.tuples.TP]]] = None, "
        "start_new_transaction: bool = True) -> bool",
    (faust_aiokafka.Consumer, "highwater"): "(self, tp: faust.types.tuples.TP) -> int",
    (Monitor, "on_message_in"):
        "(self, tp: faust.types.tuples.TP, offset: int, message: faust.types.tuples.Message) -> None",
    (Monitor, "on_stream_event_in"):
        "(self, tp: faust.types.tuples.TP, offset: int, stream: faust.types.streams.StreamT, "
        "event: faust.types.events.EventT) -> Optional[Dict]",
    (Monitor, "on_stream_event_out"):
        "(self, tp: faust.types.tuples.TP, offset: int, stream: faust.types.streams.StreamT, "
        "event: faust.types.events.EventT, state: Optional[Dict] = None) -> None",
    (Monitor, "on_message_out"):
        "(self, tp: faust.types.tuples.TP, offset: int, message: faust.types.tuples.Message) -> None",
    (faust.App, "_new_transport"): "(self) -> faust.types.transports.TransportT",
}

# Attributes of faust's consumer that app/kafka/consumer.py reads or writes.
CONSUMER_ATTRIBUTES = {
    "_unacked_messages", "_read_offset", "_committed_offset", "_acked", "_acked_index", "_gap",
    "_n_acked", "_commit_every", "_buffered_partitions", "suspend_flow", "flow_active", "diag",
    "consumer_stopped_errors", "_stopped", "_thread",
}


def test_the_pinned_versions_are_installed() -> None:
    assert {name: version(name) for name in PINNED} == PINNED


@pytest.mark.parametrize(("owner", "name"), list(OVERRIDDEN), ids=lambda v: getattr(v, "__name__", v))
def test_every_overridden_or_called_method_keeps_its_signature(owner: type, name: str) -> None:
    method = getattr(owner, name, None)
    assert method is not None, f"{owner.__qualname__}.{name} is gone"
    assert str(inspect.signature(method)) == OVERRIDDEN[(owner, name)]


def test_our_overrides_are_all_in_the_checked_list() -> None:
    """A new override of a private method must be added to OVERRIDDEN above."""
    ours = {
        our_consumer.ConsumerThread: faust_aiokafka.AIOKafkaConsumerThread,
        our_consumer.Consumer: faust_aiokafka.Consumer,
        QuietMonitor: Monitor,
    }
    checked = {(base, name) for base, name in OVERRIDDEN}
    for cls, base in ours.items():
        for name, value in vars(cls).items():
            if callable(value) and hasattr(base, name) and not name.startswith("__"):
                assert (base, name) in checked, f"{cls.__qualname__}.{name} overrides an unchecked method"


def test_module_level_internals_still_exist() -> None:
    from faust import streams
    from faust.transport import consumer
    from faust.types import tuples
    from faust.utils import functional

    assert streams._current_event.get(None) is None  # a ContextVar
    assert isinstance(consumer.CONSUMER_FETCHING, str)
    assert hasattr(tuples.ack_lock, "__enter__")
    assert list(functional.consecutive_numbers([1, 2, 4])) == [[1, 2], [4]]


async def test_the_consumer_has_every_attribute_we_read() -> None:
    app = faust.App("internals-probe", broker="kafka://127.0.0.1:1", store="memory://")
    transport = Transport(app.conf.broker_consumer, app)

    async def nothing(*_: Any) -> None:
        return None

    consumer = transport.create_consumer(callback=nothing, on_partitions_revoked=nothing,
                                         on_partitions_assigned=nothing)
    assert isinstance(consumer, our_consumer.Consumer)
    missing = sorted(name for name in CONSUMER_ATTRIBUTES if not hasattr(consumer, name))
    assert not missing, f"faust's consumer no longer has {missing}"
    assert isinstance(consumer._thread, our_consumer.ConsumerThread)  # our thread is the one used
    assert hasattr(consumer._thread, "_consumer")  # the running aiokafka consumer, once started
    producer_send = inspect.signature(app.producer.send)
    assert list(producer_send.parameters)[:6] == ["topic", "key", "value", "partition", "timestamp", "headers"]


async def test_the_fetch_wait_we_set_is_the_one_aiokafka_sends() -> None:
    """ConsumerThread writes `_fetch_max_wait_ms` on aiokafka's consumer (read when the fetcher is
    built) and on its fetcher (read for every fetch request). Both names must be the ones aiokafka
    itself stores the constructor's argument in, and the fetcher must put it in its requests."""
    consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1", fetch_max_wait_ms=37)
    assert consumer._fetch_max_wait_ms == 37
    assert "self._fetcher = Fetcher(" in inspect.getsource(aiokafka.AIOKafkaConsumer.start)
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(aiokafka.AIOKafkaConsumer.start)
    assert "fetch_max_wait_ms" in inspect.signature(Fetcher.__init__).parameters
    assert inspect.getsource(Fetcher.__init__).count("self._fetch_max_wait_ms = fetch_max_wait_ms") == 1
    assert "self._fetch_max_wait_ms," in inspect.getsource(Fetcher._get_actions_per_node)
    await consumer.stop()  # never started: only closes its client
