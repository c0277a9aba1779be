"""Event source mappings: the SQS queue and DynamoDB stream pollers, and the email outbox."""
