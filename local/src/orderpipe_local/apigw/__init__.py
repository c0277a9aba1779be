"""The HTTP API: requests become payload 2.0 events for the routes the template declares."""
