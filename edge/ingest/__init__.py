"""Getting order events from the broker into the database, exactly once."""
