"""OrdersTable's stream, read back over a range of sequence numbers (a failed batch's)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from mypy_boto3_dynamodbstreams import DynamoDBStreamsClient

GET_RECORDS_LIMIT = 1000
# GetRecords may answer an empty page before the records of an open shard; after this many in a
# row the read is given up for now (and retried), never taken as the end of the range.
_EMPTY_PAGES_LIMIT = 5
# What DynamoDB answers when the records are past the stream's 24 hours, or the stream is gone.
_RANGE_GONE = {"TrimmedDataAccessException", "ExpiredIteratorException", "ResourceNotFoundException"}


class StreamRangeGone(RuntimeError):
    """The range is no longer in the stream (trimmed after 24 hours, or the stream was replaced)."""


class StreamUnavailable(RuntimeError):
    """DynamoDB Streams refused or failed a request: retry later."""


class OrdersStream:
    def __init__(self, client: DynamoDBStreamsClient | None = None) -> None:
        self.client: DynamoDBStreamsClient = client or boto3.client("dynamodbstreams")

    def records_between(
        self,
        stream_arn: str,
        shard_id: str,
        first: str,
        last: str,
        *,
        time_for_a_request: Callable[[], bool] = lambda: True,
    ) -> list[dict[str, Any]]:
        """The shard's records from sequence number `first` to `last`, both included, as
        GetRecords answers them; raises StreamRangeGone, or StreamUnavailable when the read
        did not reach `last` (no further request fits in time, or page after page came back
        empty): a range returned is always whole."""
        end = int(last)
        records: list[dict[str, Any]] = []
        iterator: str | None = self._call(
            self.client.get_shard_iterator,
            StreamArn=stream_arn,
            ShardId=shard_id,
            ShardIteratorType="AT_SEQUENCE_NUMBER",
            SequenceNumber=first,
        ).get("ShardIterator")
        empty_pages = 0
        while iterator:
            if not time_for_a_request():
                raise StreamUnavailable(f"no time left to read {shard_id} up to {last}")
            page = self._call(self.client.get_records, ShardIterator=iterator, Limit=GET_RECORDS_LIMIT)
            for record in page.get("Records", []):
                sequence = int(record["dynamodb"]["SequenceNumber"])
                if sequence > end:
                    return records
                records.append(record)
                if sequence == end:
                    return records
            empty_pages = 0 if page.get("Records") else empty_pages + 1
            if empty_pages >= _EMPTY_PAGES_LIMIT:
                raise StreamUnavailable(f"{shard_id}: {empty_pages} empty pages before {last}")
            iterator = page.get("NextShardIterator")
        # `last` is in this shard (Lambda read it there): a shard that ends before it was misread.
        raise StreamUnavailable(f"{shard_id} ended before {last}")

    @staticmethod
    def _call(operation: Callable[..., Any], **parameters: Any) -> dict[str, Any]:
        try:
            response: dict[str, Any] = operation(**parameters)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in _RANGE_GONE:
                raise StreamRangeGone(str(error)) from error
            raise StreamUnavailable(str(error)) from error
        except BotoCoreError as error:
            raise StreamUnavailable(str(error)) from error
        return response
