"""Size and count limits on definitions, in one place so the contract's table (3.6) has one source.

Every limit is far above what a real rule needs; each exists so that one definition cannot
make every worker parse, hold or evaluate an unbounded amount of data.
"""

from __future__ import annotations

KIB = 1024

# The whole definition as JSON (UTF-8 bytes). Well under Kafka's default 1 MB record and the
# API's 1 MiB body, so a definition that validates can always be published.
MAX_DEFINITION_BYTES = 256 * KIB

MAX_NAME_LENGTH = 200  # `name` of triggers, journeys and decision flows: free text for people
MAX_REFERENCE_LENGTH = 128  # journeyId, decisionFlowId, table: ids, which are at most 128 characters
MAX_EVENT_TYPE_LENGTH = 256  # an event's `type` is at most 256 characters, so longer never matches
MAX_FIELD_NAME_LENGTH = 256  # filter names, attribute names, column names
MAX_CHANNEL_LENGTH = 256

MAX_FILTERS = 50
MAX_FILTER_VALUES = 1_000  # items in one "one of" list
MAX_FILTER_TEXT_LENGTH = 4_096  # one string filter value
MAX_CONDITIONS = 50  # per trigger and per offer; each also has MAX_EXPRESSION_LENGTH

MAX_ATTRIBUTES = 100  # update_attribute

MAX_CANCEL_ON = 20  # cancelOn entries of one trigger
MAX_AGGREGATES = 20  # aggregates of one trigger
MAX_AGGREGATE_OF_LENGTH = 1_000  # an aggregate's `of` expression

MAX_URL_LENGTH = 2_048  # url, deliveryUrl
MAX_HEADERS = 50
MAX_HEADER_NAME_LENGTH = 256
MAX_HEADER_VALUE_LENGTH = 4_096
MAX_SECRET_LENGTH = 1_024
MAX_PAYLOAD_BYTES = 64 * KIB  # the webhook payload template as JSON
MAX_PAYLOAD_DEPTH = 16
MAX_PAYLOAD_PLACEHOLDERS = 100  # each is an expression evaluated for every delivery

MAX_CRON_LENGTH = 256
MAX_TIMEZONE_LENGTH = 64

MAX_OFFERS = 1_000
MAX_OFFER_ID_LENGTH = 256
MAX_OFFER_FIELDS = 50  # the pass-through fields of one offer (besides id, conditions, score)

MAX_COLUMNS = 500  # schema tables

# Headers the webhook sink sets itself, or that would break the request if a definition set
# them (framing, connection management, the Standard Webhooks signature). Lower case: HTTP
# header names are case-insensitive.
RESERVED_HEADERS = frozenset({
    "host", "content-length", "content-type", "transfer-encoding", "connection", "keep-alive",
    "proxy-connection", "te", "trailer", "upgrade", "expect",
    "idempotency-key", "webhook-id", "webhook-timestamp", "webhook-signature",
})
