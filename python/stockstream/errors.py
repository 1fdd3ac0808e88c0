"""The exceptions stockstream raises.

Every error is a ``StockstreamError``; the subclasses say what kind of thing went wrong, and
the message names the file, line and column, or the broker, involved.
"""


class StockstreamError(Exception):
    """Base class of every error stockstream raises.

    ``retryable`` says whether the same call may succeed later (a broker or server that was
    away, throttling, a timeout), as opposed to failing the same way every time (a wrong
    option, refused credentials, a missing bucket).
    """

    retryable: bool = False


class SchemaError(StockstreamError, ValueError):
    """Input data does not match the expected schema.

    A missing column, a value that does not parse as a number or a date, or a file with no rows.
    """


class NotFoundError(StockstreamError, FileNotFoundError):
    """A file (or, for lakes, an object or bucket) that was asked for does not exist."""


class ConfigError(StockstreamError, ValueError):
    """An option or client property has an invalid value."""


class KafkaError(StockstreamError):
    """Kafka could not be reached, or refused or timed out a request."""


class DeliveryError(KafkaError):
    """Some messages were handed to Kafka but not acknowledged.

    The ``report`` attribute holds the ``SendReport`` of the send that failed.
    """

    report = None


class QueryError(StockstreamError, ValueError):
    """A query is wrong: a SQL syntax error, or an unknown table or column (named)."""
